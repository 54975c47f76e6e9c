//go:build !attestmesh_sidecar

package cli

import "github.com/spf13/cobra"

// verbs are the commands of the attestmesh binary.
func verbs() []*cobra.Command {
	return []*cobra.Command{
		newQuoteCmd(),
		newMeasureCmd(),
		newSessionCmd(),
		newApplyCmd(),
		newMeshCmd(),
		newUpCmd(),
		newControlPlaneCmd(),
		newRecoverCmd(),
		newLaunchCmd(),
		newProxyCmd(),
		newFSPFCmd(),
		newInstallCmd(),
	}
}
