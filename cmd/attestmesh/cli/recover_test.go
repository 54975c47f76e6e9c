package cli_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/cmd/attestmesh/cli"
)

// TestRecoverCommands checks the command tree: help on every new verb and flag, and that each
// refuses what it lacks with the flag that fixes it. The workflow itself is tested in
// controlplane (TestRecoverLostStoreKey) and e2e.
func TestRecoverCommands(t *testing.T) {
	empty := t.TempDir()
	key := filepath.Join("..", "..", "..", "controlplane", "recovery", "testdata", "x25519-a.pem")
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  string
	}{
		{name: "recover help", args: []string{"recover", "--help"},
			wantOut: []string{"any --recovery-threshold of which give it back", "attestmesh recover record --data-dir D --out record.json",
				"--key-out string", "--share stringArray", "Available Commands:", "record", "share"}},
		{name: "record help", args: []string{"recover", "record", "--help"}, wantOut: []string{"nothing\nreadable without those keys", "-o, --out string"}},
		{name: "share help", args: []string{"recover", "share", "--help"},
			wantOut: []string{"Your private key never leaves your machine", "--to string", "--record string"}},
		{name: "controlplane help", args: []string{"controlplane", "--help"},
			wantOut: []string{"--recovery-key stringArray", "--recovery-threshold int", "--remove-recovery-record", "attestmesh recover"}},
		{name: "recover without output", args: []string{"recover", "--data-dir", empty, "--key", key}, wantCode: 1,
			wantErr: "--key-out is required"},
		{name: "recover without keys", args: []string{"recover", "--data-dir", empty, "--key-out", "-"}, wantCode: 1,
			wantErr: "give the recovery private keys (--key) or the holders' shares (--share)"},
		{name: "recover on no store", args: []string{"recover", "--data-dir", empty, "--key", key, "--key-out", "-"}, wantCode: 1,
			wantErr: "no store under --data-dir " + empty},
		{name: "recover with arguments", args: []string{"recover", "key.pem"}, wantCode: 1, wantErr: `unknown command "key.pem"`},
		{name: "record on no store", args: []string{"recover", "record", "--data-dir", empty}, wantCode: 1,
			wantErr: "no store under --data-dir " + empty},
		{name: "share without key", args: []string{"recover", "share", "--record", "r.json"}, wantCode: 1, wantErr: "--key is required"},
		{name: "share without record", args: []string{"recover", "share", "--key", key}, wantCode: 1,
			wantErr: "give either --record FILE (from attestmesh recover record) or --data-dir DIR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cli.Run(t.Context(), tc.args, &stdout, &stderr)
			require.Equal(t, tc.wantCode, code, stderr.String())
			for _, w := range tc.wantOut {
				assert.Contains(t, stdout.String(), w)
			}
			assert.Contains(t, stderr.String(), tc.wantErr)
		})
	}
}
