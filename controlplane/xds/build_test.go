package xds

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden (and create testdata/pki if missing)")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	td      = spiffeid.RequireTrustDomainFromString("attestmesh.local")
	flaskID = spiffeid.RequireFromPath(td, "/flask-redis/flask")
	redisID = spiffeid.RequireFromPath(td, "/flask-redis/redis")
)

// flaskRedis is the seed mesh: Flask reaches Redis on 127.0.0.1:6379, which its sidecar carries
// over mTLS to Redis's sidecar on 16379, which hands it to Redis on 127.0.0.1:6379.
func flaskRedis() *Mesh {
	return &Mesh{
		TrustDomain: td,
		Services: []Service{
			{
				Name: "flask",
				ID:   flaskID,
				Connects: []Connect{{
					Service: "redis", Port: 16379, LocalPort: 6379, Endpoints: []string{"10.0.0.12:16379"},
				}},
			},
			{
				Name:  "redis",
				ID:    redisID,
				Ports: []Port{{Port: 16379, AppPort: 6379, AllowedPeers: []string{"flask"}}},
			},
		},
	}
}

func TestBuildGolden(t *testing.T) {
	bundle, svids := goldenPKI(t)
	m := flaskRedis()
	for _, svc := range []Service{m.Services[0], m.Services[1]} {
		t.Run(svc.Name, func(t *testing.T) {
			res, err := Build(m, svc.Name, bundle, svids[svc.ID])
			require.NoError(t, err)
			got := renderGolden(t, res)
			path := filepath.Join("testdata", "golden", svc.Name+".json")
			if *update {
				require.NoError(t, os.WriteFile(path, got, 0o600))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run go test -update to create the golden file")
			assert.Equal(t, string(want), string(got), "resources differ from %s (rerun with -update if intended)", path)
		})
	}
}

// renderGolden renders resources as indented JSON with sorted keys: protojson's own output is
// deliberately unstable in its spacing, so it is parsed and re-encoded.
func renderGolden(t *testing.T, res map[resource.Type][]types.Resource) []byte {
	t.Helper()
	out := map[string][]any{}
	for key, typ := range map[string]resource.Type{
		"listeners": resource.ListenerType, "clusters": resource.ClusterType, "secrets": resource.SecretType,
	} {
		out[key] = []any{}
		for _, r := range res[typ] {
			b, err := protojson.Marshal(r)
			require.NoError(t, err)
			var v any
			require.NoError(t, json.Unmarshal(b, &v))
			out[key] = append(out[key], v)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(out))
	return buf.Bytes()
}

func TestBuildNames(t *testing.T) {
	bundle, svids := goldenPKI(t)
	m := flaskRedis()
	tests := []struct {
		svc                          string
		listeners, clusters, secrets []string
	}{
		{"flask", []string{"outbound|redis|16379"}, []string{"outbound|redis|16379"}, []string{"svid", "trust_bundle"}},
		{"redis", []string{"inbound|16379"}, []string{"local|16379"}, []string{"svid", "trust_bundle"}},
	}
	for _, tt := range tests {
		t.Run(tt.svc, func(t *testing.T) {
			res, err := Build(m, tt.svc, bundle, svids[m.index()[tt.svc].ID])
			require.NoError(t, err)
			assert.Equal(t, tt.listeners, names(res[resource.ListenerType]))
			assert.Equal(t, tt.clusters, names(res[resource.ClusterType]))
			assert.Equal(t, tt.secrets, names(res[resource.SecretType]))
		})
	}
}

func names(rs []types.Resource) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, resourceName(r))
	}
	return out
}

func TestBuildErrors(t *testing.T) {
	bundle, svids := goldenPKI(t)
	tests := []struct {
		name    string
		svc     string
		mutate  func(m *Mesh)
		noTrust bool
		svid    spiffeid.ID
		wantErr string
	}{
		{name: "unknown service", svc: "postgres", svid: flaskID, wantErr: `xds: build: unknown service "postgres"`},
		{name: "empty trust bundle", svc: "flask", svid: flaskID, noTrust: true, wantErr: "xds: build: trust bundle is empty"},
		{name: "no SVID", svc: "flask", wantErr: `xds: build: no SVID for "spiffe://attestmesh.local/flask-redis/flask"`},
		{
			name: "SVID of another service", svc: "flask", svid: redisID,
			wantErr: `SVID for "spiffe://attestmesh.local/flask-redis/flask" holds SPIFFE ID "spiffe://attestmesh.local/flask-redis/redis"`,
		},
		{
			name: "invalid mesh", svc: "flask", svid: flaskID,
			mutate:  func(m *Mesh) { m.Services[1].Ports[0].AllowedPeers = []string{"nginx"} },
			wantErr: `allowed_peers: unknown service "nginx"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := flaskRedis()
			if tt.mutate != nil {
				tt.mutate(m)
			}
			b := bundle
			if tt.noTrust {
				b = nil
			}
			_, err := Build(m, tt.svc, b, svids[tt.svid])
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}
