package fspf_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/fspf"
)

// source is the plaintext test tree: path -> (mode, content); a nil content is a directory.
var source = []struct {
	path string
	mode fs.FileMode
	data []byte
}{
	{"app", 0o755, nil},
	{"app-data", 0o700, nil}, // sorts before app/lib: canonical order is byte order of the path
	{"app/lib", 0o750, nil},
	{"app/lib/util.py", 0o644, []byte("def score():\n    return 42\n")},
	{"app/rest_api.py", 0o644, []byte("from flask import Flask\napp = Flask(__name__)  # SECRET-ALGORITHM\n")},
	{"empty.txt", 0o600, []byte{}},
	{"run.sh", 0o755, []byte("#!/bin/sh\nexec python3 app/rest_api.py\n")},
	{"with space.txt", 0o644, bytes.Repeat([]byte("x"), 70000)},
}

func writeSource(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	require.NoError(t, os.Mkdir(src, 0o755))
	for _, e := range source {
		p := filepath.Join(src, e.path)
		if e.data == nil {
			require.NoError(t, os.Mkdir(p, 0o700))
		} else {
			require.NoError(t, os.WriteFile(p, e.data, 0o600))
		}
		require.NoError(t, os.Chmod(p, e.mode))
	}
	return src
}

func encrypted(t *testing.T) (string, fspf.Key, fspf.Tag) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "enc")
	k, tag, err := fspf.Encrypt(writeSource(t), dst, nil)
	require.NoError(t, err)
	return dst, k, tag
}

func TestRoundTrip(t *testing.T) {
	dst, k, tag := encrypted(t)

	for _, e := range source {
		if len(e.data) < 8 {
			continue
		}
		ct, err := os.ReadFile(filepath.Join(dst, e.path))
		require.NoError(t, err)
		assert.NotContains(t, string(ct), string(e.data[:8]), "plaintext in the encrypted %s", e.path)
	}

	tree, err := fspf.Decrypt(dst, k, tag)
	require.NoError(t, err)
	var wantDirs []fspf.Dir
	var wantFiles []fspf.File
	for _, e := range source {
		if e.data == nil {
			wantDirs = append(wantDirs, fspf.Dir{Path: e.path, Mode: e.mode})
		} else {
			wantFiles = append(wantFiles, fspf.File{Path: e.path, Mode: e.mode, Data: e.data})
		}
	}
	assert.Equal(t, wantDirs, tree.Dirs)
	assert.Equal(t, wantFiles, tree.Files)

	viaManifest, err := fspf.Decrypt(filepath.Join(dst, fspf.ManifestName), k, tag)
	require.NoError(t, err, "the session's fspf_path may name the manifest")
	assert.Equal(t, tree, viaManifest)

	out := t.TempDir()
	require.NoError(t, tree.WriteDir(out))
	for _, e := range source {
		fi, err := os.Lstat(filepath.Join(out, e.path))
		require.NoError(t, err)
		assert.Equal(t, e.mode, fi.Mode().Perm(), e.path)
		if e.data != nil {
			got, err := os.ReadFile(filepath.Join(out, e.path))
			require.NoError(t, err)
			assert.Equal(t, e.data, got, e.path)
		}
	}
	require.Error(t, tree.WriteDir(out), "WriteDir never overwrites")

	tree.Wipe()
	for _, f := range tree.Files {
		assert.Equal(t, make([]byte, len(f.Data)), f.Data, "wiped %s", f.Path)
	}
}

func TestEncryptIsFreshEachTime(t *testing.T) {
	src := writeSource(t)
	k1, t1, err := fspf.Encrypt(src, filepath.Join(t.TempDir(), "a"), nil)
	require.NoError(t, err)
	k2, t2, err := fspf.Encrypt(src, filepath.Join(t.TempDir(), "b"), nil)
	require.NoError(t, err)
	assert.NotEqual(t, k1.Hex(), k2.Hex())
	assert.NotEqual(t, t1, t2)
}

func copyTree(t *testing.T, from string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "copy")
	require.NoError(t, os.CopyFS(to, os.DirFS(from)))
	return to
}

func TestDecryptRefusals(t *testing.T) {
	base, key, tag := encrypted(t)
	otherKey := key
	otherKey[0] ^= 1
	otherTag := tag
	otherTag[31] ^= 1

	tests := []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		key     *fspf.Key
		tag     *fspf.Tag
		want    error
		mention []string
	}{
		{
			name: "changed byte",
			mutate: func(t *testing.T, dir string) {
				t.Helper()
				p := filepath.Join(dir, "app/rest_api.py")
				b, err := os.ReadFile(p)
				require.NoError(t, err)
				b[len(b)/2] ^= 0x01
				require.NoError(t, os.WriteFile(p, b, 0o644))
			},
			want: fspf.ErrTampered, mention: []string{"app/rest_api.py", "content changed"},
		},
		{
			name: "added file",
			mutate: func(t *testing.T, dir string) {
				t.Helper()
				require.NoError(t, os.WriteFile(filepath.Join(dir, "app/evil.py"), []byte("x"), 0o644))
			},
			want: fspf.ErrTampered, mention: []string{"app/evil.py", "not in the manifest"},
		},
		{
			name: "added directory",
			mutate: func(t *testing.T, dir string) {
				t.Helper()
				require.NoError(t, os.MkdirAll(filepath.Join(dir, "app/plugins/x"), 0o755))
			},
			want: fspf.ErrTampered, mention: []string{"app/plugins", "not in the manifest"},
		},
		{
			name: "removed file",
			mutate: func(t *testing.T, dir string) {
				t.Helper()
				require.NoError(t, os.Remove(filepath.Join(dir, "app/lib/util.py")))
			},
			want: fspf.ErrTampered, mention: []string{"app/lib/util.py", "missing"},
		},
		{
			name: "removed empty directory",
			mutate: func(t *testing.T, dir string) {
				t.Helper()
				require.NoError(t, os.Remove(filepath.Join(dir, "app-data")))
			},
			want: fspf.ErrTampered, mention: []string{"app-data", "missing"},
		},
		{
			name: "renamed file",
			mutate: func(t *testing.T, dir string) {
				t.Helper()
				require.NoError(t, os.Rename(filepath.Join(dir, "run.sh"), filepath.Join(dir, "start.sh")))
			},
			want: fspf.ErrTampered, mention: []string{"run.sh", "start.sh", "missing", "not in the manifest"},
		},
		{
			name: "file replaced by a symlink",
			mutate: func(t *testing.T, dir string) {
				t.Helper()
				p := filepath.Join(dir, "run.sh")
				require.NoError(t, os.Rename(p, filepath.Join(t.TempDir(), "moved")))
				require.NoError(t, os.Symlink("/etc/passwd", p))
			},
			want: fspf.ErrTampered, mention: []string{"run.sh", "symlink"},
		},
		{
			name: "manifest edited",
			mutate: func(t *testing.T, dir string) {
				t.Helper()
				p := filepath.Join(dir, fspf.ManifestName)
				b, err := os.ReadFile(p)
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(p, bytes.Replace(b, []byte("f 0755 "), []byte("f 0777 "), 1), 0o644))
			},
			want: fspf.ErrTagMismatch, mention: []string{"manifest hashes to"},
		},
		{
			name: "manifest removed",
			mutate: func(t *testing.T, dir string) {
				t.Helper()
				require.NoError(t, os.Remove(filepath.Join(dir, fspf.ManifestName)))
			},
			want: fs.ErrNotExist, mention: []string{".fspf"},
		},
		{name: "wrong key", key: &otherKey, want: fspf.ErrWrongKey, mention: []string{"not the key"}},
		{name: "wrong tag", tag: &otherTag, want: fspf.ErrTagMismatch, mention: []string{otherTag.String()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyTree(t, base)
			if tt.mutate != nil {
				tt.mutate(t, dir)
			}
			k, tg := key, tag
			if tt.key != nil {
				k = *tt.key
			}
			if tt.tag != nil {
				tg = *tt.tag
			}
			tree, err := fspf.Decrypt(dir, k, tg)
			require.ErrorIs(t, err, tt.want)
			assert.Nil(t, tree)
			for _, m := range tt.mention {
				assert.Contains(t, err.Error(), m)
			}
			assert.NotContains(t, err.Error(), "SECRET-ALGORITHM", "errors never carry contents")
			assert.NotContains(t, err.Error(), key.Hex(), "errors never carry the key")
		})
	}
}

// A file moved to another path fails to decrypt even when the attacker also controls the tag:
// the per-file key and the AAD bind the path.
func TestMovedCiphertextFailsEvenWithForgedManifest(t *testing.T) {
	dir, key, _ := encrypted(t)
	fsys := fstest.MapFS{}
	require.NoError(t, fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if d.IsDir() {
			if p != "." {
				fsys[p] = &fstest.MapFile{Mode: fs.ModeDir | 0o755}
			}
			return nil
		}
		b, err := os.ReadFile(filepath.Join(dir, p))
		require.NoError(t, err)
		fsys[p] = &fstest.MapFile{Data: b, Mode: 0o644}
		return nil
	}))
	// Put util.py's ciphertext in place of rest_api.py and fix the manifest line accordingly.
	moved := fsys["app/lib/util.py"].Data
	var forged []string
	for _, line := range strings.Split(string(fsys[fspf.ManifestName].Data), "\n") {
		if strings.HasSuffix(line, " app/rest_api.py") {
			line = fmt.Sprintf("f 0644 %d %x app/rest_api.py", len(moved)-28, sha256.Sum256(moved))
		}
		forged = append(forged, line)
	}
	fsys["app/rest_api.py"] = &fstest.MapFile{Data: moved, Mode: 0o644}
	fsys[fspf.ManifestName] = &fstest.MapFile{Data: []byte(strings.Join(forged, "\n")), Mode: 0o644}

	_, err := fspf.DecryptFS(fsys, key, sha256.Sum256(fsys[fspf.ManifestName].Data))
	require.ErrorIs(t, err, fspf.ErrTampered)
	assert.Contains(t, err.Error(), "app/rest_api.py: authenticated decryption failed")
}

func TestEncryptRefusals(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, src, dst string) (string, string)
		mention []string
	}{
		{
			name: "symlink",
			setup: func(t *testing.T, src, dst string) (string, string) {
				t.Helper()
				require.NoError(t, os.Symlink("rest_api.py", filepath.Join(src, "app/link.py")))
				return src, dst
			},
			mention: []string{"app/link.py", "symlink", "only regular files and directories"},
		},
		{
			name: "named pipe",
			setup: func(t *testing.T, src, dst string) (string, string) {
				t.Helper()
				require.NoError(t, syscall.Mkfifo(filepath.Join(src, "app/fifo"), 0o600))
				return src, dst
			},
			mention: []string{"app/fifo", "named pipe"},
		},
		{
			name: "non-empty destination",
			setup: func(t *testing.T, src, dst string) (string, string) {
				t.Helper()
				require.NoError(t, os.MkdirAll(dst, 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(dst, "old"), nil, 0o644))
				return src, dst
			},
			mention: []string{"not empty", "fresh directory"},
		},
		{
			name: "destination inside the source",
			setup: func(t *testing.T, src, _ string) (string, string) {
				t.Helper()
				return src, filepath.Join(src, "app", "enc")
			},
			mention: []string{"inside the source"},
		},
		{
			name: "source is a file",
			setup: func(t *testing.T, src, dst string) (string, string) {
				t.Helper()
				return filepath.Join(src, "run.sh"), dst
			},
			mention: []string{"not a directory"},
		},
		{
			name: "reserved manifest name",
			setup: func(t *testing.T, src, dst string) (string, string) {
				t.Helper()
				require.NoError(t, os.WriteFile(filepath.Join(src, fspf.ManifestName), nil, 0o644))
				return src, dst
			},
			mention: []string{".fspf", "reserved"},
		},
		{
			name: "newline in a name",
			setup: func(t *testing.T, src, dst string) (string, string) {
				t.Helper()
				require.NoError(t, os.WriteFile(filepath.Join(src, "a\nb"), nil, 0o644))
				return src, dst
			},
			mention: []string{"control character"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := tt.setup(t, writeSource(t), filepath.Join(t.TempDir(), "enc"))
			_, _, err := fspf.Encrypt(src, dst, nil)
			require.Error(t, err)
			for _, m := range tt.mention {
				assert.Contains(t, err.Error(), m)
			}
			if tt.name != "non-empty destination" {
				_, statErr := os.Stat(filepath.Join(dst, fspf.ManifestName))
				assert.ErrorIs(t, statErr, fs.ErrNotExist, "nothing left behind")
			}
		})
	}
}

func TestEncryptCleansUpOnFailure(t *testing.T) {
	src := writeSource(t)
	dst := t.TempDir()                                                     // existing and empty: kept, but emptied again
	_, _, err := fspf.Encrypt(src, dst, bytes.NewReader(make([]byte, 40))) // runs out of randomness
	require.Error(t, err)
	entries, err := os.ReadDir(dst)
	require.NoError(t, err)
	assert.Empty(t, entries)
}

func TestParseKeyAndTag(t *testing.T) {
	good := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "valid", in: good},
		{name: "valid with newline", in: good + "\n"},
		{name: "uppercase", in: strings.ToUpper(good)},
		{name: "short", in: "abcd", wantErr: "want 64 hex characters, got 4"},
		{name: "long", in: good + "00", wantErr: "want 64 hex characters, got 66"},
		{name: "not hex", in: strings.Repeat("zz", 32), wantErr: "not valid hex"},
		{name: "empty", in: "", wantErr: "want 64 hex characters, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, kerr := fspf.ParseKey(tt.in)
			tg, terr := fspf.ParseTag(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, kerr, "fspf: key: "+tt.wantErr)
				require.ErrorContains(t, terr, "fspf: tag: "+tt.wantErr)
				if len(tt.in) >= 8 {
					assert.NotContains(t, kerr.Error(), tt.in[:8], "the input is never echoed")
				}
				return
			}
			require.NoError(t, kerr)
			require.NoError(t, terr)
			assert.Equal(t, good, k.Hex())
			assert.Equal(t, good, tg.String())
		})
	}
}

func TestKeyNeverPrints(t *testing.T) {
	k, err := fspf.ParseKey(strings.Repeat("5a", 32))
	require.NoError(t, err)
	for _, verb := range []string{"%v", "%s", "%x", "%#v", "%d"} {
		out := fmt.Sprintf(verb, k)
		assert.NotContains(t, out, "5a5a", verb)
		assert.NotContains(t, out, "90 90", verb)
	}
	assert.Equal(t, strings.Repeat("5a", 32), hex.EncodeToString(k[:]))
}

// TestDecryptKubernetesVolume: a tree mounted from a ConfigMap (the app chart's) is laid out by
// the kubelet's atomic writer: the tree in a timestamped directory, ..data a symlink to it, the
// top-level names symlinks into ..data. Decrypt checks and opens the tree behind ..data.
func TestDecryptKubernetesVolume(t *testing.T) {
	enc, k, tag := encrypted(t)
	want, err := fspf.Decrypt(enc, k, tag)
	require.NoError(t, err)

	vol := filepath.Join(t.TempDir(), "vol")
	require.NoError(t, os.Mkdir(vol, 0o755))
	const ts = "..2026_11_27_15_05_01.1202003433"
	require.NoError(t, os.Rename(enc, filepath.Join(vol, ts)))
	require.NoError(t, os.Symlink(ts, filepath.Join(vol, "..data")))
	entries, err := os.ReadDir(filepath.Join(vol, ts))
	require.NoError(t, err)
	for _, e := range entries {
		require.NoError(t, os.Symlink(filepath.Join("..data", e.Name()), filepath.Join(vol, e.Name())))
	}
	got, err := fspf.Decrypt(vol, k, tag)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	got, err = fspf.Decrypt(filepath.Join(vol, fspf.ManifestName), k, tag)
	require.NoError(t, err, "the session's fspf_path may name the manifest")
	assert.Equal(t, want, got)

	// The tree behind ..data is checked as any other.
	require.NoError(t, os.WriteFile(filepath.Join(vol, ts, "extra.txt"), []byte("x"), 0o600))
	_, err = fspf.Decrypt(vol, k, tag)
	require.ErrorContains(t, err, "extra.txt")

	// A ..data that is not a symlink to a directory beside it is not followed: the tree is
	// the volume itself, whose symlinks are refused.
	require.NoError(t, os.Remove(filepath.Join(vol, ts, "extra.txt")))
	require.NoError(t, os.Remove(filepath.Join(vol, "..data")))
	require.NoError(t, os.Symlink(filepath.Join(vol, ts), filepath.Join(vol, "..data")))
	_, err = fspf.Decrypt(vol, k, tag)
	require.ErrorContains(t, err, "..data")
}
