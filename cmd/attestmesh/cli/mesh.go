//go:build !attestmesh_sidecar

package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

func newMeshCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mesh",
		Short: "Manage mesh registrations on the control plane",
		Long: `A mesh registration (made by 'attestmesh up', or by a deployment tool) tells the control
plane which sidecars to configure over xDS: listeners, clusters and the SPIFFE IDs each one
admits. It counts only while its registrant may update every session it names.`,
	}
	cmd.AddCommand(newMeshDeleteCmd())
	return cmd
}

func newMeshDeleteCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Remove a mesh registration: its sidecars lose the listeners and clusters it configured",
		Long: `delete removes the mesh registration NAME. Its registrant may delete it, and so may any
client that may update one of the sessions it names: an owner can always take their
sessions' sidecars back from someone else's registration.`,
		Example: `  attestmesh mesh delete flask-redis --ca-file ca.pem`,
		Args:    cobra.ExactArgs(1),
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.DeleteMesh(ctx, args[0]); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "mesh %s deleted\n", args[0])
			return err
		}),
	}
	cf.register(cmd.Flags())
	return cmd
}
