package resource_test

// The hand-written parser (wire.go, resource.go) against the one it replaced (legacy_test.go,
// go-control-plane's generated types and their protoc-gen-validate rules).
//
// The contract, which differential checks on every fuzz input and every test below:
//
//  1. new(res) == legacy(prune(res)): prune keeps, recursively, only the fields the sidecar reads
//     (readSet below, by field name, resolved with the generated descriptors) and drops the rest
//     as unknown fields. Both accept with equal results, or both refuse.
//  2. legacy(res) accepts => new(res) accepts with an equal result.
//
// Except a response the new parser refuses for its memory bound (resource.ErrDecodeBudget),
// which the legacy parser never had: such a response is left out of the comparison.
//
// What 1 and 2 allow, and only that: the legacy parser decoded every field of the schema and
// checked every protoc-gen-validate rule, so it refused a resource whose fields the sidecar
// does not read were malformed (a bad nested message, a non-UTF-8 string, a rule such as
// Cluster.dns_refresh_rate > 1ms). The new parser skips those fields as unknown fields, like a
// protobuf decoder of an older schema; everything it reads is decoded and checked as before,
// protoc-gen-validate's rules included.
//
// Merging: prune keeps repeated occurrences of a field in their order, so the legacy parser's
// protobuf runtime merges a message field that appears twice, lets the last scalar and the last
// oneof member win, and skips a field of the wrong wire type: the new parser must agree.

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/proxy/resource"
)

// readSet lists, by message, the fields the sidecar reads: to act on them, to check a
// protoc-gen-validate rule, or to refuse them when present. A field whose message type is
// listed is pruned recursively; other fields are kept as they are.
var readSet = map[string][]string{
	"envoy.config.listener.v3.Listener":                                                               {"name", "address", "filter_chains", "listener_filters", "default_filter_chain", "additional_addresses"},
	"envoy.config.core.v3.Address":                                                                    {"socket_address", "pipe", "envoy_internal_address"},
	"envoy.config.core.v3.SocketAddress":                                                              {"protocol", "address", "port_value", "named_port", "resolver_name", "ipv4_compat"},
	"envoy.config.listener.v3.FilterChain":                                                            {"filter_chain_match", "filters", "transport_socket"},
	"envoy.config.listener.v3.Filter":                                                                 {"name", "typed_config", "config_discovery"},
	"envoy.config.core.v3.TransportSocket":                                                            {"name", "typed_config"},
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":                                          {"stat_prefix", "cluster", "weighted_clusters", "idle_timeout"},
	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext":                                  {"common_tls_context", "require_client_certificate"},
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext":                                    {"common_tls_context", "sni"},
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext":                                      {"tls_params", "tls_certificates", "tls_certificate_sds_secret_configs", "validation_context", "validation_context_sds_secret_config", "combined_validation_context", "validation_context_certificate_provider", "validation_context_certificate_provider_instance"},
	"envoy.extensions.transport_sockets.tls.v3.TlsParameters":                                         {"tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites", "ecdh_curves", "signature_algorithms"},
	"envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig":                                       {"name", "sds_config"},
	"envoy.config.core.v3.ConfigSource":                                                               {"path", "path_config_source", "api_config_source", "ads", "self", "resource_api_version"},
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext": {"default_validation_context", "validation_context_sds_secret_config"},
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext":                          {"trusted_ca", "verify_certificate_spki", "verify_certificate_hash", "match_typed_subject_alt_names", "trust_chain_verification", "custom_validator_config"},
	"envoy.config.core.v3.TypedExtensionConfig":                                                       {"name", "typed_config"},
	"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher":                                 {"san_type", "matcher"},
	"envoy.type.matcher.v3.StringMatcher":                                                             {"exact", "prefix", "suffix", "safe_regex", "contains", "custom", "ignore_case"},
	"envoy.config.cluster.v3.Cluster":                                                                 {"name", "type", "cluster_type", "connect_timeout", "lb_policy", "load_assignment", "transport_socket"},
	"envoy.config.endpoint.v3.ClusterLoadAssignment":                                                  {"cluster_name", "endpoints"},
	"envoy.config.endpoint.v3.LocalityLbEndpoints":                                                    {"lb_endpoints", "priority"},
	"envoy.config.endpoint.v3.LbEndpoint":                                                             {"endpoint", "endpoint_name"},
	"envoy.config.endpoint.v3.Endpoint":                                                               {"address"},
	"envoy.extensions.transport_sockets.tls.v3.Secret":                                                {"name", "tls_certificate", "session_ticket_keys", "validation_context", "generic_secret"},
	"envoy.extensions.transport_sockets.tls.v3.TlsCertificate":                                        {"certificate_chain", "private_key", "private_key_provider"},
	"envoy.extensions.transport_sockets.tls.v3.PrivateKeyProvider":                                    {"provider_name"},
	"envoy.config.core.v3.DataSource":                                                                 {"filename", "inline_bytes", "inline_string", "environment_variable"},
	"google.protobuf.Duration":                                                                        {"seconds", "nanos"},
	"google.protobuf.BoolValue":                                                                       {"value"},
}

// readFields resolves readSet with the generated descriptors: by message, the field numbers
// read and their descriptors.
func readFields(tb testing.TB) map[protoreflect.FullName]map[protowire.Number]protoreflect.FieldDescriptor {
	tb.Helper()
	// The generated packages register themselves; make sure those of the read set are linked.
	_ = &listenerv3.Listener{}
	_ = &clusterv3.Cluster{}
	_ = &tlsv3.Secret{}
	out := map[protoreflect.FullName]map[protowire.Number]protoreflect.FieldDescriptor{}
	for name, fields := range readSet {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		require.NoError(tb, err, name)
		md := d.(protoreflect.MessageDescriptor)
		m := map[protowire.Number]protoreflect.FieldDescriptor{}
		for _, f := range fields {
			fd := md.Fields().ByName(protoreflect.Name(f))
			require.NotNil(tb, fd, "%s.%s", name, f)
			m[fd.Number()] = fd
		}
		out[md.FullName()] = m
	}
	return out
}

// pruner drops the fields outside the read set.
type pruner map[protoreflect.FullName]map[protowire.Number]protoreflect.FieldDescriptor

// prune returns b, an encoded message of type name, with only the fields of the read set. What
// it cannot parse it keeps as it is, for the legacy parser to refuse.
func (p pruner) prune(name protoreflect.FullName, b []byte) []byte {
	fields, ok := p[name]
	if !ok {
		return b
	}
	var out []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return append(out, b...)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return append(out, b...)
		}
		field, rest := b[:n+m], b[n+m:]
		b = rest
		fd, read := fields[num]
		if !read {
			continue
		}
		if typ != protowire.BytesType || fd.Message() == nil {
			out = append(out, field...)
			continue
		}
		v, _ := protowire.ConsumeBytes(field[n:])
		var pruned []byte
		if fd.Message().FullName() == "google.protobuf.Any" {
			pruned = p.pruneAny(v)
		} else {
			pruned = p.prune(fd.Message().FullName(), v)
		}
		out = protowire.AppendTag(out, num, typ)
		out = protowire.AppendBytes(out, pruned)
	}
	return out
}

// pruneAny prunes the value of an Any whose (last) type URL names a message of the read set.
func (p pruner) pruneAny(b []byte) []byte {
	var url string
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return b
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return b
		}
		if num == 1 && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(rest[n:])
			url = string(v)
		}
		rest = rest[n+m:]
	}
	var name protoreflect.FullName
	for n := range p {
		if (&anypb.Any{TypeUrl: url}).MessageIs(messageOf(n)) {
			name = n
		}
	}
	if name == "" {
		return b
	}
	var out []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		field := b[:n+m]
		b = b[n+m:]
		if num == 2 && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(field[n:])
			out = protowire.AppendTag(out, num, typ)
			out = protowire.AppendBytes(out, p.prune(name, v))
			continue
		}
		out = append(out, field...)
	}
	return out
}

// messageOf returns an empty message of the generated type name.
func messageOf(name protoreflect.FullName) protoreflect.ProtoMessage {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(name)
	if err != nil {
		panic(err)
	}
	return mt.New().Interface()
}

// pruneAll prunes the resources of a response.
func (p pruner) pruneAll(res []*anypb.Any) []*anypb.Any {
	out := make([]*anypb.Any, 0, len(res))
	for _, a := range res {
		name := protoreflect.FullName(strings.TrimPrefix(a.GetTypeUrl(), "type.googleapis.com/"))
		out = append(out, &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: p.prune(name, a.GetValue())})
	}
	return out
}

// kinds are the three parsers, new and legacy, with their results summarized for comparison.
var kinds = map[string]struct {
	parse, legacy func([]*anypb.Any) (string, error)
}{
	"listeners": {
		parse:  func(r []*anypb.Any) (string, error) { ls, err := resource.ParseListeners(r); return summarize(ls), err },
		legacy: func(r []*anypb.Any) (string, error) { ls, err := legacyParseListeners(r); return summarize(ls), err },
	},
	"clusters": {
		parse:  func(r []*anypb.Any) (string, error) { cs, err := resource.ParseClusters(r); return summarize(cs), err },
		legacy: func(r []*anypb.Any) (string, error) { cs, err := legacyParseClusters(r); return summarize(cs), err },
	},
	"secrets": {
		parse:  func(r []*anypb.Any) (string, error) { ss, err := resource.ParseSecrets(r); return summarize(ss), err },
		legacy: func(r []*anypb.Any) (string, error) { ss, err := legacyParseSecrets(r); return summarize(ss), err },
	},
}

// differential checks the contract above for one response's resources of kind.
func differential(t *testing.T, p pruner, kind string, res []*anypb.Any) {
	t.Helper()
	k := kinds[kind]
	got, err := k.parse(res)
	if errors.Is(err, resource.ErrDecodeBudget) {
		// A response that would allocate more than DecodeBudget is refused by the new parser
		// alone, by design: the legacy parser (generated types) has no such bound; it is the
		// reference of what is decoded, not of how much memory a response may take. Such inputs
		// (MiBs of elements) are out of the comparison; TestDecodeBudget covers them.
		return
	}
	want, wantErr := k.legacy(p.pruneAll(res))
	switch {
	case (err == nil) != (wantErr == nil):
		t.Fatalf("%s: new parser: %v; legacy parser on the read fields: %v", kind, err, wantErr)
	case err == nil && got != want:
		t.Fatalf("%s: new parser accepted\n%s\nlegacy parser on the read fields accepted\n%s", kind, got, want)
	case err != nil && !strings.Contains(err.Error(), " "):
		t.Fatalf("%s: refusal without a reason: %q", kind, err)
	}
	full, fullErr := k.legacy(res)
	if fullErr == nil && (err != nil || full != got) {
		t.Fatalf("%s: legacy parser accepted\n%s\nnew parser: %v\n%s", kind, full, err, got)
	}
}

// summarize prints parse results, authorizers included (by what they admit), for comparison.
func summarize[T any](xs []T) string {
	var b strings.Builder
	for _, x := range xs {
		switch v := any(x).(type) {
		case *resource.Listener:
			fmt.Fprintf(&b, "listener %q %s %s cluster=%q stat=%q idle=%v peers=%s\n", v.Name, v.Address, v.Direction, v.Cluster, v.StatPrefix, v.IdleTimeout, peers(v.Peers))
		case *resource.Cluster:
			fmt.Fprintf(&b, "cluster %q %q timeout=%v", v.Name, v.Endpoints, v.ConnectTimeout)
			if v.TLS != nil {
				fmt.Fprintf(&b, " sni=%q peers=%s", v.TLS.SNI, peers(&v.TLS.Peers))
			}
			b.WriteString("\n")
		case *resource.Secret:
			fmt.Fprintf(&b, "secret %q", v.Name)
			for _, c := range v.Chain {
				fmt.Fprintf(&b, " chain:%x", c.Raw)
			}
			for _, c := range v.CAs {
				fmt.Fprintf(&b, " ca:%x", c.Raw)
			}
			fmt.Fprintf(&b, " chain=%v cas=%v\n", v.Chain != nil, v.CAs != nil)
		}
	}
	return b.String()
}

func peers(p *resource.PeerPolicy) string {
	if p == nil {
		return "none"
	}
	s := fmt.Sprintf("%q cert=%q bundle=%q admits", p.Matchers, p.CertSecret, p.BundleSecret)
	ids := []string{"spiffe://elsewhere.example/x", "spiffe://attestmesh.local/app/client", "spiffe://attestmesh.local/app/server"}
	for _, m := range p.Matchers {
		_, id, _ := strings.Cut(m, ":")
		ids = append(ids, id, id+"/sub", id+"x", strings.TrimSuffix(id[:strings.LastIndex(id, "/")+1], "/"))
	}
	for _, id := range ids {
		sid, err := spiffeid.FromString(id)
		if err != nil {
			continue
		}
		if p.Authorize(sid, nil) == nil {
			s += " " + id
		}
	}
	return s
}
