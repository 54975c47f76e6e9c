package launch

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewPlan(t *testing.T) {
	sh, err := canonical("/bin/sh")
	require.NoError(t, err)
	env, err := canonical("/usr/bin/env")
	require.NoError(t, err)
	tmp := t.TempDir()
	link := filepath.Join(tmp, "my-sh")
	require.NoError(t, os.Symlink("/bin/sh", link))
	ownBin := filepath.Join(tmp, "bin", "app")
	require.NoError(t, os.MkdirAll(filepath.Dir(ownBin), 0o755))
	require.NoError(t, os.WriteFile(ownBin, []byte("#!/bin/sh\n"), 0o755))
	ownBin, err = canonical(ownBin)
	require.NoError(t, err)

	tests := []struct {
		name    string
		cfg     Config
		binary  string
		wantErr string
		check   func(t *testing.T, p *plan)
	}{
		{
			name:   "absolute command through symlinks",
			cfg:    Config{Argv: []string{"/bin/sh", "-c", "true"}, Env: map[string]string{"B": "2", "A": "1"}},
			binary: sh,
			check: func(t *testing.T, p *plan) {
				t.Helper()
				assert.Equal(t, sh, p.Binary)
				assert.Equal(t, []string{"/bin/sh", "-c", "true"}, p.Argv)
				assert.Equal(t, []string{"A=1", "B=2"}, p.Env)
				assert.Equal(t, "/", p.Dir)
				assert.Empty(t, p.Mounts)
			},
		},
		{
			name:   "name looked up in the policy's PATH",
			cfg:    Config{Argv: []string{"sh"}, Env: map[string]string{"PATH": "/nonexistent:/bin"}},
			binary: sh,
		},
		{
			name:   "relative command taken from the working directory",
			cfg:    Config{Argv: []string{"./my-sh"}, Dir: tmp},
			binary: sh,
		},
		{
			name:    "policy names another binary",
			cfg:     Config{Argv: []string{"/usr/bin/env"}},
			binary:  sh,
			wantErr: `launch: policy command "/usr/bin/env" (resolves to "` + env + `") is not the measured binary "` + sh + `"`,
		},
		{
			name:    "command not in PATH",
			cfg:     Config{Argv: []string{"no-such-program-xyz"}, Env: map[string]string{"PATH": "/bin"}},
			binary:  sh,
			wantErr: `launch: policy command "no-such-program-xyz" not found in PATH "/bin"`,
		},
		{
			name:    "no command",
			cfg:     Config{},
			binary:  sh,
			wantErr: "launch: the policy has no command",
		},
		{
			name:    "relative working directory",
			cfg:     Config{Argv: []string{"/bin/sh"}, Dir: "app"},
			binary:  sh,
			wantErr: `launch: working directory "app" is not a clean absolute path`,
		},
		{
			name:    "bad environment name",
			cfg:     Config{Argv: []string{"/bin/sh"}, Env: map[string]string{"A=B": "x"}},
			binary:  sh,
			wantErr: `launch: environment variable "A=B": invalid name or value`,
		},
		{
			name: "mounts: outermost directories of files and fspf",
			cfg: Config{
				Argv: []string{"/bin/sh"},
				Files: map[string][]byte{
					"/tls/a.crt": []byte("a"), "/tls/sub/b.key": []byte("b"), "/tls-other/c": []byte("c"),
				},
				FSPF: &FSPF{Path: "/app", Key: "k", Tag: "t"},
			},
			binary: sh,
			check: func(t *testing.T, p *plan) {
				t.Helper()
				assert.Equal(t, []string{"/app", "/tls", "/tls-other"}, p.Mounts)
				require.Len(t, p.Files, 3)
				assert.Equal(t, "/tls-other/c", p.Files[0].Path)
			},
		},
		{
			name:    "relative injection path",
			cfg:     Config{Argv: []string{"/bin/sh"}, Files: map[string][]byte{"tls/a": nil}},
			binary:  sh,
			wantErr: `launch: injection file "tls/a" is not a clean absolute path`,
		},
		{
			name:    "system directory",
			cfg:     Config{Argv: []string{"/bin/sh"}, Files: map[string][]byte{"/etc/app.conf": nil}},
			binary:  sh,
			wantErr: "launch: refusing to cover /etc with a tmpfs",
		},
		{
			name:    "directory of the binary",
			cfg:     Config{Argv: []string{ownBin}, Files: map[string][]byte{filepath.Dir(ownBin) + "/x": nil}},
			binary:  ownBin,
			wantErr: "launch: refusing to cover " + filepath.Dir(ownBin) + ` with a tmpfs: it holds the measured binary "` + ownBin + `"`,
		},
		{
			name:    "fspf without a tag",
			cfg:     Config{Argv: []string{"/bin/sh"}, FSPF: &FSPF{Path: "/app", Key: "k"}},
			binary:  sh,
			wantErr: `launch: fspf path "/app" without fspf key and tag`,
		},
		{
			name:    "system directory below /usr",
			cfg:     Config{Argv: []string{"/bin/sh"}, Files: map[string][]byte{"/usr/lib/x": nil}},
			binary:  sh,
			wantErr: "launch: refusing to cover /usr/lib with a tmpfs",
		},
		{
			name:    "injection file inside the fspf directory",
			cfg:     Config{Argv: []string{"/bin/sh"}, Files: map[string][]byte{"/app/conf": nil}, FSPF: &FSPF{Path: "/app", Key: "k", Tag: "t"}},
			binary:  sh,
			wantErr: `launch: injection file "/app/conf" is inside the fspf directory "/app"`,
		},
		{
			name:    "files larger than the tmpfs",
			cfg:     Config{Argv: []string{"/bin/sh"}, Files: map[string][]byte{"/tls/big": make([]byte, 2048)}},
			binary:  sh,
			wantErr: "launch: injection files hold 2048 bytes, more than the tmpfs limit of 1024",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newPlan(&tt.cfg, tt.binary, "/usr/bin:/bin", 1024)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

func TestPlanErrorsHoldNoSecrets(t *testing.T) {
	secret := "-----BEGIN PRIVATE KEY-----top-secret"
	_, err := newPlan(&Config{
		Argv:  []string{"/bin/sh"},
		Files: map[string][]byte{"/etc/key.pem": []byte(secret)},
	}, "/bin/sh", "/bin", DefaultTmpfsSize)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "top-secret")
}

func TestOutermost(t *testing.T) {
	tests := []struct {
		in, want []string
	}{
		{in: nil, want: nil},
		{in: []string{"/a", "/a"}, want: []string{"/a"}},
		{in: []string{"/a/b", "/a-b", "/a"}, want: []string{"/a", "/a-b"}},
		{in: []string{"/x/y/z", "/x/y", "/q"}, want: []string{"/q", "/x/y"}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, outermost(tt.in), "outermost(%v)", tt.in)
	}
}

func TestMissingDirs(t *testing.T) {
	tmp := t.TempDir()
	got := missingDirs([]string{filepath.Join(tmp, "a", "b"), filepath.Join(tmp, "a", "c"), tmp})
	assert.Equal(t, []string{filepath.Join(tmp, "a", "b"), filepath.Join(tmp, "a", "c"), filepath.Join(tmp, "a")}, got)
}

func TestCandidates(t *testing.T) {
	assert.Equal(t, []Isolation{IsolationMountNS, IsolationUserNS}, candidates(IsolationAuto, true))
	assert.Equal(t, []Isolation{IsolationMountNS, IsolationUserNS, isolationNone}, candidates(IsolationAuto, false))
	assert.Equal(t, []Isolation{IsolationUserNS}, candidates(IsolationUserNS, true))
}
