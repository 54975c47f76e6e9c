package resource_test

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/attestmesh/attestmesh/proxy/proxytest"
	"github.com/attestmesh/attestmesh/proxy/resource"
)

// The fuzz targets take what the sidecar takes from the network: the bytes of a
// DiscoveryResponse, whose resources go to the parser of the target. They check that the parser
// never panics, that it agrees with the parser it replaced (differential, wire_test.go), and that
// whatever it accepts holds what the sidecar relies on without checking again
// (listener/manager.go, sidecar.go). The seeds are the control plane's real output (the
// golden files of controlplane/xds, which the builder's tests keep current), the test control
// plane's resources, and a few that are refused.

// goldenDir holds the resources that controlplane/xds builds for the seed mesh.
var goldenDir = filepath.Join("..", "..", "controlplane", "xds", "testdata", "golden")

// goldenSeeds returns one DiscoveryResponse per golden file with its resources of the given kind
// ("listeners", "clusters" or "secrets").
func goldenSeeds(f *testing.F, kind, typeURL string, newMsg func() proto.Message) [][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no golden files in %s: %v", goldenDir, err)
	}
	var out [][]byte
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		var doc map[string][]json.RawMessage
		if err := json.Unmarshal(b, &doc); err != nil {
			f.Fatalf("%s: %v", path, err)
		}
		var ms []proto.Message
		for _, raw := range doc[kind] {
			m := newMsg()
			if err := protojson.Unmarshal(raw, m); err != nil {
				f.Fatalf("%s: %v", path, err)
			}
			ms = append(ms, m)
		}
		out = append(out, response(f, typeURL, ms...))
	}
	return out
}

// response returns the bytes of a DiscoveryResponse carrying ms.
func response(f *testing.F, typeURL string, ms ...proto.Message) []byte {
	f.Helper()
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: "1", TypeUrl: typeURL, Nonce: "1"}
	for _, m := range ms {
		a, err := anypb.New(m)
		if err != nil {
			f.Fatal(err)
		}
		resp.Resources = append(resp.Resources, a)
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// resources decodes a fuzzed DiscoveryResponse; ok is false for bytes that are not one (the ADS
// stream's gRPC codec refuses those before the parsers see them).
func resources(data []byte) ([]*anypb.Any, bool) {
	resp := &discoveryv3.DiscoveryResponse{}
	if err := proto.Unmarshal(data, resp); err != nil {
		return nil, false
	}
	return resp.GetResources(), true
}

func FuzzParseListeners(f *testing.F) {
	for _, s := range goldenSeeds(f, "listeners", resource.ListenerType, func() proto.Message { return &listenerv3.Listener{} }) {
		f.Add(s)
	}
	prefix := proxytest.InboundListener("0.0.0.0:8443", client, server)
	f.Add(response(f, resource.ListenerType,
		prefix,
		proxytest.OutboundListener("redis", 6379, "127.0.0.1:6379"),
		proxytest.OutboundListener("db", 5432, "[::1]:5432"),
	))
	f.Add(response(f, resource.ListenerType, proxytest.OutboundListener("redis", 6379, "0.0.0.0:6379")))
	f.Add(response(f, resource.ListenerType, proxytest.LocalCluster("0.0.0.0:8443", "127.0.0.1:6379")))
	// A negative idle timeout, which the pipes would read as none (refused).
	f.Add(response(f, resource.ListenerType, withTCPProxy(f, proxytest.OutboundListener("redis", 6379, "127.0.0.1:6379"),
		func(tp *tcpproxyv3.TcpProxy) { tp.IdleTimeout = &durationpb.Duration{Seconds: -1} })))
	f.Add([]byte{})
	p := pruner(readFields(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, ok := resources(data)
		if !ok {
			return
		}
		differential(t, p, "listeners", res)
		ls, err := resource.ParseListeners(res)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refusal without a reason")
			}
			return
		}
		names, addrs := map[string]bool{}, map[string]bool{}
		for _, l := range ls {
			if l.Name == "" || l.Cluster == "" {
				t.Fatalf("accepted listener without name or cluster: %+v", l)
			}
			if names[l.Name] || addrs[l.Address] {
				t.Fatalf("accepted a second listener %q on %s", l.Name, l.Address)
			}
			names[l.Name], addrs[l.Address] = true, true
			ap, err := netip.ParseAddrPort(l.Address)
			if err != nil {
				t.Fatalf("listener %q: accepted address %q: %v", l.Name, l.Address, err)
			}
			if l.IdleTimeout < 0 {
				t.Fatalf("listener %q: negative idle timeout %v", l.Name, l.IdleTimeout)
			}
			switch l.Direction {
			case resource.Outbound:
				if l.Peers != nil || !ap.Addr().IsLoopback() {
					t.Fatalf("listener %q: plaintext listener on %s with peers %v", l.Name, l.Address, l.Peers)
				}
			case resource.Inbound:
				checkPeers(t, l.Name, l.Peers)
			default:
				t.Fatalf("listener %q: direction %q", l.Name, l.Direction)
			}
		}
	})
}

func FuzzParseClusters(f *testing.F) {
	for _, s := range goldenSeeds(f, "clusters", resource.ClusterType, func() proto.Message { return &clusterv3.Cluster{} }) {
		f.Add(s)
	}
	f.Add(response(f, resource.ClusterType,
		proxytest.OutboundCluster("redis", 6379, server, "10.0.0.1:8443", "[fd00::1]:8443"),
		proxytest.LocalCluster("0.0.0.0:8443", "127.0.0.1:6379"),
	))
	f.Add(response(f, resource.ClusterType, proxytest.LocalCluster("0.0.0.0:8443", "10.0.0.1:6379")))
	// An mTLS cluster whose service has no ready replica yet: accepted without endpoints.
	f.Add(response(f, resource.ClusterType, proxytest.OutboundCluster("redis", 6379, server)))
	f.Add(response(f, resource.ClusterType, proxytest.OutboundListener("redis", 6379, "127.0.0.1:6379")))
	p := pruner(readFields(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, ok := resources(data)
		if !ok {
			return
		}
		differential(t, p, "clusters", res)
		cs, err := resource.ParseClusters(res)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refusal without a reason")
			}
			return
		}
		names := map[string]bool{}
		for _, c := range cs {
			if c.Name == "" || names[c.Name] {
				t.Fatalf("accepted cluster with an empty or repeated name: %q", c.Name)
			}
			names[c.Name] = true
			// An mTLS cluster may have none (no ready replica yet); a plaintext one leads to its app.
			if len(c.Endpoints) == 0 && c.TLS == nil {
				t.Fatalf("cluster %q: plaintext cluster accepted without endpoints", c.Name)
			}
			if c.ConnectTimeout <= 0 {
				t.Fatalf("cluster %q: connect timeout %v", c.Name, c.ConnectTimeout)
			}
			for _, e := range c.Endpoints {
				ap, err := netip.ParseAddrPort(e)
				if err != nil {
					t.Fatalf("cluster %q: accepted endpoint %q: %v", c.Name, e, err)
				}
				if c.TLS == nil && !ap.Addr().IsLoopback() {
					t.Fatalf("cluster %q: plaintext to %s", c.Name, e)
				}
			}
			if c.TLS != nil {
				checkPeers(t, c.Name, &c.TLS.Peers)
			}
		}
	})
}

func FuzzParseSecrets(f *testing.F) {
	for _, s := range goldenSeeds(f, "secrets", resource.SecretType, func() proto.Message { return &tlsv3.Secret{} }) {
		f.Add(s)
	}
	ca, err := proxytest.NewCA("attestmesh.local")
	if err != nil {
		f.Fatal(err)
	}
	chain, err := proxytest.ForeignSVIDPEM(ca, server)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(response(f, resource.SecretType, messages(proxytest.Secrets(chain, ca))...))
	f.Add(response(f, resource.SecretType, &tlsv3.Secret{Name: resource.SecretSVID}))
	p := pruner(readFields(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, ok := resources(data)
		if !ok {
			return
		}
		differential(t, p, "secrets", res)
		ss, err := resource.ParseSecrets(res)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refusal without a reason")
			}
			return
		}
		for _, s := range ss {
			switch s.Name {
			case resource.SecretSVID:
				// sidecar.go reads Chain[0] without checking.
				if len(s.Chain) == 0 || s.CAs != nil {
					t.Fatalf("svid accepted with %d certificates and %d CAs", len(s.Chain), len(s.CAs))
				}
			case resource.SecretTrustBundle:
				if len(s.CAs) == 0 || s.Chain != nil {
					t.Fatalf("trust_bundle accepted with %d CAs and %d certificates", len(s.CAs), len(s.Chain))
				}
			default:
				t.Fatalf("accepted secret %q", s.Name)
			}
		}
	})
}

// checkPeers checks what an accepted TLS context must hold: the two SDS secrets the sidecar
// knows and an authorizer that refuses a SPIFFE ID of a trust domain that no matcher names.
func checkPeers(t *testing.T, name string, p *resource.PeerPolicy) {
	t.Helper()
	if p == nil || p.Authorize == nil || len(p.Matchers) == 0 {
		t.Fatalf("%q: accepted a TLS context without peer policy: %+v", name, p)
	}
	if p.CertSecret != resource.SecretSVID || p.BundleSecret != resource.SecretTrustBundle {
		t.Fatalf("%q: accepted secrets %q and %q", name, p.CertSecret, p.BundleSecret)
	}
	stranger := spiffeid.RequireFromString("spiffe://elsewhere.example/fuzz/stranger")
	if !strings.Contains(strings.Join(p.Matchers, " "), stranger.TrustDomain().Name()) && p.Authorize(stranger, nil) == nil {
		t.Fatalf("%q: matchers %v admit %s", name, p.Matchers, stranger)
	}
}

func messages(rs []types.Resource) []proto.Message {
	out := make([]proto.Message, 0, len(rs))
	for _, r := range rs {
		out = append(out, r)
	}
	return out
}
