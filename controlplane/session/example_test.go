package session_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/session"
)

const (
	redisName = "flask-redis/redis"
	flaskName = "flask-redis/flask"
)

var (
	redisMR  = strings.Repeat("ab", 32)
	pythonMR = strings.Repeat("cd", 32)
)

// exampleVars are the values that `attestmesh apply` would give the flask-redis templates.
func exampleVars() map[string]string {
	return map[string]string{
		"REDIS_SESSION":    redisName,
		"FLASK_SESSION":    flaskName,
		"REDIS_MRENCLAVE":  redisMR,
		"PYTHON_MRENCLAVE": pythonMR,
		"ATTESTATION_MODE": "simulation",
		"API_FSPF_PATH":    "/app",
		"API_FSPF_KEY":     strings.Repeat("c", 64),
		"API_FSPF_TAG":     strings.Repeat("d", 64),
	}
}

// exampleDoc returns an expanded example session document from examples/flask-redis.
func exampleDoc(tb testing.TB, file string) []byte {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "examples", "flask-redis", file))
	require.NoError(tb, err)
	doc, err := session.Expand(raw, exampleVars())
	require.NoError(tb, err)
	return doc
}

// examples parses both example sessions.
func examples(tb testing.TB) (redis, flask *session.Session) {
	tb.Helper()
	redis, err := session.Parse(exampleDoc(tb, "redis-session.yaml"))
	require.NoError(tb, err)
	flask, err = session.Parse(exampleDoc(tb, "flask-session.yaml"))
	require.NoError(tb, err)
	return redis, flask
}
