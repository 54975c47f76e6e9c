package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/charts"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
)

func newApplyCmd() *cobra.Command {
	var cf clientFlags
	var file, chartDir string
	cmd := &cobra.Command{
		Use:   "apply -f mesh.yaml",
		Short: "Upload the mesh's sessions (create or update) from their templates",
		Long: `apply reads the mesh file, resolves its variables (measuring the binaries that
{measure: PATH} variables name), encrypts the services' fspf directories, expands the session
templates, and creates or updates each session on the control plane in order (exporters
first). An update carries the current hash as predecessor automatically; a session whose
document did not change is left alone. It prints what changed.

It then writes the application's Helm chart to --chart-dir (target/helm): a Deployment and a
Service per mesh service, annotated for the sidecar injector, so that
  helm install <name> target/helm
runs the application on Kubernetes (see docs/kubernetes.md). --chart-dir "" skips it.`,
		Example: `  attestmesh controlplane verify --addr 127.0.0.1:8081 --simulation --mrenclave "$(attestmesh measure bin/attestmesh)" --out ca.pem
  attestmesh apply -f examples/flask-redis/mesh.yaml --ca-file ca.pem`,
		Args: cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			m, err := mesh.Load(file)
			if err != nil {
				return err
			}
			vars, err := m.Resolve()
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := m.EncryptFSPF(vars, "", mesh.SessionFSPF(ctx, c)); err != nil {
				return err
			}
			changes, err := m.Apply(ctx, c, vars, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied %d sessions of %s\n", len(changes), m.Name)
			if chartDir == "" {
				return nil
			}
			if err := charts.WriteAppChart(m.ChartApp(), chartDir, charts.AppChartOptions{}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote the Helm chart of %s to %s (helm install %s %s)\n", m.Name, chartDir, m.Name, chartDir)
			return nil
		}),
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVarP(&file, "file", "f", "", "mesh file")
	cmd.Flags().StringVar(&chartDir, "chart-dir", "target/helm", "where to write the application's Helm chart (empty: do not write it)")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}
