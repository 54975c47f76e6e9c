package resource_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/proxy/proxytest"
	"github.com/attestmesh/attestmesh/proxy/resource"
)

// goldenResources returns the resources of kind that controlplane/xds builds for the seed mesh
// (its golden files), marshalled by go-control-plane's generated types.
func goldenResources(tb testing.TB, kind string) []*anypb.Any {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	require.NoError(tb, err)
	require.NotEmpty(tb, files)
	var out []*anypb.Any
	for _, path := range files {
		b, err := os.ReadFile(path)
		require.NoError(tb, err)
		var doc map[string][]json.RawMessage
		require.NoError(tb, json.Unmarshal(b, &doc))
		for _, raw := range doc[kind] {
			m := map[string]func() proto.Message{
				"listeners": func() proto.Message { return &listenerv3.Listener{} },
				"clusters":  func() proto.Message { return &clusterv3.Cluster{} },
				"secrets":   func() proto.Message { return &tlsv3.Secret{} },
			}[kind]()
			require.NoError(tb, protojson.Unmarshal(raw, m), path)
			a, err := anypb.New(m)
			require.NoError(tb, err)
			out = append(out, a)
		}
	}
	return out
}

// TestGoldenDifferential: the control plane's real resources (the golden files of
// controlplane/xds) parse to the same result with both parsers, one file at a time as the
// control plane sends them.
func TestGoldenDifferential(t *testing.T) {
	p := pruner(readFields(t))
	for _, kind := range []string{"listeners", "clusters", "secrets"} {
		res := goldenResources(t, kind)
		require.NotEmpty(t, res, kind)
		for _, a := range res {
			differential(t, p, kind, []*anypb.Any{a})
			_, err := kinds[kind].parse([]*anypb.Any{a})
			require.NoError(t, err, "%s %s", kind, a.GetTypeUrl())
		}
	}
}

// Fuzz inputs of FuzzDifferential: which resource the bytes are, or replace part of.
const (
	fuzzListener      = iota // a Listener
	fuzzCluster              // a Cluster
	fuzzSecret               // a Secret
	fuzzDownstreamTLS        // the DownstreamTlsContext of an inbound listener
	fuzzTCPProxy             // the TcpProxy of an inbound listener
	fuzzUpstreamTLS          // the UpstreamTlsContext of an outbound cluster
	fuzzKinds
)

// fuzzResource builds the resource of an input: the bytes, or a test resource with its typed
// config's bytes replaced by them.
func fuzzResource(kind uint8, value []byte) (string, []*anypb.Any) {
	switch kind % fuzzKinds {
	case fuzzListener:
		return "listeners", []*anypb.Any{{TypeUrl: resource.ListenerType, Value: value}}
	case fuzzCluster:
		return "clusters", []*anypb.Any{{TypeUrl: resource.ClusterType, Value: value}}
	case fuzzSecret:
		return "secrets", []*anypb.Any{{TypeUrl: resource.SecretType, Value: value}}
	case fuzzDownstreamTLS:
		l := proxytest.InboundListener("0.0.0.0:8443", client, server)
		l.GetFilterChains()[0].GetTransportSocket().GetTypedConfig().Value = value
		return "listeners", []*anypb.Any{mustAny(l)}
	case fuzzTCPProxy:
		l := proxytest.InboundListener("0.0.0.0:8443", client)
		l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().Value = value
		return "listeners", []*anypb.Any{mustAny(l)}
	default:
		c := proxytest.OutboundCluster("redis", 6379, server, "10.0.0.1:8443")
		c.GetTransportSocket().GetTypedConfig().Value = value
		return "clusters", []*anypb.Any{mustAny(c)}
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// FuzzDifferential fuzzes the resources' bytes directly (and the typed configs inside them),
// with a tail of extra fields appended, which protobuf merges into what comes before (a message
// field twice, the last scalar or oneof member wins): the new parser must agree with the legacy
// one (differential).
func FuzzDifferential(f *testing.F) {
	for _, kind := range []struct {
		name string
		k    uint8
	}{{"listeners", fuzzListener}, {"clusters", fuzzCluster}, {"secrets", fuzzSecret}} {
		for _, a := range goldenResources(f, kind.name) {
			f.Add(kind.k, a.GetValue(), []byte{})
		}
	}
	in := proxytest.InboundListener("0.0.0.0:8443", client, server)
	f.Add(uint8(fuzzListener), mustAny(in).GetValue(), []byte{})
	f.Add(uint8(fuzzDownstreamTLS), in.GetFilterChains()[0].GetTransportSocket().GetTypedConfig().GetValue(), []byte{})
	f.Add(uint8(fuzzTCPProxy), in.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().GetValue(), []byte{})
	out := proxytest.OutboundCluster("redis", 6379, server, "10.0.0.1:8443", "[fd00::1]:8443")
	f.Add(uint8(fuzzCluster), mustAny(out).GetValue(), []byte{})
	f.Add(uint8(fuzzUpstreamTLS), out.GetTransportSocket().GetTypedConfig().GetValue(), []byte{})
	ca, err := proxytest.NewCA("attestmesh.local")
	require.NoError(f, err)
	chain, err := proxytest.ForeignSVIDPEM(ca, server)
	require.NoError(f, err)
	for _, s := range proxytest.Secrets(chain, ca) {
		f.Add(uint8(fuzzSecret), mustAny(s).GetValue(), []byte{})
	}
	p := pruner(readFields(f))
	f.Fuzz(func(t *testing.T, kind uint8, value, tail []byte) {
		name, res := fuzzResource(kind, append(value[:len(value):len(value)], tail...))
		differential(t, p, name, res)
	})
}

// TestWireSemantics checks protobuf's rules on hand-made bytes, each appended to a real
// resource: the expected verdict, and agreement with the legacy parser (differential).
func TestWireSemantics(t *testing.T) {
	p := pruner(readFields(t))
	in := mustAny(proxytest.InboundListener("0.0.0.0:8443", client)).GetValue()
	outL := mustAny(proxytest.OutboundListener("redis", 6379, "127.0.0.1:6379")).GetValue()
	local := mustAny(proxytest.LocalCluster("0.0.0.0:8443", "127.0.0.1:6379")).GetValue()
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	msg := func(num protowire.Number, parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	// Address{socket_address{...}} pieces.
	sockAddr := func(parts ...[]byte) []byte { return msg(2, msg(1, parts...)) }
	tests := []struct {
		name    string
		kind    string
		value   []byte
		wantErr string // "" accepts; "*" refuses for whatever reason
		check   func(t *testing.T, got []*resource.Listener)
	}{
		{name: "base inbound listener", kind: "listeners", value: in},
		{name: "name twice: the last wins", kind: "listeners", value: cat(outL, str(1, "other")),
			check: func(t *testing.T, ls []*resource.Listener) { t.Helper(); assert.Equal(t, "other", ls[0].Name) }},
		{name: "address twice: merged", kind: "listeners", value: cat(outL, sockAddr(varint(3, 7000))),
			check: func(t *testing.T, ls []*resource.Listener) {
				t.Helper()
				assert.Equal(t, "127.0.0.1:7000", ls[0].Address)
			}},
		{name: "address twice: merged, address only", kind: "listeners", value: cat(outL, sockAddr(str(2, "::1"))),
			check: func(t *testing.T, ls []*resource.Listener) { t.Helper(); assert.Equal(t, "[::1]:6379", ls[0].Address) }},
		{name: "oneof: pipe replaces the socket address", kind: "listeners", value: cat(outL, msg(2, msg(2, str(1, "/tmp/x")))), wantErr: "want a socket_address"},
		{name: "oneof: named_port replaces port_value", kind: "listeners", value: cat(outL, sockAddr(str(4, "redis"))), wantErr: "want a port_value"},
		{name: "oneof: port_value replaces named_port again", kind: "listeners", value: cat(outL, sockAddr(str(4, "redis")), sockAddr(varint(3, 1))),
			check: func(t *testing.T, ls []*resource.Listener) { t.Helper(); assert.Equal(t, "127.0.0.1:1", ls[0].Address) }},
		{name: "port_value above 65535 (protoc-gen-validate)", kind: "listeners", value: cat(outL, sockAddr(varint(3, 65536))), wantErr: "65535"},
		{name: "port_value truncated to 32 bits", kind: "listeners", value: cat(outL, sockAddr(varint(3, 1<<32|80))),
			check: func(t *testing.T, ls []*resource.Listener) {
				t.Helper()
				assert.Equal(t, "127.0.0.1:80", ls[0].Address)
			}},
		{name: "wrong wire type: an unknown field", kind: "listeners", value: cat(outL, varint(1, 5), protowire.AppendFixed32(protowire.AppendTag(nil, 2, protowire.Fixed32Type), 1))},
		{name: "a second filter chain", kind: "listeners", value: cat(outL, msg(3)), wantErr: "want exactly 1 filter chain, got 2"},
		{name: "name not UTF-8", kind: "listeners", value: cat(outL, str(1, "\xff")), wantErr: "UTF-8"},
		{name: "a replaced string must be UTF-8 too", kind: "listeners", value: cat(outL, str(1, "\xff"), str(1, "ok")), wantErr: "UTF-8"},
		{name: "empty filter_chain_match", kind: "listeners", value: cat(outL, msg(3, msg(1))), wantErr: "*"},
		{name: "listener filter", kind: "listeners", value: cat(outL, msg(9)), wantErr: "listener_filters are not supported"},
		{name: "malformed listener filter", kind: "listeners", value: cat(outL, msg(9, []byte{0x0a, 0x05})), wantErr: "*"},
		{name: "unknown field skipped, contents unseen", kind: "listeners", value: cat(outL, str(1000, "\xff\xff"), msg(1001, []byte{0x0a, 0x05}))},
		{name: "unknown group skipped", kind: "listeners", value: cat(outL, protowire.AppendTag(nil, 7000, protowire.StartGroupType), varint(1, 1), protowire.AppendTag(nil, 7000, protowire.EndGroupType))},
		{name: "end group without start", kind: "listeners", value: cat(outL, protowire.AppendTag(nil, 7000, protowire.EndGroupType)), wantErr: "*"},
		{name: "field number 0", kind: "listeners", value: cat(outL, []byte{0x02, 0x00}), wantErr: "*"},
		{name: "truncated", kind: "listeners", value: cat(outL, []byte{0x0a, 0x05, 'a'}), wantErr: "*"},
		{name: "field number above 2^29-1", kind: "listeners", value: cat(outL, protowire.AppendVarint(nil, uint64(1<<29)<<3)), wantErr: "*"},
		{name: "lb_policy sent packed: an unknown field", kind: "clusters", value: cat(local, msg(6, []byte{0x01}))},
		{name: "lb_policy RANDOM", kind: "clusters", value: cat(local, varint(6, 3)), wantErr: "ROUND_ROBIN"},
		{name: "cluster_type then type: STATIC wins", kind: "clusters", value: cat(local, msg(38), varint(2, 0))},
		{name: "type then cluster_type", kind: "clusters", value: cat(local, varint(2, 0), msg(38)), wantErr: "STATIC"},
		{name: "connect_timeout merged to -1s", kind: "clusters", value: cat(local, msg(4, varint(1, 0xffffffffffffffff))), wantErr: "greater than 0s"},
		{name: "connect_timeout merged", kind: "clusters", value: cat(local, msg(4, varint(2, 5)), msg(4, varint(1, 2)))},
		{name: "connect_timeout invalid", kind: "clusters", value: cat(local, msg(4, varint(1, 1), varint(2, 0xffffffffffffffff))), wantErr: "*"},
		{name: "load_assignment without cluster_name", kind: "clusters", value: cat(local, msg(33, str(1, ""))), wantErr: "*"},
		{name: "endpoint_name replaces endpoint", kind: "clusters", value: cat(local, msg(33, msg(2, msg(2, msg(1), str(5, "x"))))), wantErr: "want a socket_address"},
		{name: "priority above 128", kind: "clusters", value: cat(local, msg(33, msg(2, varint(5, 129)))), wantErr: "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := []*anypb.Any{{TypeUrl: map[string]string{"listeners": resource.ListenerType, "clusters": resource.ClusterType}[tt.kind], Value: tt.value}}
			differential(t, p, tt.kind, res)
			var err error
			var ls []*resource.Listener
			if tt.kind == "listeners" {
				ls, err = resource.ParseListeners(res)
			} else {
				_, err = resource.ParseClusters(res)
			}
			switch tt.wantErr {
			case "":
				require.NoError(t, err)
				if tt.check != nil {
					tt.check(t, ls)
				}
			case "*":
				require.Error(t, err)
			default:
				require.ErrorContains(t, err, tt.wantErr)
			}
		})
	}
}

// TestUnreadFieldsSkipped documents the one difference: a field the sidecar does not read is
// skipped without decoding it, where the legacy parser decoded and validated it.
func TestUnreadFieldsSkipped(t *testing.T) {
	l := proxytest.OutboundListener("redis", 6379, "127.0.0.1:6379")
	l.StatPrefix = "\xff" // field 28, not read
	b, err := proto.MarshalOptions{}.Marshal(l)
	if err != nil {
		// The generated marshaller refuses invalid UTF-8 too: build the bytes by hand.
		l.StatPrefix = ""
		b, err = proto.Marshal(l)
		require.NoError(t, err)
		b = protowire.AppendString(protowire.AppendTag(b, 28, protowire.BytesType), "\xff")
	}
	res := []*anypb.Any{{TypeUrl: resource.ListenerType, Value: b}}
	_, legacyErr := legacyParseListeners(res)
	require.ErrorContains(t, legacyErr, "UTF-8")
	ls, err := resource.ParseListeners(res)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:6379", ls[0].Address)
	differential(t, pruner(readFields(t)), "listeners", res)
}

// TestEnvoyJSONRoundTrip: what /config_dump prints of an accepted listener or cluster is Envoy's
// JSON (protojson reads it into the generated type), and parses again to the same result.
func TestEnvoyJSONRoundTrip(t *testing.T) {
	for _, kind := range []string{"listeners", "clusters"} {
		res := goldenResources(t, kind)
		res = append(res, mustAny(proxytest.InboundListener("0.0.0.0:8443", client, server)), mustAny(proxytest.OutboundCluster("redis", 6379, server, "10.0.0.1:8443", "[fd00::1]:8443")))
		for _, a := range res {
			if a.GetTypeUrl() != map[string]string{"listeners": resource.ListenerType, "clusters": resource.ClusterType}[kind] {
				continue
			}
			var dump map[string]any
			var m proto.Message
			switch kind {
			case "listeners":
				ls, err := resource.ParseListeners([]*anypb.Any{a})
				require.NoError(t, err)
				dump, m = ls[0].EnvoyJSON(), &listenerv3.Listener{}
			default:
				cs, err := resource.ParseClusters([]*anypb.Any{a})
				require.NoError(t, err)
				dump, m = cs[0].EnvoyJSON(), &clusterv3.Cluster{}
			}
			b, err := json.Marshal(dump)
			require.NoError(t, err)
			require.NoError(t, protojson.Unmarshal(b, m), "%s", b)
			want, wantErr := kinds[kind].parse([]*anypb.Any{a})
			require.NoError(t, wantErr)
			got, err := kinds[kind].parse([]*anypb.Any{mustAny(m)})
			require.NoError(t, err, "%s", b)
			assert.Equal(t, want, got)
		}
	}
}
