// Package resource turns the xDS resources the sidecar receives into the
// sidecar's own configuration, accepting exactly the subset documented in
// docs/xds-conventions.md ("What the sidecar accepts") and refusing anything
// else with a reason that the ADS client sends back in its NACK.
package resource

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/protobuf/types/known/anypb"
)

// Defaults applied when a resource leaves a field unset.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultIdleTimeout    = time.Hour // Envoy's tcp_proxy default
)

// Direction tells an inbound (mTLS in, plaintext to the app) listener from an
// outbound (plaintext from the app, mTLS out) one.
type Direction string

// Directions.
const (
	Inbound  Direction = "inbound"
	Outbound Direction = "outbound"
)

// PeerPolicy says which peers a TLS context accepts.
type PeerPolicy struct {
	// Matchers are the SAN matchers as received, for display.
	Matchers []string
	// Authorize is built from the matchers with go-spiffe's authorizers.
	Authorize tlsconfig.Authorizer
	// CertSecret and BundleSecret name the SDS secrets the context uses.
	CertSecret   string
	BundleSecret string
}

// Listener is an accepted Listener resource.
type Listener struct {
	Name        string
	Address     string // host:port
	Direction   Direction
	Cluster     string
	StatPrefix  string
	IdleTimeout time.Duration // 0: no idle timeout
	// Peers is set for inbound listeners (the DownstreamTlsContext).
	Peers *PeerPolicy
}

// Cluster is an accepted Cluster resource.
type Cluster struct {
	Name string
	// Endpoints are host:port addresses. An mTLS cluster may have none (its service has no ready
	// replica yet); a plaintext one always has its app's.
	Endpoints      []string
	ConnectTimeout time.Duration
	// TLS is nil for a plaintext (local) cluster.
	TLS *UpstreamTLS
}

// UpstreamTLS is an accepted UpstreamTlsContext.
type UpstreamTLS struct {
	SNI   string
	Peers PeerPolicy
}

// Secret is an accepted SDS secret: Chain for svid, CAs for trust_bundle.
type Secret struct {
	Name  string
	Chain []*x509.Certificate
	CAs   []*x509.Certificate
}

// Names of the extensions and messages the sidecar accepts.
const (
	tcpProxyFilter     = "envoy.filters.network.tcp_proxy"
	tlsTransportSocket = "envoy.transport_sockets.tls"
	tcpProxyMessage    = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	downstreamTLSName  = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	upstreamTLSName    = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)

// ParseListeners validates and converts a LDS response's resources.
func ParseListeners(res []*anypb.Any) ([]*Listener, error) {
	d := newBudget()
	if err := d.charge(uintptr(len(res)) * (unsafe.Sizeof(Listener{}) + 8)); err != nil {
		return nil, fmt.Errorf("%d listeners: %w", len(res), err)
	}
	out := make([]*Listener, 0, len(res))
	seen := map[string]bool{}
	addrs := map[string]string{}
	for i, a := range res {
		l := &listenerMsg{}
		if err := unpack(d, a, ListenerType, l.merge); err != nil {
			return nil, fmt.Errorf("listener %q (resource %d): %w", l.name, i, err)
		}
		p, err := parseListener(d, l)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.name, err)
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
func ParseClusters(res []*anypb.Any) ([]*Cluster, error) {
	d := newBudget()
	if err := d.charge(uintptr(len(res)) * (unsafe.Sizeof(Cluster{}) + 8)); err != nil {
		return nil, fmt.Errorf("%d clusters: %w", len(res), err)
	}
	out := make([]*Cluster, 0, len(res))
	seen := map[string]bool{}
	for i, a := range res {
		c := &clusterMsg{}
		if err := unpack(d, a, ClusterType, c.merge); err != nil {
			return nil, fmt.Errorf("cluster %q (resource %d): %w", c.name, i, err)
		}
		p, err := parseCluster(d, c)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.name, err)
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
func ParseSecrets(res []*anypb.Any) ([]*Secret, error) {
	d := newBudget()
	if err := d.charge(uintptr(len(res)) * (unsafe.Sizeof(Secret{}) + 8)); err != nil {
		return nil, fmt.Errorf("%d secrets: %w", len(res), err)
	}
	out := make([]*Secret, 0, len(res))
	for i, a := range res {
		s := &secretMsg{}
		if err := unpack(d, a, SecretType, s.merge); err != nil {
			return nil, fmt.Errorf("secret %q (resource %d): %w", s.name, i, err)
		}
		p, err := parseSecret(d, s)
		if err != nil {
			return nil, fmt.Errorf("secret %q: %w", s.name, err)
		}
		// Two secrets of one name: which one applies would depend on their order.
		if slices.ContainsFunc(out, func(o *Secret) bool { return o.Name == p.Name }) {
			return nil, fmt.Errorf("secret %q: duplicate name", p.Name)
		}
		out = append(out, p)
	}
	return out, nil
}

func unpack(d *budget, a *anypb.Any, typeURL string, merge func(*budget, []byte) error) error {
	if a.GetTypeUrl() != typeURL {
		return fmt.Errorf("resource: got type %q, want %q", a.GetTypeUrl(), typeURL)
	}
	if err := merge(d, a.GetValue()); err != nil {
		return fmt.Errorf("resource: decode %s: %w", typeURL, err)
	}
	return nil
}

// unpackTyped decodes a typed_config holding the message fullName.
func unpackTyped(d *budget, a *anyMsg, fullName string, merge func(*budget, []byte) error) error {
	if a == nil {
		return errors.New("typed_config is missing")
	}
	if !a.is(fullName) {
		return fmt.Errorf("typed_config: mismatched message type: got %q, want %q", a.typeURL, fullName)
	}
	if err := merge(d, a.value); err != nil {
		return fmt.Errorf("typed_config: %w", err)
	}
	return nil
}

func parseListener(d *budget, l *listenerMsg) (*Listener, error) {
	if l.name == "" {
		return nil, errors.New("name is empty")
	}
	addr, err := socketAddress(l.address)
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	switch {
	case l.listenerFilters > 0:
		return nil, errors.New("listener_filters are not supported")
	case l.defaultFilterChain:
		return nil, errors.New("default_filter_chain is not supported")
	case l.additionalAddresses > 0:
		return nil, errors.New("additional_addresses are not supported")
	case len(l.filterChains) != 1:
		return nil, fmt.Errorf("want exactly 1 filter chain, got %d", len(l.filterChains))
	}
	fc := l.filterChains[0]
	if fc.filterChainMatch {
		return nil, errors.New("filter_chain_match is not supported")
	}
	if len(fc.filters) != 1 {
		return nil, fmt.Errorf("want exactly 1 network filter (%s), got %d", tcpProxyFilter, len(fc.filters))
	}
	f := fc.filters[0]
	if f.name != tcpProxyFilter {
		return nil, fmt.Errorf("unsupported filter %q: only %s is supported", f.name, tcpProxyFilter)
	}
	tp := &tcpProxyMsg{}
	if err := unpackTyped(d, f.typed(), tcpProxyMessage, tp.merge); err != nil {
		return nil, fmt.Errorf("filter %s: %w", f.name, err)
	}
	if tp.statPrefix == "" {
		return nil, fmt.Errorf("filter %s: stat_prefix: %w", f.name, errEmpty)
	}
	if tp.specifier == 0 {
		return nil, fmt.Errorf("filter %s: cluster_specifier: %w", f.name, errRequired)
	}
	if tp.specifier != 2 || tp.cluster == "" {
		return nil, fmt.Errorf("filter %s: only the cluster specifier is supported", f.name)
	}
	out := &Listener{
		Name:        l.name,
		Address:     addr,
		Cluster:     tp.cluster,
		StatPrefix:  tp.statPrefix,
		IdleTimeout: DefaultIdleTimeout,
	}
	if d := tp.idleTimeout; d != nil {
		// The pipes read a timeout <= 0 as none, which Envoy spells 0s only: a negative or
		// invalid Duration (Envoy refuses both) must not turn into none.
		pb := d.pb()
		if err := pb.CheckValid(); err != nil {
			return nil, fmt.Errorf("filter %s: idle_timeout: not a valid duration: %w", f.name, err)
		}
		if out.IdleTimeout = pb.AsDuration(); out.IdleTimeout < 0 {
			return nil, fmt.Errorf("filter %s: idle_timeout: must not be negative, got %v", f.name, out.IdleTimeout)
		}
	}
	ts := fc.transportSocket
	if ts == nil {
		ip, err := netip.ParseAddrPort(addr)
		if err != nil || !ip.Addr().IsLoopback() {
			return nil, fmt.Errorf("a plaintext (outbound) listener must bind a loopback address, got %s", addr)
		}
		out.Direction = Outbound
		return out, nil
	}
	if ts.name != tlsTransportSocket {
		return nil, fmt.Errorf("unsupported transport socket %q", ts.name)
	}
	dtc := &downstreamTLSMsg{}
	if err := unpackTyped(d, ts.typedConfig, downstreamTLSName, dtc.merge); err != nil {
		return nil, fmt.Errorf("transport socket: %w", err)
	}
	if dtc.requireClientCert == nil || !dtc.requireClientCert.value {
		return nil, errors.New("transport socket: require_client_certificate must be true")
	}
	peers, err := parseCommon(d, dtc.common)
	if err != nil {
		return nil, fmt.Errorf("transport socket: %w", err)
	}
	out.Direction = Inbound
	out.Peers = peers
	return out, nil
}

// errEmpty is protoc-gen-validate's min_len: 1 refusal.
var errEmpty = errors.New("must not be empty")

func parseCluster(d *budget, c *clusterMsg) (*Cluster, error) {
	if c.name == "" {
		return nil, errors.New("name is empty")
	}
	if c.discovery == 38 || c.typ != 0 {
		return nil, fmt.Errorf("only STATIC clusters are supported, got %s", enumName(discoveryTypes, c.typ, c.discovery == 38))
	}
	if c.lbPolicy != 0 {
		return nil, fmt.Errorf("only ROUND_ROBIN load balancing is supported, got %s", enumName(lbPolicies, c.lbPolicy, false))
	}
	out := &Cluster{Name: c.name, ConnectTimeout: DefaultConnectTimeout}
	if d := c.connectTimeout; d != nil {
		pb := d.pb()
		if err := pb.CheckValid(); err != nil {
			return nil, fmt.Errorf("connect_timeout: not a valid duration: %w", err)
		}
		if out.ConnectTimeout = pb.AsDuration(); out.ConnectTimeout <= 0 {
			return nil, errors.New("connect_timeout: must be greater than 0s")
		}
	}
	if la := c.loadAssignment; la != nil {
		if la.clusterName == "" {
			return nil, fmt.Errorf("load_assignment: cluster_name: %w", errEmpty)
		}
		// Counted first, so that the result is allocated once, and charged.
		n := 0
		for _, lle := range la.endpoints {
			n += len(lle.lbEndpoints)
		}
		if err := d.charge(uintptr(n) * unsafe.Sizeof("")); err != nil {
			return nil, fmt.Errorf("load_assignment: %d endpoints: %w", n, err)
		}
		out.Endpoints = make([]string, 0, n)
		for _, lle := range la.endpoints {
			if lle.priority > 128 {
				return nil, fmt.Errorf("load_assignment: priority %d: must be at most 128", lle.priority)
			}
			for _, e := range lle.lbEndpoints {
				var a *addressMsg
				if e.host == 1 {
					a = e.endpoint.address
				}
				addr, err := socketAddress(a)
				if err != nil {
					return nil, fmt.Errorf("endpoint: %w", err)
				}
				if err := d.charge(uintptr(len(addr))); err != nil {
					return nil, fmt.Errorf("endpoint %s: %w", addr, err)
				}
				out.Endpoints = append(out.Endpoints, addr)
			}
		}
	}
	ts := c.transportSocket
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
	if ts.name != tlsTransportSocket {
		return nil, fmt.Errorf("unsupported transport socket %q", ts.name)
	}
	utc := &upstreamTLSMsg{}
	if err := unpackTyped(d, ts.typedConfig, upstreamTLSName, utc.merge); err != nil {
		return nil, fmt.Errorf("transport socket: %w", err)
	}
	if len(utc.sni) > 255 {
		return nil, fmt.Errorf("transport socket: sni: %d bytes, at most 255", len(utc.sni))
	}
	peers, err := parseCommon(d, utc.common)
	if err != nil {
		return nil, fmt.Errorf("transport socket: %w", err)
	}
	out.TLS = &UpstreamTLS{SNI: utc.sni, Peers: *peers}
	return out, nil
}

func parseCommon(d *budget, c *commonTLSMsg) (*PeerPolicy, error) {
	if c == nil {
		return nil, errors.New("common_tls_context is missing")
	}
	if p := c.tlsParams; p != nil {
		for _, v := range []struct {
			name string
			v    int32
		}{{"tls_minimum_protocol_version", p.minVersion}, {"tls_maximum_protocol_version", p.maxVersion}} {
			if _, ok := tlsProtocols[v.v]; !ok {
				return nil, fmt.Errorf("%s %d: not a defined value", v.name, v.v)
			}
		}
		if mx := p.maxVersion; mx != tlsAuto && mx < tlsV13 {
			return nil, fmt.Errorf("tls_maximum_protocol_version %s: the sidecar speaks TLSv1_3 only", tlsProtocols[mx])
		}
		if p.cipherSuites > 0 || p.ecdhCurves > 0 || p.signatureAlgorithms > 0 {
			return nil, errors.New("tls_params: cipher_suites, ecdh_curves and signature_algorithms are not supported")
		}
	}
	if c.tlsCertificates > 0 {
		return nil, errors.New("inline tls_certificates are not supported: the private key never leaves the workload")
	}
	if len(c.certSDS) != 1 {
		return nil, fmt.Errorf("want exactly 1 tls_certificate_sds_secret_configs, got %d", len(c.certSDS))
	}
	pp := &PeerPolicy{}
	var err error
	if pp.CertSecret, err = sdsName(c.certSDS[0], SecretSVID); err != nil {
		return nil, fmt.Errorf("tls_certificate_sds_secret_configs: %w", err)
	}
	cvc := c.combinedValidation()
	if cvc == nil {
		return nil, errors.New("combined_validation_context is required")
	}
	if pp.BundleSecret, err = sdsName(cvc.sdsConfig, SecretTrustBundle); err != nil {
		return nil, fmt.Errorf("validation_context_sds_secret_config: %w", err)
	}
	dvc := cvc.defaultValidation
	if dvc == nil {
		return nil, fmt.Errorf("default_validation_context: %w", errRequired)
	}
	if err := validateCertValidation(dvc); err != nil {
		return nil, fmt.Errorf("default_validation_context: %w", err)
	}
	if dvc.trustedCA != nil || len(dvc.verifyCertificateHash) > 0 || len(dvc.verifyCertificateSPKI) > 0 ||
		dvc.trustChainVerification != 0 || dvc.customValidator != nil {
		return nil, errors.New("default_validation_context: only match_typed_subject_alt_names is supported")
	}
	if len(dvc.sans) == 0 {
		return nil, errors.New("default_validation_context: match_typed_subject_alt_names is empty: refusing to accept any peer of the trust domain")
	}
	var exact []spiffeid.ID
	var auths []tlsconfig.Authorizer
	for _, m := range dvc.sans {
		desc, id, prefix, err := parseSAN(m)
		if err != nil {
			return nil, fmt.Errorf("match_typed_subject_alt_names: %w", err)
		}
		// The description, the parsed ID and the authorizer: about three times the value.
		if err := d.charge(3*uintptr(len(desc)) + sanOverhead); err != nil {
			return nil, fmt.Errorf("match_typed_subject_alt_names: %s: %w", desc, err)
		}
		pp.Matchers = append(pp.Matchers, desc)
		if prefix != nil {
			auths = append(auths, prefix)
		} else {
			exact = append(exact, id)
		}
	}
	if len(exact) > 0 {
		auths = append(auths, tlsconfig.AuthorizeOneOf(exact...))
	}
	pp.Authorize = anyOf(auths, pp.Matchers)
	return pp, nil
}

// validateCertValidation checks protoc-gen-validate's rules of a
// CertificateValidationContext's fields the sidecar reads, wherever it
// appears (the trust bundle's secret accepts more than a TLS context does).
func validateCertValidation(v *certValidationMsg) error {
	if v.trustedCA != nil {
		if err := validateDataSource(v.trustedCA); err != nil {
			return fmt.Errorf("trusted_ca: %w", err)
		}
	}
	for _, s := range v.verifyCertificateSPKI {
		if utf8.RuneCountInString(s) < 44 || len(s) > 44 {
			return fmt.Errorf("verify_certificate_spki %q: want 44 bytes", s)
		}
	}
	for _, s := range v.verifyCertificateHash {
		if utf8.RuneCountInString(s) < 64 || len(s) > 95 {
			return fmt.Errorf("verify_certificate_hash %q: want 64 to 95 bytes", s)
		}
	}
	if _, ok := trustChainVerifications[v.trustChainVerification]; !ok {
		return fmt.Errorf("trust_chain_verification %d: not a defined value", v.trustChainVerification)
	}
	if c := v.customValidator; c != nil && (c.name == "" || c.typedConfig == nil) {
		return errors.New("custom_validator_config: name and typed_config are required")
	}
	for _, m := range v.sans {
		if err := validateSAN(m); err != nil {
			return fmt.Errorf("match_typed_subject_alt_names: %w", err)
		}
	}
	return nil
}

// validateSAN checks protoc-gen-validate's rules of a SubjectAltNameMatcher.
func validateSAN(m *sanMatcherMsg) error {
	if _, ok := sanTypes[m.sanType]; !ok || m.sanType == 0 {
		return fmt.Errorf("san_type %d: not a defined value other than SAN_TYPE_UNSPECIFIED", m.sanType)
	}
	sm := m.matcher
	if sm == nil {
		return fmt.Errorf("matcher: %w", errRequired)
	}
	switch sm.pattern {
	case 0:
		return fmt.Errorf("matcher: match_pattern: %w", errRequired)
	case 2, 3, 7: // prefix, suffix, contains: min_len 1
		if sm.value == "" {
			return fmt.Errorf("matcher: %s: %w", stringMatchers[sm.pattern], errEmpty)
		}
	}
	return nil
}

// validateDataSource checks protoc-gen-validate's rules of a DataSource.
func validateDataSource(d *dataSourceMsg) error {
	switch d.specifier {
	case 0:
		return fmt.Errorf("specifier: %w", errRequired)
	case 1, 4: // filename, environment_variable: min_len 1
		if d.value == "" {
			return fmt.Errorf("filename or environment_variable: %w", errEmpty)
		}
	}
	return nil
}

// anyOf authorizes an ID that any of auths authorizes.
func anyOf(auths []tlsconfig.Authorizer, desc []string) tlsconfig.Authorizer {
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

// parseSAN returns an exact matcher's ID, or a prefix matcher's authorizer.
func parseSAN(m *sanMatcherMsg) (desc string, id spiffeid.ID, prefix tlsconfig.Authorizer, err error) {
	if err := validateSAN(m); err != nil {
		return "", spiffeid.ID{}, nil, err
	}
	if m.sanType != sanURI {
		return "", spiffeid.ID{}, nil, fmt.Errorf("san_type %s: only URI is supported", sanTypes[m.sanType])
	}
	sm := m.matcher
	if sm.ignoreCase {
		return "", spiffeid.ID{}, nil, errors.New("ignore_case is not supported for SPIFFE IDs")
	}
	switch sm.pattern {
	case 1, 2:
	default:
		return "", spiffeid.ID{}, nil, fmt.Errorf("matcher %s: only exact and prefix are supported", stringMatchers[sm.pattern])
	}
	s := sm.value
	if sm.pattern == 1 {
		// No SPIFFE ID ends with '/': Envoy's exact "spiffe://td/a/" admits no one, so it is
		// refused like any other value that is not a SPIFFE ID (trimmed, it admitted spiffe://td/a).
		if id, err = spiffeid.FromString(s); err != nil {
			return "", spiffeid.ID{}, nil, fmt.Errorf("%q is not a SPIFFE ID: %w", s, err)
		}
		return "exact:" + id.String(), id, nil, nil
	}
	id, err = spiffeid.FromString(strings.TrimSuffix(s, "/"))
	if err != nil {
		return "", spiffeid.ID{}, nil, fmt.Errorf("%q is not a SPIFFE ID: %w", s, err)
	}
	if !strings.HasSuffix(s, "/") {
		// On segment boundaries: spiffe://td/a admits spiffe://td/a and spiffe://td/a/b, not
		// spiffe://td/ab (Envoy's string prefix would).
		return "prefix:" + id.String(), id, tlsconfig.AuthorizeIDPrefix(id), nil
	}
	// Envoy's prefix "spiffe://td/a/" admits the IDs below spiffe://td/a, not spiffe://td/a
	// itself, which may be someone else: a session's name may have '/', so spiffe://td/team/prod
	// is service prod of session team, and spiffe://td/team/prod/db a service of session team/prod.
	return "prefix:" + id.String() + "/", id, authorizeBelow(id), nil
}

// authorizeBelow admits the IDs whose path is below parent's (and none if parent has no path,
// as go-spiffe's prefix matcher).
func authorizeBelow(parent spiffeid.ID) tlsconfig.Authorizer {
	prefix := tlsconfig.AuthorizeIDPrefix(parent)
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if id == parent {
			return fmt.Errorf("unexpected ID %q: only IDs below it are allowed", id)
		}
		return prefix(id, chains)
	}
}

func sdsName(c *sdsSecretConfigMsg, want string) (string, error) {
	if c == nil {
		return "", errors.New("missing")
	}
	if c.name != want {
		return "", fmt.Errorf("unknown secret %q (want %q)", c.name, want)
	}
	if c.sdsConfig == nil || c.sdsConfig.specifier != 3 {
		return "", fmt.Errorf("secret %q: sds_config must be ads", c.name)
	}
	if _, ok := apiVersions[c.sdsConfig.resourceAPIVersion]; !ok {
		return "", fmt.Errorf("secret %q: sds_config: resource_api_version %d: not a defined value", c.name, c.sdsConfig.resourceAPIVersion)
	}
	return c.name, nil
}

func parseSecret(d *budget, s *secretMsg) (*Secret, error) {
	switch s.name {
	case SecretSVID:
		if s.typ != 2 {
			return nil, errors.New("want a tls_certificate")
		}
		tc := s.tlsCertificate
		if tc.privateKey {
			return nil, errors.New("private_key must not be sent: the key never leaves the workload")
		}
		if tc.privateKeyProvider == nil || tc.privateKeyProvider.providerName != KeyProvider {
			return nil, fmt.Errorf("private_key_provider must be %q", KeyProvider)
		}
		chain, err := pemCerts(d, tc.certificateChain)
		if err != nil {
			return nil, fmt.Errorf("certificate_chain: %w", err)
		}
		return &Secret{Name: s.name, Chain: chain}, nil
	case SecretTrustBundle:
		if s.typ != 4 {
			return nil, errors.New("want a validation_context")
		}
		vc := s.validationContext
		if err := validateCertValidation(vc); err != nil {
			return nil, fmt.Errorf("validation_context: %w", err)
		}
		// Envoy merges this context into the TLS contexts' (combined_validation_context):
		// pins here restrict the peers, and ignored they would admit every peer of the CAs.
		if len(vc.verifyCertificateHash) > 0 || len(vc.verifyCertificateSPKI) > 0 {
			return nil, errors.New("validation_context: verify_certificate_hash and verify_certificate_spki (certificate pinning) are not supported")
		}
		cas, err := pemCerts(d, vc.trustedCA)
		if err != nil {
			return nil, fmt.Errorf("trusted_ca: %w", err)
		}
		return &Secret{Name: s.name, CAs: cas}, nil
	default:
		return nil, fmt.Errorf("unknown secret name (want %q or %q)", SecretSVID, SecretTrustBundle)
	}
}

func pemCerts(d *budget, ds *dataSourceMsg) ([]*x509.Certificate, error) {
	var data []byte
	switch {
	case ds != nil && ds.specifier == 2:
		data = ds.inlineBytes
	case ds != nil && ds.specifier == 3 && ds.value != "":
		data = []byte(ds.value)
	default:
		return nil, errors.New("only inline_bytes or inline_string is supported")
	}
	if err := d.charge(pemCost * uintptr(len(data))); err != nil {
		return nil, fmt.Errorf("%d bytes of PEM: %w", len(data), err)
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

// socketAddress checks an Address (protoc-gen-validate's rules and the
// sidecar's own) and returns its host:port.
func socketAddress(a *addressMsg) (string, error) {
	if a != nil && a.which == 0 {
		return "", fmt.Errorf("address: %w", errRequired)
	}
	if a == nil || a.which != 1 {
		return "", errors.New("want a socket_address")
	}
	sa := a.socketAddress
	if _, ok := protocols[sa.protocol]; !ok {
		return "", fmt.Errorf("protocol %d: not a defined value", sa.protocol)
	}
	if sa.protocol != protocolTCP {
		return "", fmt.Errorf("protocol %s: only TCP is supported", protocols[sa.protocol])
	}
	if sa.port == 0 {
		return "", fmt.Errorf("port_specifier: %w", errRequired)
	}
	if sa.port == 3 && sa.portValue > 65535 {
		return "", fmt.Errorf("port_value %d: at most 65535", sa.portValue)
	}
	if sa.resolverName != "" || sa.ipv4Compat {
		return "", errors.New("resolver_name and ipv4_compat are not supported")
	}
	if sa.port != 3 {
		return "", errors.New("want a port_value")
	}
	ip, err := netip.ParseAddr(sa.address)
	if err != nil {
		return "", fmt.Errorf("address %q must be an IP literal: %w", sa.address, err)
	}
	// One allocation: the host:port of net.JoinHostPort, IPv6 in brackets, zone included.
	return netip.AddrPortFrom(ip, uint16(sa.portValue)).String(), nil //nolint:gosec // G115: at most 65535, checked above
}

// The values of the enums the sidecar reads, for protoc-gen-validate's
// defined_only and for errors (wire_test.go checks them against the
// descriptors).
const (
	protocolTCP = 0
	sanURI      = 3
	tlsAuto     = 0
	tlsV13      = 4
)

var (
	protocols               = map[int32]string{0: "TCP", 1: "UDP"}
	discoveryTypes          = map[int32]string{0: "STATIC", 1: "STRICT_DNS", 2: "LOGICAL_DNS", 3: "EDS", 4: "ORIGINAL_DST"}
	lbPolicies              = map[int32]string{0: "ROUND_ROBIN", 1: "LEAST_REQUEST", 2: "RING_HASH", 3: "RANDOM", 5: "MAGLEV", 6: "CLUSTER_PROVIDED", 7: "LOAD_BALANCING_POLICY_CONFIG"}
	tlsProtocols            = map[int32]string{0: "TLS_AUTO", 1: "TLSv1_0", 2: "TLSv1_1", 3: "TLSv1_2", 4: "TLSv1_3"}
	sanTypes                = map[int32]string{0: "SAN_TYPE_UNSPECIFIED", 1: "EMAIL", 2: "DNS", 3: "URI", 4: "IP_ADDRESS", 5: "OTHER_NAME"}
	trustChainVerifications = map[int32]string{0: "VERIFY_TRUST_CHAIN", 1: "ACCEPT_UNTRUSTED"}
	apiVersions             = map[int32]string{0: "AUTO", 1: "V2", 2: "V3"}
	stringMatchers          = map[oneof]string{1: "exact", 2: "prefix", 3: "suffix", 5: "safe_regex", 7: "contains", 8: "custom"}
)

// enumName names an enum value for an error; custom is the cluster_type
// member of cluster_discovery_type.
func enumName(names map[int32]string, v int32, custom bool) string {
	if custom {
		return "cluster_type"
	}
	if n, ok := names[v]; ok {
		return n
	}
	return strconv.Itoa(int(v))
}
