//go:build e2e_k8s

package k8s_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/injector"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
)

// buildAttestmesh builds the attestmesh binary (static, as `make build` does).
func buildAttestmesh(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "attestmesh")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./cmd/attestmesh")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/attestmesh: %s", b)
	return out
}

// controlPlane is `attestmesh controlplane` running on this host, in simulation, with its
// webhook on loopback.
type controlPlane struct {
	bin        string
	dir        string
	mgmtURL    string
	webhookURL string
	caPEM      []byte
}

func startControlPlane(t *testing.T, bin string) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	keyFile := filepath.Join(dir, "store.key")
	require.NoError(t, os.WriteFile(keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600))
	data := filepath.Join(dir, "data")
	addr := func() string { return "127.0.0.1:" + strconv.Itoa(freePort(t)) }
	mgmt, webhook := addr(), addr()
	start(t, dir, "attestmesh-controlplane", bin, "controlplane",
		"--data-dir", data, "--store-key-file", keyFile, "--advertise-host", "127.0.0.1",
		"--mgmt-addr", mgmt, "--attest-addr", addr(), "--xds-addr", addr(), "--metrics-addr", addr(),
		"--simulation", "--las-addr", addr(),
		"--webhook-addr", webhook, "--injector-image", image,
		"--injector-attest-addr", attestAddr, "--injector-las-addr", lasAddr)

	cp := &controlPlane{bin: bin, dir: dir, mgmtURL: "https://" + mgmt, webhookURL: "https://" + webhook + injector.Path}
	// Ready when its CA is written and the webhook answers TLS with a certificate from it.
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if last = cp.probe(data, webhook); last == nil {
			return cp
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.NoError(t, last, "control plane not ready after 60s")
	return nil
}

func (cp *controlPlane) probe(data, webhook string) error {
	caPEM, err := os.ReadFile(filepath.Join(data, "ca.pem"))
	if err != nil {
		return err
	}
	pool, err := ca.PoolFromPEM(caPEM)
	if err != nil {
		return err
	}
	d := tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", webhook)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	cp.caPEM = caPEM
	return conn.Close()
}

// apply runs `attestmesh apply -f mesh.yaml` on a copy of the example (apply writes the
// encrypted fspf tree beside the mesh file) and returns the chart directory it wrote.
func (cp *controlPlane) apply(t *testing.T, m *mesh.Mesh) string {
	t.Helper()
	work := t.TempDir()
	require.NoError(t, os.CopyFS(work, os.DirFS(m.Dir)))
	chartDir := filepath.Join(work, "target", "helm")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// As the install docs do: attest the control plane, and pin the CA bundle verify writes.
	mr, err := measure.File(cp.bin)
	require.NoError(t, err)
	verify := exec.CommandContext(ctx, cp.bin, "controlplane", "verify", "--addr", strings.TrimPrefix(cp.mgmtURL, "https://"), //nolint:gosec // the binary this test built
		"--simulation", "--mrenclave", mr.Hex(), "--out", filepath.Join(cp.dir, "ca.pem"))
	out, err := verify.CombinedOutput()
	require.NoError(t, err, "attestmesh controlplane verify: %s", out)
	pinned, err := os.ReadFile(filepath.Join(cp.dir, "ca.pem"))
	require.NoError(t, err)
	require.Equal(t, string(cp.caPEM), string(pinned), "verify pins the control plane's CA")
	cmd := exec.CommandContext(ctx, cp.bin, "apply", "-f", filepath.Join(work, "mesh.yaml"), //nolint:gosec // the binary this test built
		"--controlplane", cp.mgmtURL, "--ca-file", filepath.Join(cp.dir, "ca.pem"),
		"--identity-dir", filepath.Join(cp.dir, "identity"), "--chart-dir", chartDir)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "attestmesh apply: %s", out)
	t.Logf("attestmesh apply:\n%s", out)
	_, err = fs.Stat(os.DirFS(chartDir), "Chart.yaml")
	require.NoError(t, err, "apply wrote no chart")
	return chartDir
}
