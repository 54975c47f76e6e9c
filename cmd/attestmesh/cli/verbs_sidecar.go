//go:build attestmesh_sidecar

package cli

import "github.com/spf13/cobra"

// verbs are the commands of the attestmesh-sidecar binary (make build-sidecar): only what runs in
// a workload's pod (the sidecar, the launcher, and install, with which the injector's init
// container hands the launcher to the app container), and measure, so that its measurement can
// be taken with the binary itself. It links none of the control plane, whose package
// initialisation (protobuf registries, Kubernetes and image clients) would otherwise take
// memory in every pod.
func verbs() []*cobra.Command {
	return []*cobra.Command{
		newMeasureCmd(),
		newLaunchCmd(),
		newProxyCmd(),
		newInstallCmd(),
	}
}
