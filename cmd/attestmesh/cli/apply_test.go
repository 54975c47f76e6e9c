package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/cmd/attestmesh/cli"
	"github.com/attestmesh/attestmesh/controlplane/mgmt/mgmttest"
)

// TestApplyExample applies the example mesh to a real management API: both sessions are
// created (exporter first), the code is encrypted, and the chart is written; applying again
// changes nothing (the encrypted code is kept with its key), and a changed source file
// re-encrypts the code and updates only the session that holds its key.
func TestApplyExample(t *testing.T) {
	for _, bin := range []string{"/usr/bin/redis-server", "/usr/bin/python3"} {
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("the example mesh measures %s, which is not installed (apt-get install redis-server python3)", bin)
		}
	}
	srv := mgmttest.Start(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, srv.Authority.BundlePEM(), 0o600))

	// Work on a copy of the example: apply writes the encrypted code next to the mesh file.
	dir := t.TempDir()
	src := filepath.Join("..", "..", "..", "examples", "flask-redis")
	require.NoError(t, os.CopyFS(dir, os.DirFS(src)))
	_ = os.RemoveAll(filepath.Join(dir, "app.enc"))
	chart := filepath.Join(t.TempDir(), "helm")
	args := []string{"apply", "-f", filepath.Join(dir, "mesh.yaml"), "--chart-dir", chart,
		"--controlplane", srv.URL, "--ca-file", caFile, "--identity-dir", filepath.Join(dir, ".id")}

	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), args, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	assert.Contains(t, out.String(), "session flask-redis/redis created")
	assert.Contains(t, out.String(), "session flask-redis/flask created")
	assert.Contains(t, out.String(), "wrote the Helm chart of flask-redis to "+chart)
	assert.FileExists(t, filepath.Join(chart, "Chart.yaml"))
	assert.FileExists(t, filepath.Join(dir, "app.enc", ".fspf"))
	plain, err := os.ReadFile(filepath.Join(dir, "app", "rest_api.py"))
	require.NoError(t, err)
	enc, err := os.ReadFile(filepath.Join(dir, "app.enc", "rest_api.py"))
	require.NoError(t, err)
	assert.NotContains(t, string(enc), string(plain[:40]), "the code is encrypted")

	out.Reset()
	code = cli.Run(context.Background(), args, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	assert.Contains(t, out.String(), "session flask-redis/redis unchanged")
	assert.Contains(t, out.String(), "session flask-redis/flask unchanged")
	again, err := os.ReadFile(filepath.Join(dir, "app.enc", "rest_api.py"))
	require.NoError(t, err)
	assert.Equal(t, enc, again, "unchanged code keeps its encryption")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "app", "rest_api.py"), append(plain, []byte("\n# changed\n")...), 0o600))
	out.Reset()
	code = cli.Run(context.Background(), args, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	assert.Contains(t, out.String(), "session flask-redis/redis unchanged")
	assert.Contains(t, out.String(), "session flask-redis/flask updated")
}
