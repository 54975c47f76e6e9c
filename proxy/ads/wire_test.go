package ads

import (
	"bytes"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/attestmesh/attestmesh/proxy/proxytest"
	"github.com/attestmesh/attestmesh/proxy/resource"
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
		if n := len(want.GetResources()); n > MaxResources {
			// The one refusal of a response the generated type decodes: the sidecar's bound.
			require.ErrorContains(t, err, fmt.Sprintf("%d resources, at most %d", n, MaxResources))
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

// response encodes a DiscoveryResponse of n resources of value size bytes each.
func response(n, size int) []byte {
	b := protowire.AppendString(protowire.AppendTag(nil, 4, protowire.BytesType), "t")
	var a []byte
	if size > 0 {
		a = protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), make([]byte, size))
	}
	for range n {
		b = protowire.AppendBytes(protowire.AppendTag(b, 2, protowire.BytesType), a)
	}
	return b
}

// TestDecodeResponseBounds: the codec decodes a response the gRPC limit admits with at most
// about its size allocated again: too many resources are refused before any is allocated (4 MiB
// of empty resources, 2 million, took 244 MiB), and up to MaxResources take their Any each and
// the one copy of the response that their values slice.
func TestDecodeResponseBounds(t *testing.T) {
	const limit = MaxResponseSize
	tests := []struct {
		name     string
		b        []byte
		want     int // resources; -1: refused
		maxAlloc uint64
	}{
		{"4 MiB of empty resources", response((limit-8)/2, 0), -1, limit + 1<<20},
		{"one more than MaxResources", response(MaxResources+1, 0), -1, 1 << 20},
		{"MaxResources", response(MaxResources, 0), MaxResources, 2 << 20},
		{"MaxResources filling 4 MiB", response(MaxResources, limit/MaxResources-8), MaxResources, limit + 2<<20},
		{"1 resource of 4 MiB", response(1, limit-16), 1, limit + 1<<20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.LessOrEqual(t, len(tt.b), limit)
			got := &DiscoveryResponse{}
			var err error
			n := proxytest.Allocated(func() { err = codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(tt.b)}, got) })
			t.Logf("%d bytes: allocated %.1f MiB", len(tt.b), float64(n)/(1<<20))
			if tt.want < 0 {
				require.ErrorContains(t, err, fmt.Sprintf("ads: decode DiscoveryResponse: %d resources, at most 16384 in one response", (len(tt.b)-3)/2))
			} else {
				require.NoError(t, err)
				require.Len(t, got.Resources, tt.want)
			}
			require.LessOrEqual(t, n, tt.maxAlloc)
		})
	}
}

// TestDecodeRealisticResponse: a response of 1,000 clusters of 100 endpoints each (2.6 MB)
// decodes and parses, the codec and proxy/resource together allocating well under 32 MiB.
func TestDecodeRealisticResponse(t *testing.T) {
	server := spiffeid.RequireFromString("spiffe://attestmesh.local/app/server")
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: "1", TypeUrl: resource.ClusterType, Nonce: "1"}
	for i := range 1000 {
		eps := make([]string, 100)
		for j := range eps {
			eps[j] = fmt.Sprintf("10.%d.%d.%d:8443", i/256, i%256, j)
		}
		a, err := anypb.New(proxytest.OutboundCluster(fmt.Sprintf("svc-%d", i), 8000, server, eps...))
		require.NoError(t, err)
		resp.Resources = append(resp.Resources, a)
	}
	b, err := proto.Marshal(resp)
	require.NoError(t, err)
	require.Less(t, len(b), MaxResponseSize)
	var cs []*resource.Cluster
	n := proxytest.Allocated(func() {
		got := &DiscoveryResponse{}
		if err = (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err == nil {
			cs, err = resource.ParseClusters(got.Resources)
		}
	})
	t.Logf("%d bytes: allocated %.1f MiB", len(b), float64(n)/(1<<20))
	require.NoError(t, err)
	require.Len(t, cs, 1000)
	require.Len(t, cs[999].Endpoints, 100)
	require.Less(t, n, uint64(32<<20))
}
