// Package charts holds attestmesh's Helm charts: charts/attestmesh (the control plane with the
// sidecar injector, installed as is) and the application chart that `attestmesh apply -f
// mesh.yaml` writes to target/helm with WriteAppChart, as `sconectl apply` does.
//
// The package knows nothing of the control plane: WriteAppChart takes an App, the parts of a
// mesh file that a chart needs, which the caller fills in (mesh.Mesh.ChartApp does).
//
// The application chart has a Deployment per mesh service, named RELEASE-SERVICE, and a Service
// for each one that listens on ports, named after the mesh service (the mesh's DNS names, which
// the sessions' certificates carry). A service's encrypted code travels in a ConfigMap
// (RELEASE-SERVICE-fspf) mounted at the session's fspf_path. Every pod carries
// attestmesh.io/config-id, so the injector adds the sidecar and runs the container's command
// under `attestmesh launch`; the command is the mesh service's binary alone, because the
// session supplies the arguments. Images, replicas and resources are values.
package charts

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"

	"gopkg.in/yaml.v3"
)

//go:embed all:app
var appFS embed.FS

// App is what the application chart is written from: a mesh's name and services.
type App struct {
	// Name is the mesh's name, the chart's and the release's.
	Name     string
	Services []Service
}

// Service is one mesh service: a Deployment, and a Service when it listens on ports.
type Service struct {
	// Name is the mesh service's name: its Deployment's, its Service's, its DNS name's.
	Name string
	// ConfigID is the session and service it attests as (attestmesh.io/config-id).
	ConfigID string
	// Binary is the program the launcher measures and runs (the container's command).
	Binary string
	// Image holds Binary.
	Image string
	Ports []Port
	// FSPF, when set, is the service's encrypted code, carried by the chart in a ConfigMap and
	// mounted where the session's fspf_path says.
	FSPF *FSPF
}

// FSPF is an encrypted tree (`attestmesh fspf encrypt`) that the chart carries.
type FSPF struct {
	// Dir is the encrypted tree on this machine.
	Dir string
	// Files are its files, relative to Dir, slash-separated.
	Files []string
	// MountPath is where the pod sees it: the session's fspf_path.
	MountPath string
}

// FSPFMountPath is where an application chart mounts a service's encrypted code, and so the
// fspf_path that `attestmesh apply` gives the service's session.
func FSPFMountPath(service string) string { return "/attestmesh/fspf/" + service }

// maxFSPFBytes bounds the encrypted code a chart carries: a ConfigMap holds at most 1 MiB.
const maxFSPFBytes = 1000 * 1024

// Port is a port the service serves in the mesh.
type Port struct {
	Port uint32
	// Expose publishes the port outside the mesh (its Service), not only to sidecars.
	Expose bool
}

// AppChartOptions are the parts of the application chart that the mesh file does not say.
type AppChartOptions struct {
	// Version is the chart's version (SemVer); empty means "0.1.0".
	Version string
	// AppVersion is the application's version; empty means Version.
	AppVersion string
	// Replicas of every Deployment; zero means 1.
	Replicas int
}

var chartName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// WriteAppChart writes the application chart of the app m into dir (typically target/helm), replacing
// the files it writes and leaving others alone.
func WriteAppChart(m *App, dir string, opts AppChartOptions) error {
	if m == nil || len(m.Services) == 0 {
		return errors.New("charts: the mesh has no services")
	}
	if !chartName.MatchString(m.Name) || len(m.Name) > 53 {
		return fmt.Errorf("charts: mesh name %q is not a valid chart and release name ([a-z0-9-], at most 53 characters)", m.Name)
	}
	if opts.Version == "" {
		opts.Version = "0.1.0"
	}
	if opts.AppVersion == "" {
		opts.AppVersion = opts.Version
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	for _, s := range m.Services {
		if !chartName.MatchString(s.Name) || len(s.Name) > 63 {
			return fmt.Errorf("charts: service %q is not a valid Kubernetes name ([a-z0-9-], at most 63 characters)", s.Name)
		}
		if s.Binary == "" {
			return fmt.Errorf("charts: service %q has no binary: the injector wraps the container's command", s.Name)
		}
	}
	files := map[string][]byte{
		"Chart.yaml":  chartYAML(m, opts),
		"values.yaml": valuesYAML(m, opts),
	}
	for _, s := range m.Services {
		if s.FSPF == nil {
			continue
		}
		total := 0
		for _, f := range s.FSPF.Files {
			data, err := os.ReadFile(filepath.Join(s.FSPF.Dir, filepath.FromSlash(f)))
			if err != nil {
				return fmt.Errorf("charts: service %q: encrypted code: %w", s.Name, err)
			}
			total += len(data)
			files[path.Join("files", "fspf", s.Name, f)] = data
		}
		if total > maxFSPFBytes {
			return fmt.Errorf("charts: service %q: the encrypted code is %d bytes, more than a ConfigMap holds (%d): put it in the image instead", s.Name, total, maxFSPFBytes)
		}
	}
	err := fs.WalkDir(appFS, "app", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := appFS.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel("app", p)
		if err != nil {
			return err
		}
		files[rel] = data
		return nil
	})
	if err != nil {
		return fmt.Errorf("charts: app chart templates: %w", err)
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil { //nolint:gosec // a chart directory is meant to be read
			return fmt.Errorf("charts: %w", err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil { //nolint:gosec // a chart is meant to be read
			return fmt.Errorf("charts: %w", err)
		}
	}
	return nil
}

func chartYAML(m *App, opts AppChartOptions) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by `attestmesh apply` from the mesh %q; regenerate rather than edit.\n", m.Name)
	b.WriteString("apiVersion: v2\n")
	fmt.Fprintf(&b, "name: %s\n", m.Name)
	fmt.Fprintf(&b, "description: %s\n", quote(fmt.Sprintf("The %s application: attested services of an attestmesh mesh.", m.Name)))
	b.WriteString("type: application\n")
	fmt.Fprintf(&b, "version: %s\n", quote(opts.Version))
	fmt.Fprintf(&b, "appVersion: %s\n", quote(opts.AppVersion))
	return b.Bytes()
}

// quote renders s as a YAML double-quoted scalar.
func quote(s string) string {
	out, err := yaml.Marshal(s)
	if err != nil || len(out) == 0 || out[0] != '"' {
		return strconv.Quote(s)
	}
	return string(bytes.TrimSpace(out))
}

func valuesYAML(m *App, opts AppChartOptions) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Values of the %s application, written by `attestmesh apply` from its mesh file.\n", m.Name)
	b.WriteString("# The sessions it uploaded and these services describe the same workloads: change the\n")
	b.WriteString("# mesh file and apply again rather than renaming services or config IDs here.\n\n")
	b.WriteString("# -- Pull policy of every service's image.\nimagePullPolicy: IfNotPresent\n")
	b.WriteString("# -- Secrets for pulling the images.\nimagePullSecrets: []\n\n")
	b.WriteString("# -- One entry per mesh service (its Deployment and Service carry its name).\nservices:\n")
	for _, s := range m.Services {
		fmt.Fprintf(&b, "  %s:\n", s.Name)
		fmt.Fprintf(&b, "    # -- Image that holds %s.\n    image: %s\n", s.Binary, quote(s.Image))
		fmt.Fprintf(&b, "    # -- Number of pods.\n    replicas: %d\n", opts.Replicas)
		fmt.Fprintf(&b, "    # -- The session and service it attests as (pod annotation attestmesh.io/config-id).\n    configID: %s\n", quote(s.ConfigID))
		fmt.Fprintf(&b, "    # -- The program the launcher measures and runs; the session supplies its arguments.\n    command: %s\n", quote(s.Binary))
		b.WriteString("    # -- Ports the service serves in the mesh (its Service and container ports).\n")
		if len(s.Ports) == 0 {
			b.WriteString("    ports: []\n")
		} else {
			b.WriteString("    ports:\n")
			for _, p := range s.Ports {
				fmt.Fprintf(&b, "      - port: %d\n        expose: %t\n", p.Port, p.Expose)
			}
		}
		if s.FSPF != nil {
			b.WriteString("    # -- Its encrypted code (files/fspf/" + s.Name + "/), mounted read-only from a ConfigMap where the session's fspf_path says.\n")
			fmt.Fprintf(&b, "    fspf:\n      mountPath: %s\n      files:\n", quote(s.FSPF.MountPath))
			for _, f := range s.FSPF.Files {
				fmt.Fprintf(&b, "        - %s\n", quote(f))
			}
		}
		b.WriteString("    # -- Type of its Service (LoadBalancer or NodePort to reach exposed ports from outside).\n")
		b.WriteString("    serviceType: ClusterIP\n")
		b.WriteString("    # -- Resources of the app container (hardware mode: add the SGX device plugin's, e.g. sgx.intel.com/epc).\n    resources: {}\n")
		b.WriteString("    # -- Node selector (hardware mode: SGX nodes, e.g. intel.feature.node.kubernetes.io/sgx: \"true\").\n    nodeSelector: {}\n")
		b.WriteString("    # -- Extra pod annotations (attestmesh.io/container is not needed: one container).\n    podAnnotations: {}\n")
	}
	return b.Bytes()
}
