package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/cmd/attestmesh/cli"
)

func exampleVarArgs() []string {
	m := strings.Repeat("ab", 32)
	return []string{
		"--var", "REDIS_SESSION=flask-redis/redis", "--var", "FLASK_SESSION=flask-redis/flask",
		"--var", "REDIS_MRENCLAVE=" + m, "--var", "PYTHON_MRENCLAVE=" + m,
		"--var", "ATTESTATION_MODE=simulation",
		"--var", "API_FSPF_PATH=/app", "--var", "API_FSPF_KEY=" + strings.Repeat("c", 64), "--var", "API_FSPF_TAG=" + strings.Repeat("d", 64),
	}
}

func TestSessionCheck(t *testing.T) {
	examples := filepath.Join("..", "..", "..", "examples", "flask-redis")
	redis := filepath.Join(examples, "redis-session.yaml")
	flask := filepath.Join(examples, "flask-session.yaml")

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte(`name: flask-redis/bad
version: "0.3"
services:
  - name: app
    mrenclaves: [abc]
secrets:
  - name: stolen
    import: {session: flask-redis/redis, secret: redis_key}
  - name: cert
    kind: x509
    issuer: redis_ca
`), 0o600))

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{
			name:   "examples together",
			args:   append([]string{"session", "check", "-f", redis, "-f", flask}, exampleVarArgs()...),
			stdout: []string{"2 sessions OK\n"},
		},
		{
			name: "import without its exporter",
			args: append([]string{"session", "check", "-f", flask}, exampleVarArgs()...),
			code: 1,
			stdout: []string{
				flask + `:71: secrets[4].import.session: unknown session "flask-redis/redis": secret "redis_client_key" imports from it`,
			},
			stderr: "attestmesh: session check: 1 of 1 files have problems\n",
		},
		{
			name: "bad file with the examples",
			args: append([]string{"session", "check", "-f", redis, "--file", bad, "-f", flask}, exampleVarArgs()...),
			code: 1,
			stdout: []string{
				bad + `:5: services[0].mrenclaves[0]: want 64 hex characters, got "abc"` + "\n",
				bad + `:8: secrets[0].import.secret: secret "redis_key" of session "flask-redis/redis" is not exported to session "flask-redis/bad" (exported to: none)` + "\n",
				bad + `:11: secrets[1].issuer: unknown secret "redis_ca" (known: stolen, cert)` + "\n",
			},
			stderr: "1 of 3 files have problems",
		},
		{
			name:   "undefined variable",
			args:   []string{"session", "check", "-f", redis},
			code:   1,
			stdout: []string{redis + ":6: undefined variable $REDIS_SESSION\n", redis + ":21: undefined variable $REDIS_MRENCLAVE\n"},
			stderr: "attestmesh: session check: 1 of 1 files have problems\n",
		},
		{
			name:   "missing file",
			args:   []string{"session", "check", "-f", filepath.Join(examples, "nope.yaml")},
			code:   1,
			stdout: []string{"nope.yaml: open "},
			stderr: "attestmesh: session check: 1 of 1 files have problems\n",
		},
		{
			name:   "bad --var",
			args:   []string{"session", "check", "-f", redis, "--var", "NOVALUE"},
			code:   2,
			stderr: `attestmesh: --var "NOVALUE": want NAME=VALUE`,
		},
		{
			name:   "no file",
			args:   []string{"session", "check"},
			code:   1,
			stderr: `required flag(s) "file" not set`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cli.Run(t.Context(), tt.args, &stdout, &stderr)
			assert.Equal(t, tt.code, code, "stdout: %s\nstderr: %s", stdout.String(), stderr.String())
			for _, want := range tt.stdout {
				assert.Contains(t, stdout.String(), want)
			}
			if tt.stderr != "" {
				assert.Contains(t, stderr.String(), tt.stderr)
			} else {
				assert.Empty(t, stderr.String())
			}
		})
	}
}

func TestSessionCheckHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, cli.Run(t.Context(), []string{"session", "check", "--help"}, &stdout, &stderr))
	help := stdout.String()
	for _, want := range []string{"check -f FILE [-f FILE ...] [--var NAME=VALUE ...]", "FILE:LINE: field: message", "--var stringArray", "-f, --file stringArray"} {
		assert.Contains(t, help, want)
	}
}
