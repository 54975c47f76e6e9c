//go:build !attestmesh_sidecar

package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attestmesh/attestmesh/charts"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
)

func newApplyCmd() *cobra.Command {
	var cf clientFlags
	var file, chartDir, imagesDir string
	cmd := &cobra.Command{
		Use:   "apply -f mesh.yaml",
		Short: "Upload the mesh's sessions (create or update) from their templates",
		Long: `apply reads the mesh file, resolves its variables (measuring the binaries that
{measure: PATH} variables name inside the image of the service that runs them, following the
image's symlinks, from --images or the image's registry), encrypts the services' fspf
directories, expands the session templates, and creates or updates each session on the control
plane in order (exporters first). An update carries the current hash as predecessor automatically; a session whose
document did not change is left alone. It prints what changed.

It then registers the mesh for Kubernetes (the control plane, running with --kubernetes, finds
each service's endpoints among the ready pods of its cluster) and writes the application's Helm
chart to --chart-dir (target/helm): a Deployment (RELEASE-SERVICE) and a Service (SERVICE) per
mesh service, annotated for the sidecar injector, the encrypted code in a ConfigMap mounted at
the session's fspf_path, so that
  helm install <name> target/helm
runs the application on Kubernetes (see docs/kubernetes.md). --chart-dir "" skips both.`,
		Example: `  attestmesh controlplane verify --addr 127.0.0.1:8081 --simulation --mrenclave "$(attestmesh measure bin/attestmesh)" --out ca.pem
  attestmesh apply -f examples/flask-redis/mesh.yaml --images target/images --ca-file ca.pem`,
		Args: cobra.NoArgs,
		RunE: withContext(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			m, err := mesh.Load(file)
			if err != nil {
				return err
			}
			vars, measured, err := m.ResolveInImages(ctx, mesh.Images{Dir: imagesDir})
			if err != nil {
				return err
			}
			for _, ms := range measured {
				fmt.Fprintf(out, "measured %s for %s in %s\n", ms.Path, ms.Variable, strings.Join(ms.From, ", "))
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := m.EncryptFSPF(vars, "", mesh.SessionFSPF(ctx, c)); err != nil {
				return err
			}
			app := m.ChartApp()
			if chartDir != "" {
				// On Kubernetes the encrypted code travels in the chart and the pod sees it at
				// a path of its own: that is the fspf_path of the session.
				for i := range m.Services {
					s := &m.Services[i]
					if s.FSPF == nil {
						continue
					}
					p := mesh.FSPFVarPrefix(s.Name)
					files, err := mesh.FSPFFiles(vars[p+"_FSPF_PATH"])
					if err != nil {
						return err
					}
					app.Services[i].FSPF = &charts.FSPF{Dir: vars[p+"_FSPF_PATH"], Files: files, MountPath: charts.FSPFMountPath(s.Name)}
					vars[p+"_FSPF_PATH"] = charts.FSPFMountPath(s.Name)
				}
			}
			changes, err := m.Apply(ctx, c, vars, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "applied %d sessions of %s\n", len(changes), m.Name)
			if chartDir == "" {
				return nil
			}
			if err := registerKubernetes(ctx, c, file); err != nil {
				return err
			}
			fmt.Fprintf(out, "registered mesh %s: its sidecars' endpoints are the ready pods the control plane finds in its cluster\n", m.Name)
			if err := charts.WriteAppChart(app, chartDir, charts.AppChartOptions{}); err != nil {
				return err
			}
			fmt.Fprintf(out, "wrote the Helm chart of %s to %s (helm install %s %s)\n", m.Name, chartDir, m.Name, chartDir)
			return nil
		}),
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVarP(&file, "file", "f", "", "mesh file")
	cmd.Flags().StringVar(&chartDir, "chart-dir", "target/helm", "where to write the application's Helm chart (empty: do not write it, nor register the mesh)")
	cmd.Flags().StringVar(&imagesDir, "images", "", "directory with the services' images as SERVICE.tar or SERVICE/ (OCI layout), as `make example-images` writes them; "+
		"a service's image that is not there is read from its registry")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

// registerKubernetes registers the mesh for Kubernetes: the control plane takes each service's
// endpoints from the ready pods of its cluster.
func registerKubernetes(ctx context.Context, c *mgmtapi.Client, meshFile string) error {
	raw, err := os.ReadFile(meshFile)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	m, err := mesh.Parse(raw)
	if err != nil {
		return err
	}
	doc, err := (&mgmtapi.Registration{Mesh: string(raw), Kubernetes: true}).Marshal()
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if err := c.PutMesh(ctx, m.Name, doc); err != nil {
		return fmt.Errorf("apply: register mesh %s: %w", m.Name, err)
	}
	return nil
}
