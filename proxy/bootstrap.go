package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"

	"github.com/attestmesh/attestmesh/proxy/admin"
)

// Files a real Envoy reads its credentials from, in EnvoyCredentialsDir.
const (
	DefaultEnvoyCredentialsDir = "/run/attestmesh" //nolint:gosec // G101: a directory name, not a credential
	EnvoySVIDFile              = "svid.pem"
	EnvoyKeyFile               = "svid-key.pem"
	EnvoyBundleFile            = "bundle.pem"
	xdsClusterName             = "attestmesh_xds"
)

// The bootstrap's JSON (Envoy's envoy.config.bootstrap.v3.Bootstrap, proto field names), written
// without Envoy's generated types so that the sidecar build links none: the fields are in the
// order protojson prints them (the .proto's), and bootstrap_test.go shows that the output is
// byte for byte what protojson made of the generated types, and that it passes ValidateAll.
type (
	envoyBootstrap struct {
		Node             envoyNode             `json:"node"`
		StaticResources  envoyStaticResources  `json:"static_resources"`
		DynamicResources envoyDynamicResources `json:"dynamic_resources"`
		Admin            envoyAdmin            `json:"admin"`
	}
	envoyNode struct {
		ID            string            `json:"id"`
		Cluster       string            `json:"cluster"`
		Metadata      map[string]string `json:"metadata"`
		UserAgentName string            `json:"user_agent_name"`
	}
	envoyStaticResources struct {
		Clusters []envoyCluster `json:"clusters"`
	}
	envoyCluster struct {
		Name                          string                    `json:"name"`
		Type                          string                    `json:"type"`
		ConnectTimeout                string                    `json:"connect_timeout"`
		LoadAssignment                envoyLoadAssignment       `json:"load_assignment"`
		TypedExtensionProtocolOptions map[string]envoyH2Options `json:"typed_extension_protocol_options"`
		TransportSocket               envoyTransportSocket      `json:"transport_socket"`
	}
	envoyLoadAssignment struct {
		ClusterName string                `json:"cluster_name"`
		Endpoints   []envoyLocalityLbEnds `json:"endpoints"`
	}
	envoyLocalityLbEnds struct {
		LbEndpoints []envoyLbEndpoint `json:"lb_endpoints"`
	}
	envoyLbEndpoint struct {
		Endpoint struct {
			Address envoyAddr `json:"address"`
		} `json:"endpoint"`
	}
	envoyAddr struct {
		SocketAddress struct {
			Address   string `json:"address"`
			PortValue uint16 `json:"port_value"`
		} `json:"socket_address"`
	}
	envoyTransportSocket struct {
		Name        string           `json:"name"`
		TypedConfig envoyUpstreamTLS `json:"typed_config"`
	}
	envoyUpstreamTLS struct {
		Type             string `json:"@type"`
		CommonTLSContext struct {
			TLSParams struct {
				TLSMinimumProtocolVersion string `json:"tls_minimum_protocol_version"`
			} `json:"tls_params"`
			TLSCertificates   []envoyTLSCertificate `json:"tls_certificates"`
			ValidationContext struct {
				TrustedCA                 envoyFile         `json:"trusted_ca"`
				MatchTypedSubjectAltNames []envoySANMatcher `json:"match_typed_subject_alt_names"`
			} `json:"validation_context"`
		} `json:"common_tls_context"`
	}
	envoyTLSCertificate struct {
		CertificateChain envoyFile `json:"certificate_chain"`
		PrivateKey       envoyFile `json:"private_key"`
	}
	envoyFile struct {
		Filename string `json:"filename"`
	}
	envoySANMatcher struct {
		SanType string            `json:"san_type"`
		Matcher map[string]string `json:"matcher"` // exact or prefix
	}
	envoyH2Options struct {
		Type               string `json:"@type"`
		ExplicitHTTPConfig struct {
			HTTP2ProtocolOptions struct{} `json:"http2_protocol_options"`
		} `json:"explicit_http_config"`
	}
	envoyDynamicResources struct {
		LdsConfig envoyADSSource `json:"lds_config"`
		CdsConfig envoyADSSource `json:"cds_config"`
		AdsConfig struct {
			APIType             string `json:"api_type"`
			TransportAPIVersion string `json:"transport_api_version"`
			GrpcServices        []struct {
				EnvoyGrpc struct {
					ClusterName string `json:"cluster_name"`
				} `json:"envoy_grpc"`
			} `json:"grpc_services"`
			SetNodeOnFirstMessageOnly bool `json:"set_node_on_first_message_only"`
		} `json:"ads_config"`
	}
	envoyADSSource struct {
		Ads                struct{} `json:"ads"`
		ResourceAPIVersion string   `json:"resource_api_version"`
	}
	envoyAdmin struct {
		Address envoyAddr `json:"address"`
	}
)

// EnvoyBootstrap returns a JSON bootstrap with which a real Envoy follows
// the same control plane as the sidecar: ADS over gRPC with mTLS to XDSAddr,
// node ID = the workload's SPIFFE ID, node metadata with the config ID. The
// Envoy reads its SVID, key and bundle from files in EnvoyCredentialsDir
// (see docs/envoy.md for how they get there). The bootstrap and the typed
// configs inside it pass ValidateAll (bootstrap_test.go).
func EnvoyBootstrap(cfg Config) ([]byte, error) {
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
	xdsEP, xdsDNS, err := envoyAddress(addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: xDS address: %w", err)
	}
	adminAddr := cfg.AdminAddr
	if adminAddr == "" {
		adminAddr = admin.DefaultAddr
	}
	adminEP, _, err := envoyAddress(adminAddr)
	if err != nil {
		return nil, fmt.Errorf("proxy: admin address: %w", err)
	}
	dir := cfg.EnvoyCredentialsDir
	if dir == "" {
		dir = DefaultEnvoyCredentialsDir
	}
	file := func(name string) envoyFile { return envoyFile{Filename: filepath.Join(dir, name)} }

	san := envoySANMatcher{SanType: "URI", Matcher: map[string]string{"exact": serverID}}
	if cfg.XDSAnyMember {
		san.Matcher = map[string]string{"prefix": id.TrustDomain().IDString() + "/"}
	}
	utc := envoyUpstreamTLS{Type: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"}
	utc.CommonTLSContext.TLSParams.TLSMinimumProtocolVersion = "TLSv1_3"
	utc.CommonTLSContext.TLSCertificates = []envoyTLSCertificate{{CertificateChain: file(EnvoySVIDFile), PrivateKey: file(EnvoyKeyFile)}}
	utc.CommonTLSContext.ValidationContext.TrustedCA = file(EnvoyBundleFile)
	utc.CommonTLSContext.ValidationContext.MatchTypedSubjectAltNames = []envoySANMatcher{san}
	const h2Name = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	discovery := "STATIC"
	if xdsDNS {
		discovery = "STRICT_DNS"
	}
	var ep envoyLbEndpoint
	ep.Endpoint.Address = xdsEP
	b := envoyBootstrap{
		Node: envoyNode{
			ID:            id.String(),
			Cluster:       cfg.ConfigID,
			Metadata:      map[string]string{"config_id": cfg.ConfigID},
			UserAgentName: "attestmesh-sidecar",
		},
		StaticResources: envoyStaticResources{Clusters: []envoyCluster{{
			Name:           xdsClusterName,
			Type:           discovery,
			ConnectTimeout: "5s",
			LoadAssignment: envoyLoadAssignment{
				ClusterName: xdsClusterName,
				Endpoints:   []envoyLocalityLbEnds{{LbEndpoints: []envoyLbEndpoint{ep}}},
			},
			TransportSocket:               envoyTransportSocket{Name: "envoy.transport_sockets.tls", TypedConfig: utc},
			TypedExtensionProtocolOptions: map[string]envoyH2Options{h2Name: {Type: "type.googleapis.com/" + h2Name}},
		}}},
		DynamicResources: envoyDynamicResources{
			LdsConfig: envoyADSSource{ResourceAPIVersion: "V3"},
			CdsConfig: envoyADSSource{ResourceAPIVersion: "V3"},
		},
		Admin: envoyAdmin{Address: adminEP},
	}
	ads := &b.DynamicResources.AdsConfig
	ads.APIType = "GRPC"
	ads.GrpcServices = make([]struct {
		EnvoyGrpc struct {
			ClusterName string `json:"cluster_name"`
		} `json:"envoy_grpc"`
	}, 1)
	ads.GrpcServices[0].EnvoyGrpc.ClusterName = xdsClusterName
	ads.SetNodeOnFirstMessageOnly = true
	ads.TransportAPIVersion = "V3"

	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(b); err != nil {
		return nil, fmt.Errorf("proxy: envoy bootstrap: %w", err)
	}
	return out.Bytes(), nil
}

// envoyAddress converts host:port; dns reports a host name (STRICT_DNS).
func envoyAddress(hostport string) (addr envoyAddr, dns bool, err error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return addr, false, fmt.Errorf("%q: %w", hostport, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return addr, false, fmt.Errorf("%q: port: %w", hostport, err)
	}
	_, perr := netip.ParseAddr(host)
	addr.SocketAddress.Address = host
	addr.SocketAddress.PortValue = uint16(port)
	return addr, perr != nil, nil
}
