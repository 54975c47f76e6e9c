package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/fspf"
	"github.com/attestmesh/attestmesh/cmd/attestmesh/cli"
)

func TestFSPFEncrypt(t *testing.T) {
	src := filepath.Join(t.TempDir(), "app")
	require.NoError(t, os.MkdirAll(filepath.Join(src, "pkg"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "rest_api.py"), []byte("print('api')\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "pkg", "db.py"), []byte("DB = 1\n"), 0o600))
	nonEmpty := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(nonEmpty, "x"), nil, 0o644))

	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantOut   *regexp.Regexp
		wantInErr string
	}{
		{
			name:      "encrypt",
			args:      []string{"fspf", "encrypt", src, filepath.Join(t.TempDir(), "enc")},
			wantOut:   regexp.MustCompile(`^fspf_key: [0-9a-f]{64}\nfspf_tag: [0-9a-f]{64}\n$`),
			wantInErr: "set fspf_path",
		},
		{name: "help", args: []string{"fspf", "encrypt", "--help"}, wantOut: regexp.MustCompile(`(?s)fspf_tag.*Usage:.*encrypt SRC DST`)},
		{name: "missing argument", args: []string{"fspf", "encrypt", src}, wantCode: 1, wantInErr: "accepts 2 arg(s), received 1"},
		{name: "non-empty destination", args: []string{"fspf", "encrypt", src, nonEmpty}, wantCode: 1, wantInErr: "fspf: destination " + nonEmpty + " is not empty"},
		{name: "missing source", args: []string{"fspf", "encrypt", filepath.Join(src, "nope"), filepath.Join(t.TempDir(), "e")}, wantCode: 1, wantInErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cli.Run(t.Context(), tt.args, &stdout, &stderr)
			require.Equal(t, tt.wantCode, code, "stderr: %s", stderr.String())
			if tt.wantOut != nil {
				assert.Regexp(t, tt.wantOut, stdout.String())
			}
			assert.Contains(t, stderr.String(), tt.wantInErr)
		})
	}
}

// The printed key and tag open the tree that the command wrote.
func TestFSPFEncryptOutputDecrypts(t *testing.T) {
	src := filepath.Join(t.TempDir(), "app")
	require.NoError(t, os.MkdirAll(src, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "main.py"), []byte("print('hi')\n"), 0o644))
	dst := filepath.Join(t.TempDir(), "enc")
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, cli.Run(t.Context(), []string{"fspf", "encrypt", src, dst}, &stdout, &stderr), stderr.String())

	m := regexp.MustCompile(`fspf_key: ([0-9a-f]+)\nfspf_tag: ([0-9a-f]+)\n`).FindStringSubmatch(stdout.String())
	require.Len(t, m, 3)
	key, err := fspf.ParseKey(m[1])
	require.NoError(t, err)
	tag, err := fspf.ParseTag(m[2])
	require.NoError(t, err)
	tree, err := fspf.Decrypt(dst, key, tag)
	require.NoError(t, err)
	require.Len(t, tree.Files, 1)
	assert.Equal(t, "main.py", tree.Files[0].Path)
	assert.Equal(t, []byte("print('hi')\n"), tree.Files[0].Data)
}
