package attestmesh_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The layering of docs/architecture.md: the contracts under attest/ import no other layer; the
// data plane and the chart writer import the contracts and their own packages, never the control
// plane. depguard in .golangci.yml checks the imports file by file; this test checks what the
// linker would see, the transitive dependencies, so that a path through a third package cannot
// bring the control plane back.
const (
	module         = "github.com/attestmesh/attestmesh/"
	controlPlane   = module + "controlplane"
	bbolt          = "go.etcd.io/bbolt"
	goControlPlane = "github.com/envoyproxy/go-control-plane"
)

// layers lists, for each package pattern, the import path prefixes that none of its
// dependencies may have.
var layers = []struct {
	pattern string
	deny    []string
}{
	{pattern: "./attest/...", deny: []string{controlPlane, bbolt, module + "proxy", module + "charts", module + "cmd"}},
	{pattern: "./proxy/...", deny: []string{controlPlane, bbolt}},
	{pattern: "./charts/...", deny: []string{controlPlane, bbolt, goControlPlane}},
}

func TestLayers(t *testing.T) {
	// The launcher has files for Linux and for other systems; check the graph for both.
	for _, goos := range []string{"linux", "darwin"} {
		for _, l := range layers {
			t.Run(goos+"/"+l.pattern, func(t *testing.T) {
				deps := goListDeps(t, goos, l.pattern)
				require.NotEmpty(t, deps)
				assert.Empty(t, violations(deps, l.deny), "%s (GOOS=%s) depends on packages of a layer above it", l.pattern, goos)
			})
		}
	}
}

// TestSidecarBuild checks that the sidecar build (make build: bin/attestmesh-sidecar, which runs
// in every workload's pod) links nothing of the control plane and none of the libraries that
// only the control plane needs: their package initialisation would be memory in every pod. The
// sidecar decodes the few xDS messages it reads by hand (proxy/resource, proxy/ads), so Envoy's
// generated types (go-control-plane, with cncf/xds, protoc-gen-validate and CEL behind them) stay
// out, and grpc's grpcnotrace tag keeps golang.org/x/net/trace (and html/template) out. The
// sidecar's metrics are written by proxy/metrics itself: client_golang's package initialisation
// registers Go and process collectors (runtime/metrics, procfs, expvar) and its encoders bring
// expfmt and the protobuf client model, about 0.7 MB of every sidecar's RSS.
func TestSidecarBuild(t *testing.T) {
	deps := goListDeps(t, "linux", "./cmd/attestmesh", "-tags", "attestmesh_sidecar,grpcnotrace")
	require.Contains(t, deps, module+"proxy", "the sidecar build runs the proxy")
	require.Contains(t, deps, module+"proxy/launch", "the sidecar build runs the launcher")
	assert.Empty(t, violations(deps, []string{
		controlPlane, bbolt, "go.etcd.io/etcd", "k8s.io", "sigs.k8s.io",
		"github.com/google/go-containerregistry", "github.com/docker", "helm.sh",
		goControlPlane, "github.com/cncf/xds", "cel.dev", "github.com/envoyproxy/protoc-gen-validate",
		"google.golang.org/genproto/googleapis/api", "golang.org/x/net/trace", "html/template",
		"github.com/prometheus", "expvar", "runtime/metrics",
	}), "the sidecar build links what only the control plane needs")
	full := goListDeps(t, "linux", "./cmd/attestmesh")
	assert.Contains(t, full, controlPlane, "the full build still has the control plane (the check above can fail)")
}

// TestViolations checks the checker: a forbidden package is found by its prefix, and only a
// whole path element counts (controlplanex is not under controlplane).
func TestViolations(t *testing.T) {
	tests := []struct {
		name string
		deps []string
		deny []string
		want []string
	}{
		{
			name: "clean",
			deps: []string{"fmt", "github.com/attestmesh/attestmesh/attest/attestapi", "github.com/attestmesh/attestmesh/proxy/resource"},
			deny: []string{controlPlane, bbolt},
		},
		{
			name: "control plane package",
			deps: []string{"fmt", "github.com/attestmesh/attestmesh/controlplane/ca", "github.com/attestmesh/attestmesh/proxy"},
			deny: []string{controlPlane, bbolt},
			want: []string{"github.com/attestmesh/attestmesh/controlplane/ca"},
		},
		{
			name: "control plane root and bbolt",
			deps: []string{"github.com/attestmesh/attestmesh/controlplane", "go.etcd.io/bbolt", "go.etcd.io/bbolt/errors"},
			deny: []string{controlPlane, bbolt},
			want: []string{"github.com/attestmesh/attestmesh/controlplane", "go.etcd.io/bbolt", "go.etcd.io/bbolt/errors"},
		},
		{
			name: "go-control-plane in both modules",
			deps: []string{"github.com/envoyproxy/go-control-plane/pkg/wellknown", "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"},
			deny: []string{goControlPlane},
			want: []string{"github.com/envoyproxy/go-control-plane/pkg/wellknown", "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"},
		},
		{
			name: "prefix of a path element only",
			deps: []string{"github.com/attestmesh/attestmesh/controlplanex", "go.etcd.io/bboltdb"},
			deny: []string{controlPlane, bbolt},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, violations(tt.deps, tt.deny))
		})
	}
}

// violations returns the packages of deps that are, or lie under, one of deny.
func violations(deps, deny []string) []string {
	var out []string
	for _, d := range deps {
		for _, p := range deny {
			if d == p || strings.HasPrefix(d, p+"/") {
				out = append(out, d)
				break
			}
		}
	}
	return out
}

// goListDeps returns `go list -deps pattern` for goos. go test puts its own go first on PATH.
func goListDeps(t *testing.T, goos, pattern string, flags ...string) []string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", slices.Concat([]string{"list", "-deps"}, flags, []string{pattern})...)
	cmd.Env = append(os.Environ(), "GOOS="+goos)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go list -deps %s: %s", pattern, stderr.String())
	return strings.Fields(string(out))
}

var update = flag.Bool("update", false, "rewrite the generated block of docs/architecture.md")

const (
	archDoc    = "docs/architecture.md"
	beginBlock = "<!-- generated by go test . -run TestArchitectureDoc -update: begin -->\n"
	endBlock   = "<!-- generated: end -->\n"
)

// TestArchitectureDoc keeps the layer facts of docs/architecture.md true: the block between
// its markers is what `go list` says each layer imports from the others.
func TestArchitectureDoc(t *testing.T) {
	doc, err := os.ReadFile(archDoc)
	require.NoError(t, err)
	before, rest, ok := strings.Cut(string(doc), beginBlock)
	require.True(t, ok, "%s has no %q", archDoc, beginBlock)
	old, after, ok := strings.Cut(rest, endBlock)
	require.True(t, ok, "%s has no %q", archDoc, endBlock)
	want := crossLayerImports(t)
	if *update {
		require.NoError(t, os.WriteFile(archDoc, []byte(before+beginBlock+want+endBlock+after), 0o600))
		return
	}
	assert.Equal(t, want, old, "the layers' imports changed: rerun with -update and check what %s says about them", archDoc)
}

// crossLayerImports renders, for each layer (top-level directory), the module's packages
// outside it that its non-test packages import.
func crossLayerImports(t *testing.T) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	cmd.Env = append(os.Environ(), "GOOS=linux")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go list: %s", stderr.String())
	layerOf := func(pkg string) string { l, _, _ := strings.Cut(strings.TrimPrefix(pkg, module), "/"); return l + "/" }
	imports := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], module) {
			continue
		}
		from := layerOf(f[0])
		for _, imp := range f[1:] {
			if strings.HasPrefix(imp, module) && layerOf(imp) != from && !slices.Contains(imports[from], imp) {
				imports[from] = append(imports[from], imp)
			}
		}
	}
	var b strings.Builder
	b.WriteString("```\n")
	for _, layer := range []string{"attest/", "proxy/", "charts/", "controlplane/", "cmd/"} {
		deps := imports[layer]
		for i := range deps {
			deps[i] = strings.TrimPrefix(deps[i], module)
		}
		slices.Sort(deps)
		if len(deps) == 0 {
			fmt.Fprintf(&b, "%s imports nothing of the other layers\n", layer)
			continue
		}
		fmt.Fprintf(&b, "%s imports\n", layer)
		for _, d := range deps {
			fmt.Fprintf(&b, "    %s\n", d)
		}
	}
	b.WriteString("```\n")
	return b.String()
}
