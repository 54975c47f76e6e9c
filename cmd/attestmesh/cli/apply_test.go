package cli_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/measure"
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
	// The services' images, as tarballs: each holds its binary, the host's, behind a symlink.
	images := t.TempDir()
	writeImage(t, filepath.Join(images, "redis.tar"), "localhost/flaskredis/redis:1", "/usr/bin/redis-server")
	writeImage(t, filepath.Join(images, "api.tar"), "localhost/flaskredis/api:1", "/usr/bin/python3")
	args := []string{"apply", "-f", filepath.Join(dir, "mesh.yaml"), "--chart-dir", chart, "--images", images,
		"--controlplane", srv.URL, "--ca-file", caFile, "--identity-dir", filepath.Join(dir, ".id")}

	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), args, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	assert.Contains(t, out.String(), "measured /usr/bin/redis-server for REDIS_MRENCLAVE in redis: localhost/flaskredis/redis:1 ("+filepath.Join(images, "redis.tar")+")")
	assert.Contains(t, out.String(), "measured /usr/bin/python3 for PYTHON_MRENCLAVE in api: localhost/flaskredis/api:1")
	assert.Contains(t, out.String(), "session flask-redis/redis created")
	assert.Contains(t, out.String(), "session flask-redis/flask created")
	assert.Contains(t, out.String(), "registered mesh flaskredis")
	assert.Contains(t, out.String(), "wrote the Helm chart of flaskredis to "+chart+" (helm install flaskredis "+chart+")")
	assert.FileExists(t, filepath.Join(chart, "Chart.yaml"))
	assert.FileExists(t, filepath.Join(chart, "files", "fspf", "api", ".fspf"), "the chart carries the encrypted code")

	// The sessions hold the images' measurements and the code's path in the pod.
	for sessName, want := range map[string]string{"flask-redis/redis": "/usr/bin/redis-server", "flask-redis/flask": "/usr/bin/python3"} {
		var doc bytes.Buffer
		code := cli.Run(context.Background(), []string{"session", "get", sessName, "--controlplane", srv.URL, "--ca-file", caFile,
			"--identity-dir", filepath.Join(dir, ".id")}, &doc, &errb)
		require.Equal(t, 0, code, errb.String())
		mr, err := measure.File(want)
		require.NoError(t, err)
		assert.Contains(t, doc.String(), mr.Hex(), "%s measured in its image: the same bytes as on this host", want)
		if sessName == "flask-redis/flask" {
			assert.Contains(t, doc.String(), "fspf_path: /attestmesh/fspf/api", "the code's path in the pod")
		}
	}
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

// writeImage writes a one-layer image tarball that holds the host's file behind path (resolved)
// at its resolved path, and path as a symlink to it, as Debian's packages lay them out.
func writeImage(t *testing.T, tarPath, ref, path string) {
	t.Helper()
	resolved, err := filepath.EvalSymlinks(path)
	require.NoError(t, err)
	data, err := os.ReadFile(resolved)
	require.NoError(t, err)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	require.NoError(t, tw.WriteHeader(&tar.Header{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755}))
	require.NoError(t, tw.WriteHeader(&tar.Header{Name: "usr/bin/", Typeflag: tar.TypeDir, Mode: 0o755}))
	require.NoError(t, tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(resolved, "/"), Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))}))
	_, err = tw.Write(data)
	require.NoError(t, err)
	if resolved != path {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(path, "/"), Typeflag: tar.TypeSymlink, Linkname: filepath.Base(resolved)}))
	}
	require.NoError(t, tw.Close())
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	require.NoError(t, err)
	img, err := mutate.AppendLayers(empty.Image, layer)
	require.NoError(t, err)
	tag, err := name.NewTag(ref)
	require.NoError(t, err)
	require.NoError(t, tarball.WriteToFile(tarPath, tag, img))
}
