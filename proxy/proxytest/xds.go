package proxytest

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/attestmesh/attestmesh/proxy/resource"
)

// XDSServer is a go-control-plane ADS server (snapshot cache keyed by
// node ID) over gRPC with mTLS: it presents an SVID for
// spiffe://<td>/controlplane and requires client SVIDs from ca.
type XDSServer struct {
	Cache cachev3.SnapshotCache
	Addr  string

	grpc *grpc.Server
	done chan struct{}

	mu       sync.Mutex
	requests []*discoveryv3.DiscoveryRequest
}

// StartXDS serves on addr ("127.0.0.1:0" for any port). Reuse a cache to
// restart a server with the same snapshots.
func StartXDS(ca *CA, addr string, cache cachev3.SnapshotCache) (*XDSServer, error) {
	if cache == nil {
		cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	}
	cert, err := ca.TLSCertificate(ca.ID("/controlplane"), time.Hour)
	if err != nil {
		return nil, err
	}
	svid := &x509svid.SVID{ID: ca.ID("/controlplane"), Certificates: []*x509.Certificate{cert.Leaf}, PrivateKey: cert.PrivateKey.(crypto.Signer)}
	bundle := x509bundle.FromX509Authorities(ca.TD, []*x509.Certificate{ca.Cert})
	tc := tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AuthorizeMemberOf(ca.TD))
	tc.MinVersion = tls.VersionTLS13

	var lc net.ListenConfig
	var ln net.Listener
	// A restarted server may find its port in TIME_WAIT briefly.
	for i := 0; ; i++ {
		ln, err = lc.Listen(context.Background(), "tcp", addr)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("proxytest: xds listen: %w", err)
	}
	s := &XDSServer{Cache: cache, Addr: ln.Addr().String(), done: make(chan struct{})}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.requests = append(s.requests, r)
			return nil
		},
	}
	s.grpc = grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, serverv3.NewServer(context.Background(), cache, cb))
	go func() {
		defer close(s.done)
		_ = s.grpc.Serve(ln)
	}()
	return s, nil
}

// Stop stops the server and closes every stream.
func (s *XDSServer) Stop() {
	s.grpc.Stop()
	<-s.done
}

// Requests returns every DiscoveryRequest received so far.
func (s *XDSServer) Requests() []*discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*discoveryv3.DiscoveryRequest(nil), s.requests...)
}

// Acked reports whether node acknowledged version of typeURL. With nodeless
// follow-up requests the check is by version and type only.
func (s *XDSServer) Acked(typeURL, version string) bool {
	for _, r := range s.Requests() {
		if r.GetTypeUrl() == typeURL && r.GetVersionInfo() == version && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil {
			return true
		}
	}
	return false
}

// NACK returns the error_detail message of a NACK for typeURL, if any.
func (s *XDSServer) NACK(typeURL string) (string, bool) {
	for _, r := range s.Requests() {
		if r.GetTypeUrl() == typeURL && r.GetErrorDetail() != nil {
			return r.GetErrorDetail().GetMessage(), true
		}
	}
	return "", false
}

// Publish sets node's snapshot.
func (s *XDSServer) Publish(ctx context.Context, node string, version string, res Resources) error {
	snap, err := cachev3.NewSnapshot(version, map[string][]types.Resource{
		resource.ListenerType: res.Listeners,
		resource.ClusterType:  res.Clusters,
		resource.SecretType:   res.Secrets,
	})
	if err != nil {
		return fmt.Errorf("proxytest: snapshot: %w", err)
	}
	if err := s.Cache.SetSnapshot(ctx, node, snap); err != nil {
		return fmt.Errorf("proxytest: set snapshot: %w", err)
	}
	return nil
}

// Resources are one node's resources.
type Resources struct {
	Listeners []types.Resource
	Clusters  []types.Resource
	Secrets   []types.Resource
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func commonTLS(allowed []spiffeid.ID) *tlsv3.CommonTlsContext {
	sans := make([]*tlsv3.SubjectAltNameMatcher, 0, len(allowed))
	for _, id := range allowed {
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id.String()}},
		})
	}
	return &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: resource.SecretSVID, SdsConfig: ads()}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: resource.SecretTrustBundle, SdsConfig: ads()},
			},
		},
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("proxytest: %v", err))
	}
	return a
}

func address(hostport string) *corev3.Address {
	host, port := splitHostPort(hostport)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func splitHostPort(hostport string) (string, uint32) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		panic(fmt.Sprintf("proxytest: address %q: %v", hostport, err))
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		panic(fmt.Sprintf("proxytest: port %q: %v", hostport, err))
	}
	return host, uint32(port)
}

func port32(port int) uint32 {
	if port < 0 || port > 65535 {
		panic(fmt.Sprintf("proxytest: port %d out of range", port))
	}
	return uint32(port)
}

func tcpProxy(name, cluster string) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name: wellknown.TCPProxy,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxyv3.TcpProxy{
			StatPrefix:       name,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
		})},
	}
}

// InboundListener builds `inbound|<port>` on addr, accepting allowed.
func InboundListener(addr string, allowed ...spiffeid.ID) *listenerv3.Listener {
	_, port := splitHostPort(addr)
	name := resource.InboundName(port)
	return &listenerv3.Listener{
		Name:    name,
		Address: address(addr),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{tcpProxy(name, resource.LocalClusterName(port))},
			TransportSocket: &corev3.TransportSocket{
				Name: wellknown.TransportSocketTLS,
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.DownstreamTlsContext{
					RequireClientCertificate: wrapperspb.Bool(true),
					CommonTlsContext:         commonTLS(allowed),
				})},
			},
		}},
	}
}

// LocalCluster builds `local|<port>` for the inbound listener on port,
// pointing at the app on appAddr.
func LocalCluster(inboundAddr, appAddr string) *clusterv3.Cluster {
	_, port := splitHostPort(inboundAddr)
	return staticCluster(resource.LocalClusterName(port), []string{appAddr}, nil)
}

// OutboundListener builds `outbound|<service>|<port>` on localAddr.
func OutboundListener(service string, port int, localAddr string) *listenerv3.Listener {
	name := resource.OutboundName(service, port32(port))
	return &listenerv3.Listener{
		Name:         name,
		Address:      address(localAddr),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{tcpProxy(name, name)}}},
	}
}

// OutboundCluster builds `outbound|<service>|<port>` to the server sidecars
// at endpoints, which must present server.
func OutboundCluster(service string, port int, server spiffeid.ID, endpoints ...string) *clusterv3.Cluster {
	name := resource.OutboundName(service, port32(port))
	ts := &corev3.TransportSocket{
		Name: wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{
			Sni:              service,
			CommonTlsContext: commonTLS([]spiffeid.ID{server}),
		})},
	}
	return staticCluster(name, endpoints, ts)
}

func staticCluster(name string, endpoints []string, ts *corev3.TransportSocket) *clusterv3.Cluster {
	lbs := make([]*endpointv3.LbEndpoint, 0, len(endpoints))
	for _, e := range endpoints {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: address(e)},
		}})
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}},
		},
		TransportSocket: ts,
	}
}

// Secrets builds the `svid` secret (chainPEM, with the attested-key
// provider) and the `trust_bundle` secret (ca).
func Secrets(chainPEM []byte, ca *CA) []types.Resource {
	return []types.Resource{
		&tlsv3.Secret{Name: resource.SecretSVID, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: chainPEM}},
			PrivateKeyProvider: &tlsv3.PrivateKeyProvider{ProviderName: resource.KeyProvider},
		}}},
		&tlsv3.Secret{Name: resource.SecretTrustBundle, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca.PEM()}},
		}}},
	}
}

// ForeignSVIDPEM issues an SVID for id with a key the workload does not
// hold, as a control plane that does not know the sidecar's key would.
func ForeignSVIDPEM(ca *CA, id spiffeid.ID) ([]byte, error) {
	c, err := ca.TLSCertificate(id, time.Hour)
	if err != nil {
		return nil, err
	}
	return pemCert(c.Leaf), nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
