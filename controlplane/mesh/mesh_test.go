package mesh_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
	"github.com/attestmesh/attestmesh/controlplane/mgmt/mgmttest"
)

func TestExampleMesh(t *testing.T) {
	m, err := mesh.Load(filepath.Join("..", "..", "examples", "flask-redis", "mesh.yaml"))
	require.NoError(t, err)
	assert.Equal(t, "flaskredis", m.Name, "the Helm release of the seed: helm install flaskredis target/helm")
	require.Len(t, m.Services, 2)
	api, ok := m.Service("api")
	require.True(t, ok)
	assert.Equal(t, "flask-redis/flask/flask_restapi", api.ConfigID)
	assert.Equal(t, []mesh.Connect{{Service: "redis", Port: 6379}}, api.Connects)
	assert.Equal(t, []string{"api"}, m.AllowedPeers("redis", 6379))
	assert.Empty(t, m.AllowedPeers("api", 4996))
}

func TestParseRefusals(t *testing.T) {
	base := func(services string) string {
		return "name: app\nsessions: [s.yaml]\nvariables:\n  S: ns/s\nservices:\n" + services
	}
	tests := []struct {
		name string
		doc  string
		msg  string
	}{
		{"unknown key", base("  - name: a\n    config_id: $S/a\n    binary: /bin/true\n    bogus: 1\n"), "field bogus not found"},
		{"bad app name", "name: App_1\nsessions: [s.yaml]\nservices:\n  - name: a\n    config_id: x/a\n    binary: /bin/true\n", `name: "App_1" must be a DNS label`},
		{"undefined variable", base("  - name: a\n    config_id: $NOPE/a\n    binary: /bin/true\n"), "services[0].config_id: undefined variable $NOPE"},
		{"relative binary", base("  - name: a\n    config_id: $S/a\n    binary: true\n"), `services[0].binary: "true": want the absolute path`},
		{"unknown connect", base("  - name: a\n    config_id: $S/a\n    binary: /bin/true\n    connects: [{service: b, port: 1}]\n"), `services[0].connects[0].service: unknown service "b" (known: a)`},
		{"port not served", base("  - name: a\n    config_id: $S/a\n    binary: /bin/true\n  - name: b\n    config_id: $S/b\n    binary: /bin/true\n    connects: [{service: a, port: 80}]\n"), `services[1].connects[0].port: service "a" serves no port 80`},
		{"duplicate service", base("  - name: a\n    config_id: $S/a\n    binary: /bin/true\n  - name: a\n    config_id: $S/a\n    binary: /bin/true\n"), `services[1].name: duplicate service "a"`},
		{"local port clash", base("  - name: a\n    config_id: $S/a\n    binary: /bin/true\n    ports: [{port: 80}]\n  - name: b\n    config_id: $S/b\n    binary: /bin/true\n    ports: [{port: 80}]\n  - name: c\n    config_id: $S/c\n    binary: /bin/true\n    connects: [{service: a, port: 80}, {service: b, port: 80}]\n"), `services[2].connects[1]: local port 80 is also the local port of connects[0] (set local_port on one of them)`},
		{"local port served", base("  - name: a\n    config_id: $S/a\n    binary: /bin/true\n    ports: [{port: 80}]\n  - name: b\n    config_id: $S/b\n    binary: /bin/true\n    ports: [{port: 81}]\n    connects: [{service: a, port: 80, local_port: 81}]\n"), `services[1].connects[0].local_port: 81 is also a port the service serves`},
		{"local port range", base("  - name: a\n    config_id: $S/a\n    binary: /bin/true\n    ports: [{port: 80}]\n  - name: b\n    config_id: $S/b\n    binary: /bin/true\n    connects: [{service: a, port: 80, local_port: 70000}]\n"), `services[1].connects[0].local_port: 70000 is not a TCP port`},
		{"bad variable", "name: app\nsessions: [s.yaml]\nvariables:\n  X: [1, 2]\nservices:\n  - name: a\n    config_id: x/a\n    binary: /bin/true\n", "variables.X: want a value or {measure: /path/to/binary}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mesh.Parse([]byte(tt.doc))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestResolveMeasuresBinaries(t *testing.T) {
	m, err := mesh.Parse([]byte("name: app\nsessions: [s.yaml]\nvariables:\n  M: {measure: /bin/sh}\n  V: plain\nservices:\n  - name: a\n    config_id: x/a\n    binary: /bin/sh\n"))
	require.NoError(t, err)
	vars, err := m.Resolve()
	require.NoError(t, err)
	want, err := measure.File("/bin/sh")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"M": want.Hex(), "V": "plain"}, vars)
}

// TestApplyCreatesUpdatesAndSkips runs apply against a real management API: the first apply
// creates both sessions (exporter first), the second changes nothing, and a changed template
// becomes an update carrying the predecessor.
func TestApplyCreatesUpdatesAndSkips(t *testing.T) {
	srv := mgmttest.Start(t)
	api := srv.Client(t, true)
	dir := t.TempDir()
	src := filepath.Join("..", "..", "examples", "flask-redis")
	for _, f := range []string{"mesh.yaml", "redis-session.yaml", "flask-session.yaml"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), b, 0o600))
	}
	m, err := mesh.Load(filepath.Join(dir, "mesh.yaml"))
	require.NoError(t, err)
	vars := map[string]string{
		"REDIS_SESSION": "flask-redis/redis", "FLASK_SESSION": "flask-redis/flask", "ATTESTATION_MODE": "simulation",
		"REDIS_MRENCLAVE": strings.Repeat("a", 64), "PYTHON_MRENCLAVE": strings.Repeat("b", 64),
		"API_FSPF_PATH": "/app", "API_FSPF_KEY": strings.Repeat("c", 64), "API_FSPF_TAG": strings.Repeat("d", 64),
	}
	ctx := context.Background()
	var out bytes.Buffer
	changes, err := m.Apply(ctx, api, vars, &out)
	require.NoError(t, err)
	require.Len(t, changes, 4)
	assert.Equal(t, mesh.Change{Session: "flaskredis", Action: "created", Hash: changes[0].Hash}, changes[0], "the mesh's name, a session of its own")
	assert.Equal(t, mesh.Change{Session: "flask-redis", Action: "created", Hash: changes[1].Hash}, changes[1], "the namespace before its sessions")
	assert.Contains(t, out.String(), "namespace flask-redis created")
	changes = changes[2:]
	assert.Equal(t, "created", changes[0].Action)
	assert.Equal(t, "flask-redis/redis", changes[0].Session)
	assert.Equal(t, "created", changes[1].Action)
	assert.Contains(t, out.String(), "session flask-redis/flask created")

	out.Reset()
	changes, err = m.Apply(ctx, api, vars, &out)
	require.NoError(t, err)
	assert.Equal(t, "unchanged", changes[0].Action)
	assert.Equal(t, "unchanged", changes[1].Action)

	vars["REDIS_MRENCLAVE"] = strings.Repeat("e", 64)
	changes, err = m.Apply(ctx, api, vars, &out)
	require.NoError(t, err)
	assert.Equal(t, "updated", changes[0].Action)
	assert.ElementsMatch(t, []string{"redis", "redis_client_cert", "redis_ca_cert"}, changes[0].Secrets)
	assert.Equal(t, "unchanged", changes[1].Action)

	// Another client cannot apply over sessions it did not create: it cannot even see them,
	// nor take their namespace.
	vars["REDIS_MRENCLAVE"] = strings.Repeat("f", 64)
	_, err = m.Apply(ctx, srv.Client(t, true), vars, &out)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "namespace session flaskredis exists and belongs to another client", "the mesh's name first")
}

// TestLocalPort: a client of two services that serve the same port gets one of them on
// another local port (registry tests check the xDS model built from it).
func TestLocalPort(t *testing.T) {
	m, err := mesh.Parse([]byte("name: app\nsessions: [s.yaml]\nservices:\n" +
		"  - name: a\n    config_id: ns/a\n    binary: /bin/true\n    ports: [{port: 80}]\n" +
		"  - name: b\n    config_id: ns/b\n    binary: /bin/true\n    ports: [{port: 80}]\n" +
		"  - name: c\n    config_id: ns/c\n    binary: /bin/true\n    connects: [{service: a, port: 80}, {service: b, port: 80, local_port: 8081}]\n"))
	require.NoError(t, err)
	c, ok := m.Service("c")
	require.True(t, ok)
	require.Len(t, c.Connects, 2)
	assert.Equal(t, uint32(80), c.Connects[0].ListenPort(), "local_port defaults to port")
	assert.Equal(t, uint32(8081), c.Connects[1].ListenPort())

}
