package ads

// The ADS stream's two messages, encoded and decoded by hand (see
// proxy/internal/pbwire) so that the sidecar links no generated Envoy types.
// Field numbers are those of envoy.service.discovery.v3 (go-control-plane
// v1.40.0); wire_test.go checks both against the generated types.

import (
	"fmt"
	"slices"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/proxy/internal/pbwire"
)

// Node is the envoy.config.core.v3.Node the sidecar sends: id 1, cluster 2,
// metadata 3 (a google.protobuf.Struct of string values), user_agent_name 6.
type Node struct {
	ID            string
	Cluster       string
	UserAgentName string
	// Metadata holds string values only.
	Metadata map[string]string
}

func (n *Node) appendTo(b []byte) []byte {
	b = pbwire.AppendString(b, 1, n.ID)
	b = pbwire.AppendString(b, 2, n.Cluster)
	if n.Metadata != nil {
		// google.protobuf.Struct: fields 1, a map<string, Value>; Value.string_value 3.
		var st []byte
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range n.Metadata {
				if !yield(k) {
					return
				}
			}
		}) {
			var v []byte
			v = protowire.AppendTag(v, 3, protowire.BytesType)
			v = protowire.AppendString(v, n.Metadata[k])
			var e []byte
			e = protowire.AppendTag(e, 1, protowire.BytesType)
			e = protowire.AppendString(e, k)
			e = pbwire.AppendMessage(e, 2, v)
			st = pbwire.AppendMessage(st, 1, e)
		}
		b = pbwire.AppendMessage(b, 3, st)
	}
	return pbwire.AppendString(b, 6, n.UserAgentName)
}

// ErrorDetail is the google.rpc.Status of a NACK: code 1, message 2.
type ErrorDetail struct {
	Code    int32
	Message string
}

// DiscoveryRequest is envoy.service.discovery.v3.DiscoveryRequest: version_info 1,
// node 2, resource_names 3, type_url 4, response_nonce 5, error_detail 6.
type DiscoveryRequest struct {
	VersionInfo   string
	Node          *Node
	ResourceNames []string
	TypeURL       string
	ResponseNonce string
	ErrorDetail   *ErrorDetail
}

// Marshal encodes the request.
func (r *DiscoveryRequest) Marshal() []byte {
	var b []byte
	b = pbwire.AppendString(b, 1, r.VersionInfo)
	if r.Node != nil {
		b = pbwire.AppendMessage(b, 2, r.Node.appendTo(nil))
	}
	b = pbwire.AppendRepeatedString(b, 3, r.ResourceNames)
	b = pbwire.AppendString(b, 4, r.TypeURL)
	b = pbwire.AppendString(b, 5, r.ResponseNonce)
	if r.ErrorDetail != nil {
		var s []byte
		s = pbwire.AppendVarint(s, 1, uint64(r.ErrorDetail.Code)) //nolint:gosec // G115: int32 fields are sign-extended varints
		s = pbwire.AppendString(s, 2, r.ErrorDetail.Message)
		b = pbwire.AppendMessage(b, 6, s)
	}
	return b
}

// DiscoveryResponse is the part of envoy.service.discovery.v3.DiscoveryResponse
// the sidecar reads: version_info 1, resources 2 (google.protobuf.Any: type_url 1,
// value 2), type_url 4, nonce 5. Other fields are skipped.
type DiscoveryResponse struct {
	VersionInfo string
	Resources   []*anypb.Any
	TypeURL     string
	Nonce       string
}

// Unmarshal decodes b (merging into r, as protobuf does); the resources keep
// no reference to b.
func (r *DiscoveryResponse) Unmarshal(b []byte) error {
	str := func(f pbwire.Field, dst *string) error {
		s, ok, err := f.String()
		if ok && err == nil {
			*dst = s
		}
		return err
	}
	err := pbwire.Walk(b, func(f pbwire.Field) error {
		switch f.Num {
		case 1:
			return str(f, &r.VersionInfo)
		case 2:
			if !f.IsBytes() {
				return nil
			}
			a := &anypb.Any{}
			if err := pbwire.Walk(f.B, func(f pbwire.Field) error {
				switch f.Num {
				case 1:
					return str(f, &a.TypeUrl)
				case 2:
					if f.IsBytes() {
						a.Value = slices.Clone(f.B)
					}
				}
				return nil
			}); err != nil {
				return fmt.Errorf("resources: %w", err)
			}
			r.Resources = append(r.Resources, a)
		case 4:
			return str(f, &r.TypeURL)
		case 5:
			return str(f, &r.Nonce)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ads: decode DiscoveryResponse: %w", err)
	}
	return nil
}

// codec is the ADS stream's gRPC codec: it carries the two messages above
// under the name "proto" (content type application/grpc+proto), as any
// control plane expects.
type codec struct{}

var _ encoding.CodecV2 = codec{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*DiscoveryRequest)
	if !ok {
		return nil, fmt.Errorf("ads: codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(r.Marshal())}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*DiscoveryResponse)
	if !ok {
		return fmt.Errorf("ads: codec: cannot unmarshal into %T", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	*r = DiscoveryResponse{}
	return r.Unmarshal(buf.ReadOnlyData())
}
