package xds

import (
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// redisResources returns the resources of redis in the seed mesh, for the test to break.
func redisResources(t *testing.T) map[resource.Type][]types.Resource {
	t.Helper()
	bundle, svids := goldenPKI(t)
	res, err := Build(flaskRedis(), "redis", bundle, svids[redisID])
	require.NoError(t, err)
	return res
}

func inbound(res map[resource.Type][]types.Resource) *listener.Listener {
	return res[resource.ListenerType][0].(*listener.Listener)
}

// repack replaces the typed config a with m after edit changed it.
func repack[M proto.Message](t *testing.T, a *anypb.Any, m M, edit func(M)) {
	t.Helper()
	require.NoError(t, a.UnmarshalTo(m))
	edit(m)
	require.NoError(t, a.MarshalFrom(m))
}

func TestValidateSnapshot(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(t *testing.T, res map[resource.Type][]types.Resource)
		wantErr []string // substrings; none means valid
	}{
		{name: "as built", breakIt: func(*testing.T, map[resource.Type][]types.Resource) {}},
		{
			name: "tcp_proxy inside Any with empty stat_prefix",
			breakIt: func(t *testing.T, res map[resource.Type][]types.Resource) {
				t.Helper()
				repack(t, inbound(res).FilterChains[0].Filters[0].GetTypedConfig(), &tcpproxy.TcpProxy{},
					func(p *tcpproxy.TcpProxy) { p.StatPrefix = "" })
			},
			wantErr: []string{
				`xds: listener "inbound|16379": filter_chains[0].filters[0].typed_config (envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy)`,
				"invalid TcpProxy.StatPrefix: value length must be at least 1 runes",
			},
		},
		{
			name: "DownstreamTlsContext inside Any with an unspecified SAN type",
			breakIt: func(t *testing.T, res map[resource.Type][]types.Resource) {
				t.Helper()
				repack(t, inbound(res).FilterChains[0].TransportSocket.GetTypedConfig(), &tlsv3.DownstreamTlsContext{},
					func(c *tlsv3.DownstreamTlsContext) {
						c.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames[0].SanType = 0
					})
			},
			wantErr: []string{
				`listener "inbound|16379": filter_chains[0].transport_socket.typed_config (envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext)`,
				"SanType",
			},
		},
		{
			name: "Any of an unknown type",
			breakIt: func(_ *testing.T, res map[resource.Type][]types.Resource) {
				inbound(res).FilterChains[0].Filters[0].GetTypedConfig().TypeUrl = "type.googleapis.com/example.Unknown"
			},
			wantErr: []string{`listener "inbound|16379": filter_chains[0].filters[0].typed_config: cannot unpack "type.googleapis.com/example.Unknown"`},
		},
		{
			name: "outer field: negative connect_timeout",
			breakIt: func(_ *testing.T, res map[resource.Type][]types.Resource) {
				res[resource.ClusterType][0].(*cluster.Cluster).ConnectTimeout = durationpb.New(-time.Second)
			},
			wantErr: []string{`xds: cluster "local|16379"`, "ConnectTimeout"},
		},
		{
			name: "SDS secret missing from the snapshot",
			breakIt: func(_ *testing.T, res map[resource.Type][]types.Resource) {
				res[resource.SecretType] = res[resource.SecretType][:1]
			},
			wantErr: []string{
				`listener "inbound|16379": filter_chains[0].transport_socket.typed_config.common_tls_context.combined_validation_context.validation_context_sds_secret_config references secret "trust_bundle", which is not in the snapshot`,
			},
		},
		{
			name: "tcp_proxy cluster missing from the snapshot",
			breakIt: func(t *testing.T, res map[resource.Type][]types.Resource) {
				t.Helper()
				repack(t, inbound(res).FilterChains[0].Filters[0].GetTypedConfig(), &tcpproxy.TcpProxy{},
					func(p *tcpproxy.TcpProxy) { p.ClusterSpecifier = &tcpproxy.TcpProxy_Cluster{Cluster: "local|1"} })
			},
			wantErr: []string{`listener "inbound|16379": filter_chains[0].filters[0].typed_config.cluster references cluster "local|1", which is not in the snapshot`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := redisResources(t)
			tt.breakIt(t, res)
			snap, err := cache.NewSnapshot("1", res)
			require.NoError(t, err)
			err = ValidateSnapshot(snap)
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, want := range tt.wantErr {
				require.ErrorContains(t, err, want)
			}
		})
	}
}

func TestValidateSnapshotNil(t *testing.T) {
	require.EqualError(t, ValidateSnapshot(nil), "xds: validate: nil snapshot")
}
