package resource_test

// The sidecar's xDS parser as it was written with go-control-plane's generated types (commit
// ae5ae46), kept as the reference of the hand-written one: wire_test.go runs both on the same
// bytes. Only the types of the results moved (resource.Listener and so on, without Proto).

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/proxy/resource"
)

// ParseListeners validates and converts a LDS response's resources.
func legacyParseListeners(res []*anypb.Any) ([]*resource.Listener, error) {
	out := make([]*resource.Listener, 0, len(res))
	seen := map[string]bool{}
	addrs := map[string]string{}
	for _, a := range res {
		l := &listenerv3.Listener{}
		if err := legacyUnpack(a, resource.ListenerType, l); err != nil {
			return nil, err
		}
		p, err := legacyParseListener(l)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("listener %q: duplicate name", p.Name)
		}
		seen[p.Name] = true
		if other, dup := addrs[p.Address]; dup {
			return nil, fmt.Errorf("listener %q: address %s already used by listener %q", p.Name, p.Address, other)
		}
		addrs[p.Address] = p.Name
		out = append(out, p)
	}
	return out, nil
}

// ParseClusters validates and converts a CDS response's resources.
func legacyParseClusters(res []*anypb.Any) ([]*resource.Cluster, error) {
	out := make([]*resource.Cluster, 0, len(res))
	seen := map[string]bool{}
	for _, a := range res {
		c := &clusterv3.Cluster{}
		if err := legacyUnpack(a, resource.ClusterType, c); err != nil {
			return nil, err
		}
		p, err := legacyParseCluster(c)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("cluster %q: duplicate name", p.Name)
		}
		seen[p.Name] = true
		out = append(out, p)
	}
	return out, nil
}

// ParseSecrets validates and converts a SDS response's resources.
func legacyParseSecrets(res []*anypb.Any) ([]*resource.Secret, error) {
	out := make([]*resource.Secret, 0, len(res))
	for _, a := range res {
		s := &tlsv3.Secret{}
		if err := legacyUnpack(a, resource.SecretType, s); err != nil {
			return nil, err
		}
		p, err := legacyParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secret %q: %w", s.GetName(), err)
		}
		if slices.ContainsFunc(out, func(o *resource.Secret) bool { return o.Name == p.Name }) {
			return nil, fmt.Errorf("secret %q: duplicate name", p.Name)
		}
		out = append(out, p)
	}
	return out, nil
}

func legacyUnpack(a *anypb.Any, typeURL string, m proto.Message) error {
	if a.GetTypeUrl() != typeURL {
		return fmt.Errorf("resource: got type %q, want %q", a.GetTypeUrl(), typeURL)
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("resource: decode %s: %w", typeURL, err)
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("resource: invalid %s: %w", typeURL, err)
		}
	}
	return nil
}

func legacyParseListener(l *listenerv3.Listener) (*resource.Listener, error) {
	if l.GetName() == "" {
		return nil, errors.New("name is empty")
	}
	addr, err := legacySocketAddress(l.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	switch {
	case len(l.GetListenerFilters()) > 0:
		return nil, errors.New("listener_filters are not supported")
	case l.GetDefaultFilterChain() != nil:
		return nil, errors.New("default_filter_chain is not supported")
	case len(l.GetAdditionalAddresses()) > 0:
		return nil, errors.New("additional_addresses are not supported")
	case len(l.GetFilterChains()) != 1:
		return nil, fmt.Errorf("want exactly 1 filter chain, got %d", len(l.GetFilterChains()))
	}
	fc := l.GetFilterChains()[0]
	if fc.GetFilterChainMatch() != nil {
		return nil, errors.New("filter_chain_match is not supported")
	}
	if len(fc.GetFilters()) != 1 {
		return nil, fmt.Errorf("want exactly 1 network filter (%s), got %d", wellknown.TCPProxy, len(fc.GetFilters()))
	}
	f := fc.GetFilters()[0]
	if f.GetName() != wellknown.TCPProxy {
		return nil, fmt.Errorf("unsupported filter %q: only %s is supported", f.GetName(), wellknown.TCPProxy)
	}
	tp := &tcpproxyv3.TcpProxy{}
	if err := legacyUnpackTyped(f.GetTypedConfig(), tp); err != nil {
		return nil, fmt.Errorf("filter %s: %w", f.GetName(), err)
	}
	if tp.GetCluster() == "" {
		return nil, fmt.Errorf("filter %s: only the cluster specifier is supported", f.GetName())
	}
	out := &resource.Listener{
		Name:        l.GetName(),
		Address:     addr,
		Cluster:     tp.GetCluster(),
		StatPrefix:  tp.GetStatPrefix(),
		IdleTimeout: resource.DefaultIdleTimeout,
	}
	if d := tp.GetIdleTimeout(); d != nil {
		// The rule resource.go added (review): a negative or invalid idle_timeout is refused.
		if err := d.CheckValid(); err != nil {
			return nil, fmt.Errorf("filter %s: idle_timeout: not a valid duration: %w", f.GetName(), err)
		}
		if out.IdleTimeout = d.AsDuration(); out.IdleTimeout < 0 {
			return nil, fmt.Errorf("filter %s: idle_timeout: must not be negative, got %v", f.GetName(), out.IdleTimeout)
		}
	}
	ts := fc.GetTransportSocket()
	if ts == nil {
		ip, err := netip.ParseAddrPort(addr)
		if err != nil || !ip.Addr().IsLoopback() {
			return nil, fmt.Errorf("a plaintext (outbound) listener must bind a loopback address, got %s", addr)
		}
		out.Direction = resource.Outbound
		return out, nil
	}
	if ts.GetName() != wellknown.TransportSocketTLS {
		return nil, fmt.Errorf("unsupported transport socket %q", ts.GetName())
	}
	dtc := &tlsv3.DownstreamTlsContext{}
	if err := legacyUnpackTyped(ts.GetTypedConfig(), dtc); err != nil {
		return nil, fmt.Errorf("transport socket: %w", err)
	}
	if !dtc.GetRequireClientCertificate().GetValue() {
		return nil, errors.New("transport socket: require_client_certificate must be true")
	}
	peers, err := legacyParseCommon(dtc.GetCommonTlsContext())
	if err != nil {
		return nil, fmt.Errorf("transport socket: %w", err)
	}
	out.Direction = resource.Inbound
	out.Peers = peers
	return out, nil
}

func legacyParseCluster(c *clusterv3.Cluster) (*resource.Cluster, error) {
	if c.GetName() == "" {
		return nil, errors.New("name is empty")
	}
	if c.GetType() != clusterv3.Cluster_STATIC || c.GetClusterType() != nil {
		return nil, fmt.Errorf("only STATIC clusters are supported, got %s", c.GetType())
	}
	if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		return nil, fmt.Errorf("only ROUND_ROBIN load balancing is supported, got %s", c.GetLbPolicy())
	}
	out := &resource.Cluster{Name: c.GetName(), ConnectTimeout: resource.DefaultConnectTimeout}
	if d := c.GetConnectTimeout(); d != nil {
		out.ConnectTimeout = d.AsDuration()
	}
	for _, lle := range c.GetLoadAssignment().GetEndpoints() {
		for _, e := range lle.GetLbEndpoints() {
			addr, err := legacySocketAddress(e.GetEndpoint().GetAddress())
			if err != nil {
				return nil, fmt.Errorf("endpoint: %w", err)
			}
			out.Endpoints = append(out.Endpoints, addr)
		}
	}
	ts := c.GetTransportSocket()
	if ts == nil {
		if len(out.Endpoints) == 0 {
			return nil, errors.New("no endpoints: a plaintext cluster leads to the app on loopback")
		}
		for _, e := range out.Endpoints {
			ip, err := netip.ParseAddrPort(e)
			if err != nil || !ip.Addr().IsLoopback() {
				return nil, fmt.Errorf("a plaintext cluster may only reach loopback endpoints, got %s", e)
			}
		}
		return out, nil
	}
	if ts.GetName() != wellknown.TransportSocketTLS {
		return nil, fmt.Errorf("unsupported transport socket %q", ts.GetName())
	}
	utc := &tlsv3.UpstreamTlsContext{}
	if err := legacyUnpackTyped(ts.GetTypedConfig(), utc); err != nil {
		return nil, fmt.Errorf("transport socket: %w", err)
	}
	peers, err := legacyParseCommon(utc.GetCommonTlsContext())
	if err != nil {
		return nil, fmt.Errorf("transport socket: %w", err)
	}
	out.TLS = &resource.UpstreamTLS{SNI: utc.GetSni(), Peers: *peers}
	return out, nil
}

func legacyParseCommon(c *tlsv3.CommonTlsContext) (*resource.PeerPolicy, error) {
	if c == nil {
		return nil, errors.New("common_tls_context is missing")
	}
	if p := c.GetTlsParams(); p != nil {
		if mx := p.GetTlsMaximumProtocolVersion(); mx != tlsv3.TlsParameters_TLS_AUTO && mx < tlsv3.TlsParameters_TLSv1_3 {
			return nil, fmt.Errorf("tls_maximum_protocol_version %s: the sidecar speaks TLSv1_3 only", mx)
		}
		if len(p.GetCipherSuites()) > 0 || len(p.GetEcdhCurves()) > 0 || len(p.GetSignatureAlgorithms()) > 0 {
			return nil, errors.New("tls_params: cipher_suites, ecdh_curves and signature_algorithms are not supported")
		}
	}
	if len(c.GetTlsCertificates()) > 0 {
		return nil, errors.New("inline tls_certificates are not supported: the private key never leaves the workload")
	}
	if len(c.GetTlsCertificateSdsSecretConfigs()) != 1 {
		return nil, fmt.Errorf("want exactly 1 tls_certificate_sds_secret_configs, got %d", len(c.GetTlsCertificateSdsSecretConfigs()))
	}
	pp := &resource.PeerPolicy{}
	var err error
	if pp.CertSecret, err = legacySdsName(c.GetTlsCertificateSdsSecretConfigs()[0], resource.SecretSVID); err != nil {
		return nil, fmt.Errorf("tls_certificate_sds_secret_configs: %w", err)
	}
	cvc := c.GetCombinedValidationContext()
	if cvc == nil {
		return nil, errors.New("combined_validation_context is required")
	}
	if pp.BundleSecret, err = legacySdsName(cvc.GetValidationContextSdsSecretConfig(), resource.SecretTrustBundle); err != nil {
		return nil, fmt.Errorf("validation_context_sds_secret_config: %w", err)
	}
	dvc := cvc.GetDefaultValidationContext()
	if dvc.GetTrustedCa() != nil || len(dvc.GetVerifyCertificateHash()) > 0 || len(dvc.GetVerifyCertificateSpki()) > 0 ||
		dvc.GetTrustChainVerification() != tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN || dvc.GetCustomValidatorConfig() != nil {
		return nil, errors.New("default_validation_context: only match_typed_subject_alt_names is supported")
	}
	sans := dvc.GetMatchTypedSubjectAltNames()
	if len(sans) == 0 {
		return nil, errors.New("default_validation_context: match_typed_subject_alt_names is empty: refusing to accept any peer of the trust domain")
	}
	var exact []spiffeid.ID
	var auths []tlsconfig.Authorizer
	for _, m := range sans {
		desc, id, isPrefix, err := legacyParseSAN(m)
		if err != nil {
			return nil, fmt.Errorf("match_typed_subject_alt_names: %w", err)
		}
		pp.Matchers = append(pp.Matchers, desc)
		switch {
		case isPrefix && strings.HasSuffix(desc, "/"):
			// The rule resource.go added (review): prefix "spiffe://td/a/" admits the IDs below
			// spiffe://td/a, not spiffe://td/a.
			below := tlsconfig.AuthorizeIDPrefix(id)
			auths = append(auths, func(got spiffeid.ID, chains [][]*x509.Certificate) error {
				if got == id {
					return fmt.Errorf("unexpected ID %q: only IDs below it are allowed", got)
				}
				return below(got, chains)
			})
		case isPrefix:
			auths = append(auths, tlsconfig.AuthorizeIDPrefix(id))
		default:
			exact = append(exact, id)
		}
	}
	if len(exact) > 0 {
		auths = append(auths, tlsconfig.AuthorizeOneOf(exact...))
	}
	pp.Authorize = legacyAnyOf(auths, pp.Matchers)
	return pp, nil
}

// anyOf authorizes an ID that any of auths authorizes.
func legacyAnyOf(auths []tlsconfig.Authorizer, desc []string) tlsconfig.Authorizer {
	if len(auths) == 1 {
		return auths[0]
	}
	want := strings.Join(desc, ", ")
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		for _, a := range auths {
			if a(id, chains) == nil {
				return nil
			}
		}
		return fmt.Errorf("unexpected ID %q: allowed %s", id, want)
	}
}

func legacyParseSAN(m *tlsv3.SubjectAltNameMatcher) (desc string, id spiffeid.ID, prefix bool, err error) {
	if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
		return "", spiffeid.ID{}, false, fmt.Errorf("san_type %s: only URI is supported", m.GetSanType())
	}
	sm := m.GetMatcher()
	if sm.GetIgnoreCase() {
		return "", spiffeid.ID{}, false, errors.New("ignore_case is not supported for SPIFFE IDs")
	}
	var s string
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s = p.Exact
	case *matcherv3.StringMatcher_Prefix:
		s, prefix = p.Prefix, true
	default:
		return "", spiffeid.ID{}, false, fmt.Errorf("matcher %T: only exact and prefix are supported", sm.GetMatchPattern())
	}
	// The rule resource.go added (review): an exact value ending in '/' is no SPIFFE ID; a
	// prefix's trailing '/' is kept in its description.
	trimmed := s
	if prefix {
		trimmed = strings.TrimSuffix(s, "/")
	}
	id, err = spiffeid.FromString(trimmed)
	if err != nil {
		return "", spiffeid.ID{}, false, fmt.Errorf("%q is not a SPIFFE ID: %w", s, err)
	}
	if prefix && trimmed != s {
		return "prefix:" + id.String() + "/", id, true, nil
	}
	if prefix {
		return "prefix:" + id.String(), id, true, nil
	}
	return "exact:" + id.String(), id, false, nil
}

func legacySdsName(c *tlsv3.SdsSecretConfig, want string) (string, error) {
	if c == nil {
		return "", errors.New("missing")
	}
	if c.GetName() != want {
		return "", fmt.Errorf("unknown secret %q (want %q)", c.GetName(), want)
	}
	if c.GetSdsConfig().GetAds() == nil {
		return "", fmt.Errorf("secret %q: sds_config must be ads", c.GetName())
	}
	return c.GetName(), nil
}

func legacyParseSecret(s *tlsv3.Secret) (*resource.Secret, error) {
	switch s.GetName() {
	case resource.SecretSVID:
		tc := s.GetTlsCertificate()
		if tc == nil {
			return nil, errors.New("want a tls_certificate")
		}
		if tc.GetPrivateKey() != nil {
			return nil, errors.New("private_key must not be sent: the key never leaves the workload")
		}
		if tc.GetPrivateKeyProvider().GetProviderName() != resource.KeyProvider {
			return nil, fmt.Errorf("private_key_provider must be %q", resource.KeyProvider)
		}
		chain, err := legacyPemCerts(tc.GetCertificateChain())
		if err != nil {
			return nil, fmt.Errorf("certificate_chain: %w", err)
		}
		return &resource.Secret{Name: s.GetName(), Chain: chain}, nil
	case resource.SecretTrustBundle:
		vc := s.GetValidationContext()
		if vc == nil {
			return nil, errors.New("want a validation_context")
		}
		// The rule resource.go added (review): certificate pins are refused.
		if len(vc.GetVerifyCertificateHash()) > 0 || len(vc.GetVerifyCertificateSpki()) > 0 {
			return nil, errors.New("validation_context: verify_certificate_hash and verify_certificate_spki (certificate pinning) are not supported")
		}
		cas, err := legacyPemCerts(vc.GetTrustedCa())
		if err != nil {
			return nil, fmt.Errorf("trusted_ca: %w", err)
		}
		return &resource.Secret{Name: s.GetName(), CAs: cas}, nil
	default:
		return nil, fmt.Errorf("unknown secret name (want %q or %q)", resource.SecretSVID, resource.SecretTrustBundle)
	}
}

func legacyPemCerts(ds *corev3.DataSource) ([]*x509.Certificate, error) {
	var data []byte
	switch {
	case ds.GetInlineBytes() != nil:
		data = ds.GetInlineBytes()
	case ds.GetInlineString() != "":
		data = []byte(ds.GetInlineString())
	default:
		return nil, errors.New("only inline_bytes or inline_string is supported")
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

func legacySocketAddress(a *corev3.Address) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", errors.New("want a socket_address")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", fmt.Errorf("protocol %s: only TCP is supported", sa.GetProtocol())
	}
	if sa.GetResolverName() != "" || sa.GetIpv4Compat() {
		return "", errors.New("resolver_name and ipv4_compat are not supported")
	}
	if _, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue); !ok {
		return "", errors.New("want a port_value")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return "", fmt.Errorf("address %q must be an IP literal: %w", sa.GetAddress(), err)
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)), nil
}

func legacyUnpackTyped(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return errors.New("typed_config is missing")
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("typed_config: %w", err)
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("typed_config: %w", err)
		}
	}
	return nil
}
