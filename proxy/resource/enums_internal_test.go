package resource

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/stretchr/testify/assert"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestEnumTables: the enum values the parser knows (for protoc-gen-validate's defined_only and
// for its errors) are those of the generated descriptors.
func TestEnumTables(t *testing.T) {
	tests := []struct {
		name  string
		table map[int32]string
		enum  protoreflect.EnumDescriptor
	}{
		{"protocols", protocols, corev3.SocketAddress_TCP.Descriptor()},
		{"discoveryTypes", discoveryTypes, clusterv3.Cluster_STATIC.Descriptor()},
		{"lbPolicies", lbPolicies, clusterv3.Cluster_ROUND_ROBIN.Descriptor()},
		{"tlsProtocols", tlsProtocols, tlsv3.TlsParameters_TLS_AUTO.Descriptor()},
		{"sanTypes", sanTypes, tlsv3.SubjectAltNameMatcher_URI.Descriptor()},
		{"trustChainVerifications", trustChainVerifications, tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN.Descriptor()},
		{"apiVersions", apiVersions, corev3.ApiVersion_V3.Descriptor()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := map[int32]string{}
			for i := range tt.enum.Values().Len() {
				v := tt.enum.Values().Get(i)
				want[int32(v.Number())] = string(v.Name())
			}
			assert.Equal(t, want, tt.table)
		})
	}
	assert.Equal(t, int32(corev3.SocketAddress_TCP), int32(protocolTCP))
	assert.Equal(t, int32(tlsv3.SubjectAltNameMatcher_URI), int32(sanURI))
	assert.Equal(t, int32(tlsv3.TlsParameters_TLSv1_3), int32(tlsV13))
}
