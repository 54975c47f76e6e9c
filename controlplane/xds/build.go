package xds

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	sidecar "github.com/attestmesh/attestmesh/proxy/resource"
)

// OutboundConnectTimeout is the connect_timeout of outbound clusters.
const OutboundConnectTimeout = 5 * time.Second

// Build returns the listeners, clusters and secrets of service svc in mesh m, keyed by type URL
// and sorted by name, as docs/xds-conventions.md describes them, with the names the sidecar's
// parsers (proxy/resource) own. bundle is the trust domain's CA
// bundle; svid is the service's X.509-SVID chain, leaf first, whose SPIFFE ID must be the
// service's. Build validates the mesh; the resources themselves are checked by ValidateSnapshot.
func Build(m *Mesh, svc string, bundle, svid []*x509.Certificate) (map[resource.Type][]types.Resource, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	idx := m.index()
	s := idx[svc]
	if s == nil {
		return nil, fmt.Errorf("xds: build: unknown service %q", svc)
	}
	bundleSecret, err := buildTrustBundle(bundle)
	if err != nil {
		return nil, err
	}
	svidSecret, err := buildSVIDSecret(s.ID, svid)
	if err != nil {
		return nil, err
	}
	listeners, clusters := buildConfig(idx, s)
	return map[resource.Type][]types.Resource{
		sidecar.ListenerType: listeners,
		sidecar.ClusterType:  clusters,
		sidecar.SecretType:   {svidSecret, bundleSecret},
	}, nil
}

// buildConfig returns the listeners and clusters of s, each sorted by name. The mesh that idx
// indexes must be valid.
func buildConfig(idx map[string]*Service, s *Service) (listeners, clusters []types.Resource) {
	for _, p := range s.Ports {
		peers := make([]spiffeid.ID, 0, len(p.AllowedPeers))
		for _, name := range p.AllowedPeers {
			peers = append(peers, idx[name].ID)
		}
		listeners = append(listeners, inboundListener(s.bindAddress(), p, peers))
		clusters = append(clusters, localCluster(p))
	}
	for _, c := range s.Connects {
		listeners = append(listeners, outboundListener(c))
		clusters = append(clusters, outboundCluster(c, idx[c.Service].ID))
	}
	byName := func(a, b types.Resource) int {
		return strings.Compare(resourceName(a), resourceName(b))
	}
	slices.SortFunc(listeners, byName)
	slices.SortFunc(clusters, byName)
	return listeners, clusters
}

func resourceName(r types.Resource) string {
	switch r := r.(type) {
	case *listener.Listener:
		return r.GetName()
	case *cluster.Cluster:
		return r.GetName()
	case *tlsv3.Secret:
		return r.GetName()
	}
	return ""
}

func buildTrustBundle(bundle []*x509.Certificate) (*tlsv3.Secret, error) {
	if len(bundle) == 0 {
		return nil, errors.New("xds: build: trust bundle is empty")
	}
	return &tlsv3.Secret{
		Name: sidecar.SecretTrustBundle,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inlineBytes(encodePEM(bundle)),
		}},
	}, nil
}

func buildSVIDSecret(want spiffeid.ID, chain []*x509.Certificate) (*tlsv3.Secret, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("xds: build: no SVID for %q", want)
	}
	got, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, fmt.Errorf("xds: build: SVID for %q: %w", want, err)
	}
	if got != want {
		return nil, fmt.Errorf("xds: build: SVID for %q holds SPIFFE ID %q", want, got)
	}
	return &tlsv3.Secret{
		Name: sidecar.SecretSVID,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain:   inlineBytes(encodePEM(chain)),
			PrivateKeyProvider: &tlsv3.PrivateKeyProvider{ProviderName: sidecar.KeyProvider},
		}},
	}, nil
}

func encodePEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func inlineBytes(b []byte) *core.DataSource {
	return &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b}}
}

func sdsConfig(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{
		Name: name,
		SdsConfig: &core.ConfigSource{
			ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
			ResourceApiVersion:    core.ApiVersion_V3,
		},
	}
}

// commonTLS is the CommonTlsContext of both directions: TLS 1.3, the svid, the trust bundle, and
// the peer's SPIFFE ID checked by exact URI SAN match.
func commonTLS(peers []spiffeid.ID) *tlsv3.CommonTlsContext {
	ids := make([]string, 0, len(peers))
	for _, id := range peers {
		ids = append(ids, id.String())
	}
	slices.Sort(ids)
	sans := make([]*tlsv3.SubjectAltNameMatcher, 0, len(ids))
	for _, id := range ids {
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: id}},
		})
	}
	return &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsConfig(sidecar.SecretSVID)},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: sdsConfig(sidecar.SecretTrustBundle),
			},
		},
	}
}

// mustAny packs a message built here; it cannot fail for generated types.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("xds: pack %T: %v", m, err))
	}
	return a
}

func socketAddress(addr string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Protocol:      core.SocketAddress_TCP,
		Address:       addr,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}
}

func tcpProxyFilter(statPrefix, clusterName string) *listener.Filter {
	return &listener.Filter{
		Name: wellknown.TCPProxy,
		ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxy.TcpProxy{
			StatPrefix:       statPrefix,
			ClusterSpecifier: &tcpproxy.TcpProxy_Cluster{Cluster: clusterName},
		})},
	}
}

func inboundListener(bind string, p Port, peers []spiffeid.ID) *listener.Listener {
	name := sidecar.InboundName(p.Port)
	return &listener.Listener{
		Name:    name,
		Address: socketAddress(bind, p.Port),
		FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{tcpProxyFilter(name, sidecar.LocalClusterName(p.Port))},
			TransportSocket: &core.TransportSocket{
				Name: wellknown.TransportSocketTLS,
				ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.DownstreamTlsContext{
					RequireClientCertificate: wrapperspb.Bool(true),
					CommonTlsContext:         commonTLS(peers),
				})},
			},
		}},
	}
}

func localCluster(p Port) *cluster.Cluster {
	name := sidecar.LocalClusterName(p.Port)
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		LoadAssignment:       loadAssignment(name, []*core.Address{socketAddress("127.0.0.1", p.AppPort)}),
	}
}

func outboundListener(c Connect) *listener.Listener {
	name := sidecar.OutboundName(c.Service, c.Port)
	return &listener.Listener{
		Name:    name,
		Address: socketAddress("127.0.0.1", c.LocalPort),
		FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{tcpProxyFilter(name, name)},
		}},
	}
}

func outboundCluster(c Connect, server spiffeid.ID) *cluster.Cluster {
	name := sidecar.OutboundName(c.Service, c.Port)
	addrs := make([]*core.Address, 0, len(c.Endpoints))
	eps := slices.Clone(c.Endpoints)
	slices.Sort(eps)
	for _, ep := range eps {
		host, port, _ := splitEndpoint(ep) // checked by Mesh.Validate
		addrs = append(addrs, socketAddress(host, port))
	}
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(OutboundConnectTimeout),
		LoadAssignment:       loadAssignment(name, addrs),
		TransportSocket: &core.TransportSocket{
			Name: wellknown.TransportSocketTLS,
			ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{
				Sni:              c.Service,
				CommonTlsContext: commonTLS([]spiffeid.ID{server}),
			})},
		},
	}
}

func loadAssignment(clusterName string, addrs []*core.Address) *endpoint.ClusterLoadAssignment {
	lbs := make([]*endpoint.LbEndpoint, 0, len(addrs))
	for _, a := range addrs {
		lbs = append(lbs, &endpoint.LbEndpoint{
			HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: a}},
		})
	}
	return &endpoint.ClusterLoadAssignment{
		ClusterName: clusterName,
		Endpoints:   []*endpoint.LocalityLbEndpoints{{LbEndpoints: lbs}},
	}
}
