//go:build !attestmesh_sidecar

package cli

import (
	"context"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/local"
)

func newUpCmd() *cobra.Command {
	var cfg local.Config
	var subnet string
	cmd := &cobra.Command{
		Use:   "up -f mesh.yaml",
		Short: "Run a whole mesh on this machine: control plane, then every service with its sidecar",
		Long: `up is the embedded default for trying attestmesh out. On this machine it:

  1. encrypts the services' code (fspf) and measures their binaries (simulated MRENCLAVEs);
  2. creates a private bridge and one network namespace per service (needs root);
  3. starts the control plane (encrypted store with an in-memory key, CA, simulated SGX
     platform and its LAS) on the bridge;
  4. uploads the sessions (apply) and registers the mesh;
  5. starts each service's sidecar (attests, gets its SPIFFE identity, follows xDS) and then
     the app under the launcher (attests, receives its files, is exec'd), both from
     ` + controlplane.SidecarName + ` beside this binary when it is there (make build makes it: the
     sidecar build, without the control plane), else from this binary;
  6. prints the exposed endpoints and the exported CA certificates to trust.

Ctrl-C stops every process and removes the namespaces, the bridge and the state.`,
		Example: `  sudo attestmesh up -f examples/flask-redis/mesh.yaml`,
		Args:    cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			p, err := netip.ParsePrefix(subnet)
			if err != nil {
				return err
			}
			cfg.Subnet = p
			cfg.Out = cmd.OutOrStdout()
			return local.Up(ctx, cfg)
		}),
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.MeshFile, "file", "f", "", "mesh file")
	f.StringVar(&cfg.SidecarBinary, "sidecar-binary", "", "the executable for the sidecars and launchers (default: "+controlplane.SidecarName+" beside this executable if there, else this executable)")
	f.StringVar(&cfg.StateDir, "state-dir", "", "keep the run's state here (default: a temporary directory, removed at the end)")
	f.StringVar(&subnet, "subnet", "10.231.0.0/24", "the private bridge's network")
	f.StringVar(&cfg.Bridge, "bridge", "amup0", "the bridge interface's name")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}
