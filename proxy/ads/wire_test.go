package ads

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestDiscoveryRequestDecodesAsGenerated: the hand-written encoding of each request the client
// sends decodes with go-control-plane's generated type to the message the client used to build.
func TestDiscoveryRequestDecodesAsGenerated(t *testing.T) {
	node := &Node{ID: "spiffe://attestmesh.local/a/b", Cluster: "a/b", UserAgentName: "attestmesh-sidecar",
		Metadata: map[string]string{"config_id": "a/b", "b": "", "a": "é"}}
	genNode := &corev3.Node{Id: "spiffe://attestmesh.local/a/b", Cluster: "a/b", UserAgentName: "attestmesh-sidecar",
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"config_id": structpb.NewStringValue("a/b"), "b": structpb.NewStringValue(""), "a": structpb.NewStringValue("é"),
		}}}
	tests := []struct {
		name string
		req  *DiscoveryRequest
		want *discoveryv3.DiscoveryRequest
	}{
		{name: "empty", req: &DiscoveryRequest{}, want: &discoveryv3.DiscoveryRequest{}},
		{
			name: "first subscription, with the node",
			req:  &DiscoveryRequest{TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Node: node, VersionInfo: "3"},
			want: &discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Node: genNode, VersionInfo: "3"},
		},
		{
			name: "named subscription, an empty name kept",
			req:  &DiscoveryRequest{TypeURL: "t", ResourceNames: []string{"svid", "", "trust_bundle"}},
			want: &discoveryv3.DiscoveryRequest{TypeUrl: "t", ResourceNames: []string{"svid", "", "trust_bundle"}},
		},
		{
			name: "NACK",
			req:  &DiscoveryRequest{TypeURL: "t", VersionInfo: "1", ResponseNonce: "n", ErrorDetail: &ErrorDetail{Code: 3, Message: "listener \"x\": bad"}},
			want: &discoveryv3.DiscoveryRequest{TypeUrl: "t", VersionInfo: "1", ResponseNonce: "n", ErrorDetail: &rpcstatus.Status{Code: 3, Message: "listener \"x\": bad"}},
		},
		{
			name: "negative code, empty node",
			req:  &DiscoveryRequest{Node: &Node{}, ErrorDetail: &ErrorDetail{Code: -1}},
			want: &discoveryv3.DiscoveryRequest{Node: &corev3.Node{}, ErrorDetail: &rpcstatus.Status{Code: -1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs, err := codec{}.Marshal(tt.req)
			require.NoError(t, err)
			got := &discoveryv3.DiscoveryRequest{}
			require.NoError(t, proto.Unmarshal(bs.Materialize(), got))
			assert.Empty(t, got.ProtoReflect().GetUnknown())
			assert.True(t, proto.Equal(tt.want, got), "want %v\ngot  %v", tt.want, got)
		})
	}
}

// TestDiscoveryResponseDecodesGenerated: a response marshalled by the generated type decodes
// with the hand-written one to the same fields; the fields the client does not read are skipped.
func TestDiscoveryResponseDecodesGenerated(t *testing.T) {
	a1, err := anypb.New(&corev3.Address{})
	require.NoError(t, err)
	tests := []struct {
		name string
		resp *discoveryv3.DiscoveryResponse
	}{
		{name: "empty", resp: &discoveryv3.DiscoveryResponse{}},
		{name: "resources", resp: &discoveryv3.DiscoveryResponse{
			VersionInfo: "7", TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", Nonce: "42",
			Resources: []*anypb.Any{a1, {TypeUrl: "x", Value: []byte{1, 2, 3}}, {}},
			Canary:    true, ControlPlane: &corev3.ControlPlane{Identifier: "cp"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := proto.Marshal(tt.resp)
			require.NoError(t, err)
			got := &DiscoveryResponse{}
			require.NoError(t, codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got))
			assert.Equal(t, tt.resp.GetVersionInfo(), got.VersionInfo)
			assert.Equal(t, tt.resp.GetTypeUrl(), got.TypeURL)
			assert.Equal(t, tt.resp.GetNonce(), got.Nonce)
			require.Len(t, got.Resources, len(tt.resp.GetResources()))
			for i, a := range tt.resp.GetResources() {
				assert.Empty(t, cmpAny(a, got.Resources[i]))
			}
		})
	}
}

func cmpAny(want, got *anypb.Any) string {
	if proto.Equal(want, got) {
		return ""
	}
	return want.String() + " != " + got.String()
}

// FuzzDecodeResponse: whatever the generated DiscoveryResponse decodes, the hand-written one
// decodes to the same fields the client reads. (It may decode more: it skips the fields it does
// not read, where the generated type checks them.)
func FuzzDecodeResponse(f *testing.F) {
	a, err := anypb.New(&corev3.Node{Id: "x"})
	require.NoError(f, err)
	for _, r := range []*discoveryv3.DiscoveryResponse{
		{VersionInfo: "1", TypeUrl: "t", Nonce: "n", Resources: []*anypb.Any{a, a}},
		{Canary: true, ControlPlane: &corev3.ControlPlane{Identifier: "cp"}},
	} {
		b, err := proto.Marshal(r)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := &DiscoveryResponse{}
		err := got.Unmarshal(b)
		want := &discoveryv3.DiscoveryResponse{}
		if proto.Unmarshal(b, want) != nil {
			return
		}
		require.NoError(t, err)
		if want.GetVersionInfo() != got.VersionInfo || want.GetTypeUrl() != got.TypeURL || want.GetNonce() != got.Nonce ||
			len(want.GetResources()) != len(got.Resources) {
			t.Fatalf("want %v, got %+v", want, got)
		}
		for i, a := range want.GetResources() {
			// Only type_url and value: the hand-written decoder keeps no unknown fields.
			if a.GetTypeUrl() != got.Resources[i].GetTypeUrl() || !bytes.Equal(a.GetValue(), got.Resources[i].GetValue()) {
				t.Fatalf("resource %d: want %v, got %v", i, a, got.Resources[i])
			}
		}
	})
}
