package xds

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	sidecar "github.com/attestmesh/attestmesh/proxy/resource"
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
			cfg, err := parseAsSidecar(want)
			require.NoError(t, err, "the sidecar would NACK %s", path)
			assert.Equal(t, names(res[resource.ListenerType]), cfg.listeners)
			assert.Equal(t, names(res[resource.ClusterType]), cfg.clusters)
			assert.Equal(t, names(res[resource.SecretType]), cfg.secrets)
		})
	}
}

// sidecarConfig is what the sidecar accepted from a golden file: the names of its listeners,
// clusters and secrets.
type sidecarConfig struct{ listeners, clusters, secrets []string }

// parseAsSidecar reads a golden file as the sidecar reads an ADS response: every resource packed
// in an Any and run through proxy/resource's parsers, which refuse what the sidecar would NACK.
// It also checks what the parsers leave to the sidecar's later stages: every listener's cluster
// and every TLS context's secrets are in the file.
func parseAsSidecar(golden []byte) (*sidecarConfig, error) {
	var file map[string][]json.RawMessage
	if err := json.Unmarshal(golden, &file); err != nil {
		return nil, err
	}
	pack := func(key string, newMsg func() proto.Message) ([]*anypb.Any, error) {
		out := make([]*anypb.Any, 0, len(file[key]))
		for i, raw := range file[key] {
			m := newMsg()
			if err := protojson.Unmarshal(raw, m); err != nil {
				return nil, fmt.Errorf("%s[%d]: %w", key, i, err)
			}
			a, err := anypb.New(m)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
		return out, nil
	}
	ls, err := pack("listeners", func() proto.Message { return &listener.Listener{} })
	if err != nil {
		return nil, err
	}
	cs, err := pack("clusters", func() proto.Message { return &cluster.Cluster{} })
	if err != nil {
		return nil, err
	}
	ss, err := pack("secrets", func() proto.Message { return &tlsv3.Secret{} })
	if err != nil {
		return nil, err
	}
	listeners, err := sidecar.ParseListeners(ls)
	if err != nil {
		return nil, err
	}
	clusters, err := sidecar.ParseClusters(cs)
	if err != nil {
		return nil, err
	}
	secrets, err := sidecar.ParseSecrets(ss)
	if err != nil {
		return nil, err
	}
	cfg := &sidecarConfig{}
	have := map[string]bool{}
	for _, s := range secrets {
		cfg.secrets = append(cfg.secrets, s.Name)
		have["secret "+s.Name] = true
	}
	var refs []string
	refPeers := func(p sidecar.PeerPolicy) { refs = append(refs, "secret "+p.CertSecret, "secret "+p.BundleSecret) }
	for _, c := range clusters {
		cfg.clusters = append(cfg.clusters, c.Name)
		have["cluster "+c.Name] = true
		if c.TLS != nil {
			refPeers(c.TLS.Peers)
		}
	}
	for _, l := range listeners {
		cfg.listeners = append(cfg.listeners, l.Name)
		refs = append(refs, "cluster "+l.Cluster)
		if l.Peers != nil {
			refPeers(*l.Peers)
		}
	}
	for _, r := range refs {
		if !have[r] {
			return nil, fmt.Errorf("%s is referenced but not in the file", r)
		}
	}
	return cfg, nil
}

// TestParseAsSidecarRefuses checks that the golden check has teeth: a golden file that strays
// from what the sidecar accepts fails it, for the sidecar's reason.
func TestParseAsSidecarRefuses(t *testing.T) {
	golden := map[string][]byte{}
	for _, svc := range []string{"flask", "redis"} {
		b, err := os.ReadFile(filepath.Join("testdata", "golden", svc+".json"))
		require.NoError(t, err)
		golden[svc] = b
	}
	tests := []struct {
		name      string
		svc       string
		old, new  string
		wantError string
	}{
		{
			name: "unknown secret name", svc: "redis",
			old: `"name": "svid"`, new: `"name": "default"`,
			wantError: `unknown secret "default"`,
		},
		{
			name: "HTTP connection manager", svc: "redis",
			old: `"name": "envoy.filters.network.tcp_proxy"`, new: `"name": "envoy.filters.network.http_connection_manager"`,
			wantError: `unsupported filter "envoy.filters.network.http_connection_manager"`,
		},
		{
			name: "EDS cluster", svc: "flask",
			old: `"type": "STATIC"`, new: `"type": "EDS"`,
			wantError: "only STATIC clusters are supported, got EDS",
		},
		{
			name: "inline private key", svc: "flask",
			old: `"privateKeyProvider": {`, new: `"privateKey": {"inlineString": "key"}, "privateKeyProvider": {`,
			wantError: "private_key must not be sent",
		},
		{
			name: "listener names a cluster that is not sent", svc: "redis",
			old: `"cluster": "local|16379"`, new: `"cluster": "local|6379"`,
			wantError: `cluster local|6379 is referenced but not in the file`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := string(golden[tt.svc])
			require.Contains(t, in, tt.old)
			_, err := parseAsSidecar([]byte(strings.Replace(in, tt.old, tt.new, 1)))
			require.ErrorContains(t, err, tt.wantError)
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
