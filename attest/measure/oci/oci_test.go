package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/attestmesh/attestmesh/attest/measure"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type entry struct {
	name, link string
	typ        byte
	data       string
}

func layer(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o755, Size: int64(len(e.data))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		require.NoError(t, tw.WriteHeader(h))
		if e.typ == tar.TypeReg {
			_, err := tw.Write([]byte(e.data))
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	require.NoError(t, err)
	return l
}

// TestFile: a binary is measured inside the image as the launcher measures it in the
// container: later layers win, symlinks resolve within the image (also through directories
// and with absolute targets), and the result equals measuring the same tree on a host.
func TestFile(t *testing.T) {
	base := layer(t,
		entry{name: "./usr/", typ: tar.TypeDir},
		entry{name: "./usr/bin/", typ: tar.TypeDir},
		entry{name: "./usr/bin/python3.11", typ: tar.TypeReg, data: "old interpreter"},
		entry{name: "./usr/bin/python3", typ: tar.TypeSymlink, link: "python3.11"},
		entry{name: "./bin", typ: tar.TypeSymlink, link: "usr/bin"},
		entry{name: "./usr/bin/redis-check-rdb", typ: tar.TypeReg, data: "redis"},
		entry{name: "./usr/bin/redis-server", typ: tar.TypeSymlink, link: "redis-check-rdb"},
		entry{name: "./usr/bin/loop", typ: tar.TypeSymlink, link: "loop"},
		entry{name: "./usr/bin/dangling", typ: tar.TypeSymlink, link: "/nowhere"},
	)
	top := layer(t,
		entry{name: "usr/bin/python3.11", typ: tar.TypeReg, data: "new interpreter"},
		entry{name: "usr/local/", typ: tar.TypeDir},
		entry{name: "usr/local/bin/", typ: tar.TypeDir},
		entry{name: "usr/local/bin/py", typ: tar.TypeSymlink, link: "/bin/python3"},
		entry{name: "usr/bin/hard", typ: tar.TypeLink, link: "usr/bin/redis-check-rdb"},
	)
	img, err := mutate.AppendLayers(empty.Image, base, top)
	require.NoError(t, err)

	// The same tree on this host: measure.File must agree.
	host := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(host, "usr", "bin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(host, "usr", "bin", "python3.11"), []byte("new interpreter"), 0o755))
	require.NoError(t, os.Symlink("python3.11", filepath.Join(host, "usr", "bin", "python3")))
	onHost, err := measure.File(filepath.Join(host, "usr", "bin", "python3"))
	require.NoError(t, err)

	for p, want := range map[string]struct{ resolved, data string }{
		"/usr/bin/python3":      {"/usr/bin/python3.11", "new interpreter"},
		"/bin/python3":          {"/usr/bin/python3.11", "new interpreter"},
		"/usr/local/bin/py":     {"/usr/bin/python3.11", "new interpreter"},
		"/usr/bin/redis-server": {"/usr/bin/redis-check-rdb", "redis"},
		"/usr/bin/hard":         {"/usr/bin/redis-check-rdb", "redis"},
	} {
		m, resolved, err := File(img, p)
		require.NoError(t, err, p)
		assert.Equal(t, want.resolved, resolved, p)
		assert.Equal(t, measure.MREnclave(sha256.Sum256([]byte(want.data))), m, p)
	}
	m, _, err := File(img, "/usr/bin/python3")
	require.NoError(t, err)
	assert.Equal(t, onHost, m, "as measured on a host")

	for p, wantErr := range map[string]string{
		"/usr/bin/missing":  "/usr/bin/missing does not exist in the image",
		"/usr/bin":          "is not a regular file in the image",
		"/usr/bin/loop":     "too many levels of symbolic links",
		"/usr/bin/dangling": "/nowhere does not exist in the image",
		"usr/bin/python3":   "is not an absolute path",
	} {
		_, _, err := File(img, p)
		require.ErrorContains(t, err, wantErr, p)
	}
}
