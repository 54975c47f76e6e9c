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

// MaxResponseSize is the largest DiscoveryResponse the client receives: gRPC's default
// receive limit, set explicitly because the bounds below depend on it. A control plane's
// realistic responses are far smaller: 1,000 clusters of 100 endpoints each are 2.6 MB.
const MaxResponseSize = 4 << 20

// MaxResources is the most resources a DiscoveryResponse may carry. An empty resource is two
// bytes on the wire and about a hundred in memory: a 4 MiB response of them took 244 MiB to
// decode, more than the sidecar's memory limit. A sidecar's resources are its listeners and
// clusters (tens, or a thousand upstreams) and two secrets; 16,384 is far above them and
// bounds what decoding the resources allocates (besides their values, which are the
// response's bytes) to about 1.5 MiB.
const MaxResources = 16384

// Unmarshal decodes b (merging into r, as protobuf does); the resources keep
// no reference to b.
func (r *DiscoveryResponse) Unmarshal(b []byte) error {
	return r.unmarshal(b, true)
}

// unmarshal decodes b; with clone false, the resources' values are slices of b.
func (r *DiscoveryResponse) unmarshal(b []byte, clone bool) error {
	// Count before allocating: a response of too many resources is refused before any is
	// allocated, and the others are allocated at once. (Walk fails here as below on a
	// malformed response.)
	n := 0
	if err := pbwire.Walk(b, func(f pbwire.Field) error {
		if f.Num == 2 && f.IsBytes() {
			n++
		}
		return nil
	}); err != nil {
		return fmt.Errorf("ads: decode DiscoveryResponse: %w", err)
	}
	if n += len(r.Resources); n > MaxResources {
		return fmt.Errorf("ads: decode DiscoveryResponse: %d resources, at most %d in one response", n, MaxResources)
	}
	r.Resources = slices.Grow(r.Resources, n-len(r.Resources))
	anys := make([]anypb.Any, n-len(r.Resources))
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
			a := &anys[0]
			anys = anys[1:]
			if err := pbwire.Walk(f.B, func(f pbwire.Field) error {
				switch f.Num {
				case 1:
					return str(f, &a.TypeUrl)
				case 2:
					if !f.IsBytes() {
						break
					}
					if a.Value = f.B; clone {
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
	// One copy of the response, which the resources' values slice: a pooled buffer and a
	// copy of each value would allocate twice the response. The resources are parsed and
	// dropped (proxy.handler keeps the parsed configuration, which holds copies), so the
	// buffer lives no longer than they do.
	*r = DiscoveryResponse{}
	return r.unmarshal(data.Materialize(), false)
}
