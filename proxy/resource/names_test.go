package resource_test

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/proxy/resource"
)

// TestNames pins the names to docs/xds-conventions.md: a change here is a change of the wire.
func TestNames(t *testing.T) {
	tests := []struct{ got, want string }{
		{resource.InboundName(16379), "inbound|16379"},
		{resource.LocalClusterName(16379), "local|16379"},
		{resource.OutboundName("redis", 16379), "outbound|redis|16379"},
		{resource.OutboundName("a/b", 1), "outbound|a/b|1"},
		{resource.SecretSVID, "svid"},
		{resource.SecretTrustBundle, "trust_bundle"},
		{resource.KeyProvider, "attestmesh.attested_key"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.got)
	}
}

// TestTypeURLs checks the type URLs against the messages they name and against
// go-control-plane's, which key its snapshot cache.
func TestTypeURLs(t *testing.T) {
	tests := []struct {
		got, cache string
		msg        proto.Message
	}{
		{resource.ListenerType, resourcev3.ListenerType, &listenerv3.Listener{}},
		{resource.ClusterType, resourcev3.ClusterType, &clusterv3.Cluster{}},
		{resource.SecretType, resourcev3.SecretType, &tlsv3.Secret{}},
	}
	for _, tt := range tests {
		a, err := anypb.New(tt.msg)
		require.NoError(t, err)
		assert.Equal(t, a.GetTypeUrl(), tt.got)
		assert.Equal(t, tt.cache, tt.got)
	}
}
