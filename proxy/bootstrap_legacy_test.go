package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/attestmesh/attestmesh/proxy/admin"
)

// legacyEnvoyBootstrap is EnvoyBootstrap as it was built with go-control-plane's generated
// types, kept to show that the hand-written JSON is byte for byte the same.
// It returns a JSON bootstrap with which a real Envoy follows
// the same control plane as the sidecar: ADS over gRPC with mTLS to XDSAddr,
// node ID = the workload's SPIFFE ID, node metadata with the config ID. The
// Envoy reads its SVID, key and bundle from files in EnvoyCredentialsDir
// (see docs/envoy.md for how they get there). The bootstrap and the typed
// configs inside it pass ValidateAll.
func legacyEnvoyBootstrap(cfg Config) ([]byte, error) {
	id, err := cfg.SPIFFEID()
	if err != nil {
		return nil, err
	}
	serverID := cfg.XDSServerID
	if serverID == "" {
		serverID = id.TrustDomain().IDString() + ControlPlanePath
	}
	addr := cfg.XDSAddr
	if addr == "" {
		addr = DefaultXDSAddr
	}
	xdsEP, xdsDNS, err := legacyEnvoyAddress(addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: xDS address: %w", err)
	}
	adminAddr := cfg.AdminAddr
	if adminAddr == "" {
		adminAddr = admin.DefaultAddr
	}
	adminEP, _, err := legacyEnvoyAddress(adminAddr)
	if err != nil {
		return nil, fmt.Errorf("proxy: admin address: %w", err)
	}
	dir := cfg.EnvoyCredentialsDir
	if dir == "" {
		dir = DefaultEnvoyCredentialsDir
	}
	file := func(name string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: filepath.Join(dir, name)}}
	}

	san := &tlsv3.SubjectAltNameMatcher{
		SanType: tlsv3.SubjectAltNameMatcher_URI,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: serverID}},
	}
	if cfg.XDSAnyMember {
		san.Matcher = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: id.TrustDomain().IDString() + "/"}}
	}
	utc := &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
			TlsCertificates: []*tlsv3.TlsCertificate{{
				CertificateChain: file(EnvoySVIDFile),
				PrivateKey:       file(EnvoyKeyFile),
			}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:                 file(EnvoyBundleFile),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san},
			}},
		},
	}
	h2 := &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	}
	for _, m := range []interface{ ValidateAll() error }{utc, h2} {
		if err := m.ValidateAll(); err != nil {
			return nil, fmt.Errorf("proxy: envoy bootstrap: %w", err)
		}
	}
	utcAny, err := anypb.New(utc)
	if err != nil {
		return nil, fmt.Errorf("proxy: envoy bootstrap: %w", err)
	}
	h2Any, err := anypb.New(h2)
	if err != nil {
		return nil, fmt.Errorf("proxy: envoy bootstrap: %w", err)
	}
	discovery := clusterv3.Cluster_STATIC
	if xdsDNS {
		discovery = clusterv3.Cluster_STRICT_DNS
	}
	adsSource := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{
			Id:            id.String(),
			Cluster:       cfg.ConfigID,
			UserAgentName: "attestmesh-sidecar",
			Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
				"config_id": structpb.NewStringValue(cfg.ConfigID),
			}},
		},
		Admin: &bootstrapv3.Admin{Address: adminEP},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   corev3.ApiConfigSource_GRPC,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: xdsClusterName}},
				}},
			},
			LdsConfig: adsSource,
			CdsConfig: adsSource,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{{
				Name:                 xdsClusterName,
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discovery},
				ConnectTimeout:       durationpb.New(5e9),
				TypedExtensionProtocolOptions: map[string]*anypb.Any{
					"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2Any,
				},
				LoadAssignment: &endpointv3.ClusterLoadAssignment{
					ClusterName: xdsClusterName,
					Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
						HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: xdsEP}},
					}}}},
				},
				TransportSocket: &corev3.TransportSocket{
					Name:       wellknown.TransportSocketTLS,
					ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: utcAny},
				},
			}},
		},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("proxy: envoy bootstrap: %w", err)
	}
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(proto.Message(b))
	if err != nil {
		return nil, fmt.Errorf("proxy: envoy bootstrap: %w", err)
	}
	// protojson varies its whitespace on purpose; print a stable form.
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, fmt.Errorf("proxy: envoy bootstrap: %w", err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("proxy: envoy bootstrap: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// envoyAddress converts host:port; dns reports a host name (STRICT_DNS).
func legacyEnvoyAddress(hostport string) (addr *corev3.Address, dns bool, err error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, false, fmt.Errorf("%q: %w", hostport, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, false, fmt.Errorf("%q: port: %w", hostport, err)
	}
	_, perr := netip.ParseAddr(host)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}, perr != nil, nil
}
