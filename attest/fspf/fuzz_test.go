package fspf

import (
	"bytes"
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

// fixture encrypts a small tree and loads it into memory.
func fixture(tb testing.TB) (fstest.MapFS, Key) {
	tb.Helper()
	src := filepath.Join(tb.TempDir(), "src")
	require.NoError(tb, os.MkdirAll(filepath.Join(src, "app", "lib"), 0o755))
	require.NoError(tb, os.WriteFile(filepath.Join(src, "app", "main.py"), []byte("print('hi')\n"), 0o644))
	require.NoError(tb, os.WriteFile(filepath.Join(src, "app", "lib", "x.py"), []byte("X = 1\n"), 0o600))
	dst := filepath.Join(tb.TempDir(), "enc")
	k, _, err := Encrypt(src, dst, nil)
	require.NoError(tb, err)
	fsys := fstest.MapFS{}
	require.NoError(tb, fs.WalkDir(os.DirFS(dst), ".", func(p string, d fs.DirEntry, err error) error {
		require.NoError(tb, err)
		switch {
		case p == ".":
		case d.IsDir():
			fsys[p] = &fstest.MapFile{Mode: fs.ModeDir | 0o755}
		default:
			b, err := os.ReadFile(filepath.Join(dst, p))
			require.NoError(tb, err)
			fsys[p] = &fstest.MapFile{Data: b, Mode: 0o644}
		}
		return nil
	}))
	return fsys, k
}

// FuzzDecryptManifest feeds arbitrary manifests to the parser and to DecryptFS (with the tag
// that the fuzzed manifest hashes to, so the parser and everything after it run). The parser must
// accept only the canonical form, and nothing may panic.
func FuzzDecryptManifest(f *testing.F) {
	fsys, key := fixture(f)
	f.Add(fsys[ManifestName].Data)
	f.Add([]byte(manifestHeader + "\n"))
	f.Add([]byte(manifestHeader + "\nkey-check " + string(bytes.Repeat([]byte("0"), 64)) + "\nd 0755 a\nf 0644 0 " +
		string(bytes.Repeat([]byte("a"), 64)) + " a/b c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseManifest(data)
		if err == nil {
			require.Equal(t, string(data), string(m.marshal()), "accepted a non-canonical manifest")
			for _, e := range m.entries {
				require.NoError(t, checkPath(e.path))
			}
		}
		local := fstest.MapFS{}
		for k, v := range fsys {
			local[k] = v
		}
		local[ManifestName] = &fstest.MapFile{Data: data, Mode: 0o644}
		tree, err := DecryptFS(local, key, sha256.Sum256(data))
		if err == nil {
			require.Equal(t, string(fsys[ManifestName].Data), string(data), "only the real manifest opens the tree")
			require.Len(t, tree.Files, 2)
		}
	})
}
