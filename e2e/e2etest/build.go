package e2etest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/stretchr/testify/require"
)

// BuildAttestmesh builds what `make build` builds, into a temporary directory of t: attestmesh
// and, beside it, the sidecar build (attestmesh-sidecar, tags attestmesh_sidecar and grpcnotrace), both with the
// extra `go build` flags. It returns the path of attestmesh.
func BuildAttestmesh(ctx context.Context, t *testing.T, flags ...string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "attestmesh")
	for _, b := range []struct {
		out  string
		tags []string
	}{{bin, nil}, {filepath.Join(dir, controlplane.SidecarName), []string{"-tags", "attestmesh_sidecar,grpcnotrace"}}} {
		args := append(append(append([]string{"build", "-trimpath"}, b.tags...), flags...), "-o", b.out, "github.com/attestmesh/attestmesh/cmd/attestmesh")
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go %v:\n%s", args, out)
	}
	return bin
}
