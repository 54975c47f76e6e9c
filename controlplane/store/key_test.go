package store_test

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/store"
)

func TestLoadKey(t *testing.T) {
	key := testKey(0x40)
	hexKey := hex.EncodeToString(key[:])
	base := t.TempDir()
	dataDir := filepath.Join(base, "data")
	require.NoError(t, os.MkdirAll(dataDir, 0o700))
	write := func(name string, content []byte, mode os.FileMode) string {
		p := filepath.Join(base, name)
		require.NoError(t, os.WriteFile(p, content, 0o600))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	inData := filepath.Join(dataDir, "store.key")
	require.NoError(t, os.WriteFile(inData, []byte(hexKey), 0o600))
	// A Kubernetes Secret volume: the key is reached through symlinks.
	require.NoError(t, os.MkdirAll(filepath.Join(base, "secret", "..data"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(base, "secret", "..data", "store.key"), []byte(hexKey+"\n"), 0o400))
	require.NoError(t, os.Symlink("..data/store.key", filepath.Join(base, "secret", "store.key")))

	tests := []struct {
		name    string
		cfg     store.KeyConfig
		env     *string
		wantErr string
	}{
		{name: "hex file", cfg: store.KeyConfig{File: write("hex", []byte(hexKey), 0o600), DataDir: dataDir}},
		{name: "hex file with newline", cfg: store.KeyConfig{File: write("hexnl", []byte(hexKey+"\n"), 0o400)}},
		{name: "raw file", cfg: store.KeyConfig{File: write("raw", key[:], 0o600)}},
		{name: "kubernetes secret symlink", cfg: store.KeyConfig{File: filepath.Join(base, "secret", "store.key"), DataDir: dataDir}},
		{name: "environment", env: &hexKey},
		{name: "environment with spaces", env: ptr("  " + hexKey + "\n")},
		{name: "readable by its own group (a Secret volume with fsGroup)", cfg: store.KeyConfig{File: write("g", []byte(hexKey), 0o440)}},
		{name: "writable by its own group", cfg: store.KeyConfig{File: write("gw", []byte(hexKey), 0o660)}, wantErr: "must not be accessible by others, nor by a group"},
		{name: "readable by another group", cfg: store.KeyConfig{File: otherGroup(t, write("og", []byte(hexKey), 0o640))}, wantErr: "must not be accessible by others, nor by a group"},
		{name: "world readable", cfg: store.KeyConfig{File: write("o", []byte(hexKey), 0o604)}, wantErr: "mode 0604"},
		{name: "inside the data dir", cfg: store.KeyConfig{File: inData, DataDir: dataDir}, wantErr: "inside the data dir"},
		{name: "inside the data dir via dots", cfg: store.KeyConfig{File: filepath.Join(base, "x", "..", "data", "store.key"), DataDir: dataDir + "/"}, wantErr: "inside the data dir"},
		{name: "short file", cfg: store.KeyConfig{File: write("short", []byte("abcd"), 0o600)}, wantErr: "want 32 raw bytes or 64 hex characters, got 4"},
		{name: "not hex", cfg: store.KeyConfig{File: write("nothex", []byte(strings.Repeat("zz", 32)), 0o600)}, wantErr: "not valid hex"},
		{name: "zero key", cfg: store.KeyConfig{File: write("zero", make([]byte, 32), 0o600)}, wantErr: "all zeros"},
		{name: "missing file", cfg: store.KeyConfig{File: filepath.Join(base, "nope")}, wantErr: "no such file"},
		{name: "bad environment", env: ptr("beef"), wantErr: "ATTESTMESH_STORE_KEY: want 32 raw bytes or 64 hex characters, got 4"},
		{name: "both sources", cfg: store.KeyConfig{File: write("both", []byte(hexKey), 0o600)}, env: &hexKey, wantErr: "choose one"},
		{name: "no source", wantErr: "no store key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != nil {
				t.Setenv(store.EnvKey, *tt.env)
			} else {
				t.Setenv(store.EnvKey, "")
				require.NoError(t, os.Unsetenv(store.EnvKey))
			}
			got, err := store.LoadKey(tt.cfg)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.NotContains(t, err.Error(), hexKey, "errors never carry the key")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, key, got)
		})
	}
}

func ptr(s string) *string { return &s }

func TestGenerateKeyFile(t *testing.T) {
	t.Setenv(store.EnvKey, "")
	require.NoError(t, os.Unsetenv(store.EnvKey))
	path := filepath.Join(t.TempDir(), "store.key")
	k, err := store.GenerateKeyFile(path)
	require.NoError(t, err)

	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	loaded, err := store.LoadKey(store.KeyConfig{File: path})
	require.NoError(t, err)
	assert.Equal(t, k, loaded)

	_, err = store.GenerateKeyFile(path)
	require.ErrorIs(t, err, os.ErrExist, "never overwrite a key")
	again, err := store.LoadKey(store.KeyConfig{File: path})
	require.NoError(t, err)
	assert.Equal(t, k, again, "the refused overwrite left the key intact")
}

func TestKeyNeverPrints(t *testing.T) {
	k := testKey(0x11)
	for _, verb := range []string{"%v", "%s", "%x", "%X", "%#v", "%q", "%d", "%+v"} {
		out := fmt.Sprintf(verb, k)
		assert.NotContains(t, strings.ToLower(out), hex.EncodeToString(k[:4]), verb)
		assert.NotContains(t, out, "17 18 19", verb)
	}
}

// otherGroup gives the file a group this process is not in (only root can: otherwise it makes
// the file readable by others too, which is refused as well).
func otherGroup(t *testing.T, p string) string {
	t.Helper()
	if err := os.Chown(p, -1, 54321); err != nil {
		require.NoError(t, os.Chmod(p, 0o644))
	}
	return p
}
