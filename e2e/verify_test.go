//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/attestmesh/attestmesh/e2e/e2etest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestControlPlaneVerify attests a real `attestmesh controlplane` process before trusting it,
// as the install docs do. The binary is built twice, differing only in a -ldflags -X value, so
// the two measure differently: the control plane runs from one, and a client that expects the
// other refuses it, naming both measurements. Expecting the right one, verify writes the CA
// bundle, and the session commands work with it pinned. Needs no root.
func TestControlPlaneVerify(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	const versionVar = "-X github.com/attestmesh/attestmesh/cmd/attestmesh/cli.version="
	expected := e2etest.BuildAttestmesh(ctx, t, "-ldflags", versionVar+"e2e-expected")
	running := e2etest.BuildAttestmesh(ctx, t, "-ldflags", versionVar+"e2e-other")
	expectedMR, runningMR := mustMeasure(t, expected), mustMeasure(t, running)
	require.NotEqual(t, expectedMR, runningMR, "two builds with different -X values measure differently")
	_, version, _ := runBin(ctx, t, running, "--version")
	assert.Equal(t, "attestmesh version e2e-other\n", version)

	cp := startControlPlane(ctx, t, running)
	out := filepath.Join(t.TempDir(), "ca.pem")
	verify := func(mr string, extra ...string) (int, string, string) {
		args := append([]string{"controlplane", "verify", "--addr", cp.mgmt, "--simulation", "--mrenclave", mr, "--out", out}, extra...)
		return runBin(ctx, t, expected, args...)
	}

	code, _, stderr := verify(expectedMR.Hex())
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "attestmesh: controlplane verify: refused: evidence: the control plane's measurement differs: "+
		"expected MRENCLAVE "+expectedMR.Hex()+", got "+runningMR.Hex())
	assert.NoFileExists(t, out, "nothing pinned after a refusal")

	// The binary it really runs, with the simulated root pinned from its data directory.
	simRoot := filepath.Join(filepath.Dir(cp.caFile), "simulated-root.pem")
	code, stdout, stderr := verify(runningMR.Hex(), "--simulated-root", simRoot)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "control plane at "+cp.mgmt+" attested (simulation)")
	assert.Contains(t, stdout, "root        simulated, pinned")
	assert.Contains(t, stderr, "WARNING: SIMULATION")
	pinned, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, mustRead(t, cp.caFile), pinned, "the attested bundle is the control plane's CA")

	doc := filepath.Join(t.TempDir(), "s.yaml")
	require.NoError(t, os.WriteFile(doc, []byte("name: verified\nversion: \"0.3\"\n"), 0o600))
	code, _, stderr = runBin(ctx, t, expected, "session", "create", "-f", doc,
		"--controlplane", "https://"+cp.mgmt, "--ca-file", out, "--identity-dir", t.TempDir())
	require.Equal(t, 0, code, stderr)
}
