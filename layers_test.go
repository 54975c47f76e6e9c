package attestmesh_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The layering of docs/architecture.md: the data plane and the chart writer import the contracts
// under attest/ and their own packages, never the control plane. depguard in .golangci.yml checks
// the imports file by file; this test checks what the linker would see, the transitive
// dependencies, so that a path through a third package cannot bring the control plane back.
const (
	controlPlane   = "github.com/attestmesh/attestmesh/controlplane"
	bbolt          = "go.etcd.io/bbolt"
	goControlPlane = "github.com/envoyproxy/go-control-plane"
)

// layers lists, for each package pattern, the import path prefixes that none of its
// dependencies may have.
var layers = []struct {
	pattern string
	deny    []string
}{
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
func goListDeps(t *testing.T, goos, pattern string) []string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", "list", "-deps", pattern)
	cmd.Env = append(os.Environ(), "GOOS="+goos)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go list -deps %s: %s", pattern, stderr.String())
	return strings.Fields(string(out))
}
