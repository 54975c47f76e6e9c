package resource_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/attestmesh/attestmesh/proxy/proxytest"
	"github.com/attestmesh/attestmesh/proxy/resource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	client = spiffeid.RequireFromString("spiffe://attestmesh.local/app/client")
	server = spiffeid.RequireFromString("spiffe://attestmesh.local/app/server")
)

func anyOf(t *testing.T, ms ...proto.Message) []*anypb.Any {
	t.Helper()
	out := make([]*anypb.Any, 0, len(ms))
	for _, m := range ms {
		a, err := anypb.New(m)
		require.NoError(t, err)
		out = append(out, a)
	}
	return out
}

// downstream returns the DownstreamTlsContext inside l, for mutation.
func withDownstream(t *testing.T, l *listenerv3.Listener, mutate func(*tlsv3.DownstreamTlsContext)) *listenerv3.Listener {
	t.Helper()
	ts := l.GetFilterChains()[0].GetTransportSocket()
	d := &tlsv3.DownstreamTlsContext{}
	require.NoError(t, ts.GetTypedConfig().UnmarshalTo(d))
	mutate(d)
	a, err := anypb.New(d)
	require.NoError(t, err)
	ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
	return l
}

func TestParseListeners(t *testing.T) {
	tests := []struct {
		name    string
		in      func(t *testing.T) []proto.Message
		wantErr string
		check   func(t *testing.T, ls []*resource.Listener)
	}{
		{
			name: "inbound and outbound per conventions",
			in: func(*testing.T) []proto.Message {
				return []proto.Message{
					proxytest.InboundListener("0.0.0.0:8443", client),
					proxytest.OutboundListener("redis", 6379, "127.0.0.1:6379"),
				}
			},
			check: func(t *testing.T, ls []*resource.Listener) {
				t.Helper()
				require.Len(t, ls, 2)
				assert.Equal(t, resource.Inbound, ls[0].Direction)
				assert.Equal(t, "local|8443", ls[0].Cluster)
				assert.Equal(t, []string{"exact:" + client.String()}, ls[0].Peers.Matchers)
				require.NoError(t, ls[0].Peers.Authorize(client, nil))
				require.Error(t, ls[0].Peers.Authorize(server, nil))
				assert.Equal(t, resource.Outbound, ls[1].Direction)
				assert.Equal(t, "127.0.0.1:6379", ls[1].Address)
				assert.Equal(t, resource.DefaultIdleTimeout, ls[1].IdleTimeout)
			},
		},
		{
			name: "prefix matcher authorizes on segment boundaries",
			in: func(t *testing.T) []proto.Message {
				t.Helper()
				return []proto.Message{withDownstream(t, proxytest.InboundListener("0.0.0.0:8443", client), func(d *tlsv3.DownstreamTlsContext) {
					d.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames[0].Matcher =
						&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://attestmesh.local/app"}}
				})}
			},
			check: func(t *testing.T, ls []*resource.Listener) {
				t.Helper()
				require.NoError(t, ls[0].Peers.Authorize(server, nil))
				require.Error(t, ls[0].Peers.Authorize(spiffeid.RequireFromString("spiffe://attestmesh.local/apple/x"), nil))
			},
		},
		{
			// Envoy's prefix "spiffe://td/team/prod/" admits the services of session team/prod,
			// not spiffe://td/team/prod: service prod of session team (sessions may have '/').
			name: "prefix matcher with a trailing slash admits only IDs below it",
			in: func(t *testing.T) []proto.Message {
				t.Helper()
				return []proto.Message{withDownstream(t, proxytest.InboundListener("0.0.0.0:8443", client), func(d *tlsv3.DownstreamTlsContext) {
					d.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames[0].Matcher =
						&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://attestmesh.local/team/prod/"}}
				})}
			},
			check: func(t *testing.T, ls []*resource.Listener) {
				t.Helper()
				assert.Equal(t, []string{"prefix:spiffe://attestmesh.local/team/prod/"}, ls[0].Peers.Matchers)
				require.NoError(t, ls[0].Peers.Authorize(spiffeid.RequireFromString("spiffe://attestmesh.local/team/prod/db"), nil))
				require.NoError(t, ls[0].Peers.Authorize(spiffeid.RequireFromString("spiffe://attestmesh.local/team/prod/db/x"), nil))
				require.ErrorContains(t, ls[0].Peers.Authorize(spiffeid.RequireFromString("spiffe://attestmesh.local/team/prod"), nil),
					`unexpected ID "spiffe://attestmesh.local/team/prod"`)
				require.ErrorContains(t, ls[0].Peers.Authorize(spiffeid.RequireFromString("spiffe://attestmesh.local/team/production/db"), nil),
					`unexpected ID "spiffe://attestmesh.local/team/production/db"`)
			},
		},
		{
			// Envoy's exact "spiffe://td/app/client/" matches no SPIFFE ID (none ends with '/'); it
			// must not admit spiffe://td/app/client.
			name: "exact matcher with a trailing slash",
			in: func(t *testing.T) []proto.Message {
				t.Helper()
				return []proto.Message{withDownstream(t, proxytest.InboundListener("0.0.0.0:8443", client), func(d *tlsv3.DownstreamTlsContext) {
					d.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames[0].Matcher =
						&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: client.String() + "/"}}
				})}
			},
			wantErr: `match_typed_subject_alt_names: "spiffe://attestmesh.local/app/client/" is not a SPIFFE ID`,
		},
		{
			name: "unsupported filter",
			in: func(*testing.T) []proto.Message {
				l := proxytest.InboundListener("0.0.0.0:8443", client)
				l.FilterChains[0].Filters[0].Name = "envoy.filters.network.http_connection_manager"
				return []proto.Message{l}
			},
			wantErr: `unsupported filter "envoy.filters.network.http_connection_manager"`,
		},
		{
			name: "plaintext listener off loopback",
			in: func(*testing.T) []proto.Message {
				return []proto.Message{proxytest.OutboundListener("redis", 6379, "0.0.0.0:6379")}
			},
			wantErr: "must bind a loopback address",
		},
		{
			name: "client certificate not required",
			in: func(t *testing.T) []proto.Message {
				t.Helper()
				return []proto.Message{withDownstream(t, proxytest.InboundListener("0.0.0.0:8443", client), func(d *tlsv3.DownstreamTlsContext) {
					d.RequireClientCertificate = nil
				})}
			},
			wantErr: "require_client_certificate must be true",
		},
		{
			name: "unknown secret name",
			in: func(t *testing.T) []proto.Message {
				t.Helper()
				return []proto.Message{withDownstream(t, proxytest.InboundListener("0.0.0.0:8443", client), func(d *tlsv3.DownstreamTlsContext) {
					d.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].Name = "default"
				})}
			},
			wantErr: `unknown secret "default"`,
		},
		{
			name: "DNS SAN matcher",
			in: func(t *testing.T) []proto.Message {
				t.Helper()
				return []proto.Message{withDownstream(t, proxytest.InboundListener("0.0.0.0:8443", client), func(d *tlsv3.DownstreamTlsContext) {
					d.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames[0].SanType = tlsv3.SubjectAltNameMatcher_DNS
				})}
			},
			wantErr: "only URI is supported",
		},
		{
			name: "regex SAN matcher",
			in: func(t *testing.T) []proto.Message {
				t.Helper()
				return []proto.Message{withDownstream(t, proxytest.InboundListener("0.0.0.0:8443", client), func(d *tlsv3.DownstreamTlsContext) {
					d.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames[0].Matcher =
						&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "/client"}}
				})}
			},
			wantErr: "only exact and prefix are supported",
		},
		{
			name: "no SAN matcher",
			in: func(t *testing.T) []proto.Message {
				t.Helper()
				return []proto.Message{withDownstream(t, proxytest.InboundListener("0.0.0.0:8443", client), func(d *tlsv3.DownstreamTlsContext) {
					d.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames = nil
				})}
			},
			wantErr: "match_typed_subject_alt_names is empty",
		},
		{
			name: "duplicate address",
			in: func(*testing.T) []proto.Message {
				a := proxytest.OutboundListener("a", 1, "127.0.0.1:7000")
				b := proxytest.OutboundListener("b", 1, "127.0.0.1:7000")
				return []proto.Message{a, b}
			},
			wantErr: "already used by listener",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls, err := resource.ParseListeners(anyOf(t, tt.in(t)...))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, ls)
		})
	}
}

func TestParseClusters(t *testing.T) {
	tests := []struct {
		name    string
		in      func() *clusterv3.Cluster
		wantErr string
	}{
		{"outbound mTLS", func() *clusterv3.Cluster {
			return proxytest.OutboundCluster("redis", 6379, server, "10.0.0.1:8443", "10.0.0.2:8443")
		}, ""},
		{"local plaintext", func() *clusterv3.Cluster { return proxytest.LocalCluster("0.0.0.0:8443", "127.0.0.1:6379") }, ""},
		{"plaintext to a remote endpoint", func() *clusterv3.Cluster {
			return proxytest.LocalCluster("0.0.0.0:8443", "10.0.0.1:6379")
		}, "may only reach loopback endpoints"},
		{"EDS cluster", func() *clusterv3.Cluster {
			c := proxytest.OutboundCluster("redis", 6379, server, "10.0.0.1:8443")
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
			return c
		}, "only STATIC clusters"},
		{"mTLS without endpoints (no ready replica yet)", func() *clusterv3.Cluster {
			c := proxytest.OutboundCluster("redis", 6379, server, "10.0.0.1:8443")
			c.LoadAssignment.Endpoints = nil
			return c
		}, ""},
		{"plaintext without endpoints", func() *clusterv3.Cluster {
			c := proxytest.LocalCluster("0.0.0.0:8443", "127.0.0.1:6379")
			c.LoadAssignment.Endpoints = nil
			return c
		}, "no endpoints: a plaintext cluster"},
		{"hostname endpoint", func() *clusterv3.Cluster {
			c := proxytest.OutboundCluster("redis", 6379, server, "10.0.0.1:8443")
			c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "redis.local"
			return c
		}, "must be an IP literal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := resource.ParseClusters(anyOf(t, tt.in()))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Len(t, cs, 1)
			assert.Equal(t, resource.DefaultConnectTimeout, cs[0].ConnectTimeout)
		})
	}
}

func TestParseSecrets(t *testing.T) {
	ca, err := proxytest.NewCA("attestmesh.local")
	require.NoError(t, err)
	chain, err := proxytest.ForeignSVIDPEM(ca, server)
	require.NoError(t, err)
	good := proxytest.Secrets(chain, ca)

	ss, err := resource.ParseSecrets(anyOf(t, good[0].(proto.Message), good[1].(proto.Message)))
	require.NoError(t, err)
	require.Len(t, ss, 2)
	assert.Len(t, ss[0].Chain, 1)
	assert.Len(t, ss[1].CAs, 1)
	_, err = resource.ParseSecrets(anyOf(t, good[0].(proto.Message), good[1].(proto.Message), good[0].(proto.Message)))
	require.EqualError(t, err, fmt.Sprintf("secret %q: duplicate name", ss[0].Name))

	tests := []struct {
		name    string
		mutate  func(s *tlsv3.Secret)
		wantErr string
	}{
		{"inline private key", func(s *tlsv3.Secret) {
			s.GetTlsCertificate().PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "key"}}
		}, "private_key must not be sent"},
		{"other key provider", func(s *tlsv3.Secret) {
			s.GetTlsCertificate().PrivateKeyProvider.ProviderName = "cryptomb"
		}, "private_key_provider must be"},
		{"unknown name", func(s *tlsv3.Secret) { s.Name = "default" }, "unknown secret name"},
		{"file data source", func(s *tlsv3.Secret) {
			s.GetTlsCertificate().CertificateChain = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/cert.pem"}}
		}, "only inline_bytes or inline_string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := proto.Clone(good[0].(proto.Message)).(*tlsv3.Secret)
			tt.mutate(s)
			_, err := resource.ParseSecrets(anyOf(t, s))
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

// withTCPProxy returns l with its tcp_proxy filter's config mutated.
func withTCPProxy(tb testing.TB, l *listenerv3.Listener, mutate func(*tcpproxyv3.TcpProxy)) *listenerv3.Listener {
	tb.Helper()
	f := l.GetFilterChains()[0].GetFilters()[0]
	tp := &tcpproxyv3.TcpProxy{}
	require.NoError(tb, f.GetTypedConfig().UnmarshalTo(tp))
	mutate(tp)
	a, err := anypb.New(tp)
	require.NoError(tb, err)
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	return l
}

// TestIdleTimeout: the pipes read an idle timeout ≤ 0 as "none", which Envoy's tcp_proxy
// spells 0s. A Duration that is negative or invalid (mixed signs, nanos out of range, seconds
// beyond ±10000 years) is refused, as Envoy refuses it, rather than turned into "none"; a huge
// valid one saturates, it does not wrap around to a short or negative timeout.
func TestIdleTimeout(t *testing.T) {
	tests := []struct {
		name    string
		d       *durationpb.Duration
		want    time.Duration
		wantErr string
	}{
		{name: "unset: the default", want: resource.DefaultIdleTimeout},
		{name: "30s", d: &durationpb.Duration{Seconds: 30}, want: 30 * time.Second},
		{name: "0s disables it (Envoy's meaning)", d: &durationpb.Duration{}, want: 0},
		{name: "10000 years saturates", d: &durationpb.Duration{Seconds: 315576000000}, want: time.Duration(math.MaxInt64)},
		{name: "negative", d: &durationpb.Duration{Seconds: -1}, wantErr: "idle_timeout: must not be negative"},
		{name: "negative nanos", d: &durationpb.Duration{Nanos: -1}, wantErr: "idle_timeout: must not be negative"},
		{name: "mixed signs", d: &durationpb.Duration{Seconds: 1, Nanos: -1500000000}, wantErr: "idle_timeout: not a valid duration"},
		{name: "nanos out of range", d: &durationpb.Duration{Nanos: 1e9}, wantErr: "idle_timeout: not a valid duration"},
		{name: "seconds out of range", d: &durationpb.Duration{Seconds: math.MinInt64}, wantErr: "idle_timeout: not a valid duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := withTCPProxy(t, proxytest.OutboundListener("redis", 6379, "127.0.0.1:6379"), func(tp *tcpproxyv3.TcpProxy) {
				tp.IdleTimeout = tt.d
			})
			ls, err := resource.ParseListeners(anyOf(t, l))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, `listener "outbound|redis|6379": filter envoy.filters.network.tcp_proxy: `+tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, ls[0].IdleTimeout)
		})
	}
}

// TestTrustBundlePins: Envoy merges the trust_bundle secret's validation context into the TLS
// contexts' (combined_validation_context), so certificate pins sent there restrict the peers.
// The sidecar does not implement pinning: it refuses such a bundle rather than admit every peer
// of its CAs.
func TestTrustBundlePins(t *testing.T) {
	ca, err := proxytest.NewCA("attestmesh.local")
	require.NoError(t, err)
	chain, err := proxytest.ForeignSVIDPEM(ca, server)
	require.NoError(t, err)
	bundle := proxytest.Secrets(chain, ca)[1].(*tlsv3.Secret)
	tests := []struct {
		name    string
		mutate  func(v *tlsv3.CertificateValidationContext)
		wantErr string
	}{
		{name: "trusted_ca only", mutate: func(*tlsv3.CertificateValidationContext) {}},
		{name: "verify_certificate_spki", mutate: func(v *tlsv3.CertificateValidationContext) {
			v.VerifyCertificateSpki = []string{strings.Repeat("A", 43) + "="}
		}, wantErr: `secret "trust_bundle": validation_context: verify_certificate_hash and verify_certificate_spki (certificate pinning) are not supported`},
		{name: "verify_certificate_hash", mutate: func(v *tlsv3.CertificateValidationContext) {
			v.VerifyCertificateHash = []string{strings.Repeat("ab", 32)}
		}, wantErr: `secret "trust_bundle": validation_context: verify_certificate_hash and verify_certificate_spki (certificate pinning) are not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := proto.Clone(bundle).(*tlsv3.Secret)
			tt.mutate(s.GetValidationContext())
			ss, err := resource.ParseSecrets(anyOf(t, s))
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Len(t, ss[0].CAs, 1)
		})
	}
}
