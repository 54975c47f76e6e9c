package proxy_test

import (
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3" // the typed configs' types
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/proxy"
)

func TestEnvoyBootstrap(t *testing.T) {
	tests := []struct {
		name    string
		cfg     proxy.Config
		wantID  string
		wantIn  []string
		wantErr string
	}{
		{
			name:   "defaults",
			cfg:    proxy.Config{ConfigID: "patients/redis"},
			wantID: "spiffe://attestmesh.local/patients/redis",
			wantIn: []string{`"address": "127.0.0.1"`, `"port_value": 18000`, `"exact": "spiffe://attestmesh.local/controlplane"`, `"/run/attestmesh/svid-key.pem"`, `"config_id": "patients/redis"`, `"type": "STATIC"`},
		},
		{
			name:   "session with namespaces, DNS control plane, any member",
			cfg:    proxy.Config{ConfigID: "team/a/patients/api", TrustDomain: "example.org", XDSAddr: "cas.mesh.svc:18000", XDSAnyMember: true, EnvoyCredentialsDir: "/dev/shm/svid"},
			wantID: "spiffe://example.org/team/a/patients/api",
			wantIn: []string{`"type": "STRICT_DNS"`, `"prefix": "spiffe://example.org/"`, `"/dev/shm/svid/svid.pem"`},
		},
		{name: "bad config ID", cfg: proxy.Config{ConfigID: "redis"}, wantErr: "want SESSION/SERVICE"},
		{name: "bad xDS address", cfg: proxy.Config{ConfigID: "a/b", XDSAddr: "nocolon"}, wantErr: "xDS address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := proxy.EnvoyBootstrap(tt.cfg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			var b bootstrapv3.Bootstrap
			require.NoError(t, protojson.Unmarshal(out, &b))
			require.NoError(t, b.ValidateAll())
			// ValidateAll does not look inside Any fields: validate the typed configs too.
			c := b.GetStaticResources().GetClusters()[0]
			for _, a := range []*anypb.Any{c.GetTransportSocket().GetTypedConfig(), c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]} {
				m, err := a.UnmarshalNew()
				require.NoError(t, err)
				require.NoError(t, m.(interface{ ValidateAll() error }).ValidateAll(), "%T", m)
			}
			assert.Equal(t, tt.wantID, b.GetNode().GetId())
			assert.Equal(t, "attestmesh_xds", b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName())
			for _, s := range tt.wantIn {
				assert.Contains(t, string(out), s)
			}
		})
	}
}
