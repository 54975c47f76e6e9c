package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/attestmesh/attestmesh/proxy/proxytest"
	sidecar "github.com/attestmesh/attestmesh/proxy/resource"
)

// adsEnv is a Server serving on 127.0.0.1 with a test CA, and client certificates for the
// seed mesh's services and one without a SPIFFE ID.
type adsEnv struct {
	srv    *Server
	addr   string
	ca     *testCA
	roots  *x509.CertPool
	reg    *prometheus.Registry
	logs   *proxytest.SyncBuffer
	leaves map[spiffeid.ID]*x509.Certificate
	certs  map[string]tls.Certificate // "flask", "redis", "no-spiffe-id"
}

func startADS(t *testing.T) *adsEnv {
	t.Helper()
	return startADSWith(t, nil)
}

// startADSWith is startADS with configure (when not nil) called on the Server before it serves.
func startADSWith(t *testing.T, configure func(*Server)) *adsEnv {
	t.Helper()
	now := time.Now()
	from, until := now.Add(-time.Minute), now.Add(time.Hour)
	ca := newTestCA(t, from, until)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	srvLeaf, srvKey := ca.issue(t, spiffeid.RequireFromPath(td, "/attestmesh/controlplane"), "xds.attestmesh.local", from, until)
	e := &adsEnv{
		ca: ca, roots: roots, reg: prometheus.NewRegistry(), logs: &proxytest.SyncBuffer{},
		leaves: map[spiffeid.ID]*x509.Certificate{}, certs: map[string]tls.Certificate{},
	}
	for name, id := range map[string]spiffeid.ID{"flask": flaskID, "redis": redisID} {
		leaf, key := ca.issue(t, id, "", from, until)
		e.leaves[id] = leaf
		e.certs[name] = tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	}
	leaf, key := ca.issue(t, spiffeid.ID{}, "flask.example", from, until)
	e.certs["no-spiffe-id"] = tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}

	srv, err := New(Config{
		Logger:  slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TLS:     &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvLeaf.Raw}, PrivateKey: srvKey}}, ClientCAs: roots},
		Metrics: e.reg,
	})
	require.NoError(t, err)
	if configure != nil {
		configure(srv)
	}
	e.srv = srv
	require.NoError(t, srv.Update(flaskRedis(), []*x509.Certificate{ca.cert}, e.svids()))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context was cancelled")
		}
	})
	return e
}

func (e *adsEnv) svids() map[spiffeid.ID][]*x509.Certificate {
	out := map[spiffeid.ID][]*x509.Certificate{}
	for id, leaf := range e.leaves {
		out[id] = []*x509.Certificate{leaf}
	}
	return out
}

// dial opens an ADS stream presenting cert.
func (e *adsEnv) dial(t *testing.T, cert string) discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	stream, err := e.open(t, cert)
	require.NoError(t, err)
	return stream
}

// open opens an ADS stream presenting cert (none when empty).
func (e *adsEnv) open(t *testing.T, cert string) (discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: e.roots, ServerName: "xds.attestmesh.local", MinVersion: tls.VersionTLS13}
	if cert != "" {
		cfg.Certificates = []tls.Certificate{e.certs[cert]}
	}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
}

func request(nodeID, typeURL string, names ...string) *discovery.DiscoveryRequest {
	return &discovery.DiscoveryRequest{Node: &core.Node{Id: nodeID}, TypeUrl: typeURL, ResourceNames: names}
}

func fetch(t *testing.T, stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient,
	req *discovery.DiscoveryRequest,
) (*discovery.DiscoveryResponse, error) {
	t.Helper()
	// Send reports io.EOF when the server already ended the stream; Recv has its status.
	if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return stream.Recv()
}

func resourceNames(t *testing.T, resp *discovery.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range resp.GetResources() {
		m, err := a.UnmarshalNew()
		require.NoError(t, err)
		out = append(out, resourceName(m))
	}
	return out
}

// secretPEM returns the inline PEM of the named secret of a secrets response.
func secretPEM(t *testing.T, resp *discovery.DiscoveryResponse, name string) []byte {
	t.Helper()
	for _, a := range resp.GetResources() {
		var s tlsv3.Secret
		require.NoError(t, a.UnmarshalTo(&s))
		if s.GetName() != name {
			continue
		}
		if c := s.GetTlsCertificate(); c != nil {
			return c.GetCertificateChain().GetInlineBytes()
		}
		return s.GetValidationContext().GetTrustedCa().GetInlineBytes()
	}
	t.Fatalf("secret %q not in response", name)
	return nil
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func TestADSServesOnlyTheNodesOwnResources(t *testing.T) {
	e := startADS(t)
	tests := []struct {
		name      string
		cert      string
		nodeID    string
		id        spiffeid.ID
		listeners []string
		clusters  []string
	}{
		{"flask with its node.id", "flask", flaskID.String(), flaskID, []string{"outbound|redis|16379"}, []string{"outbound|redis|16379"}},
		{"flask without node.id", "flask", "", flaskID, []string{"outbound|redis|16379"}, []string{"outbound|redis|16379"}},
		{"redis with its node.id", "redis", redisID.String(), redisID, []string{"inbound|16379"}, []string{"local|16379"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream := e.dial(t, tt.cert)
			lds, err := fetch(t, stream, request(tt.nodeID, resource.ListenerType))
			require.NoError(t, err)
			assert.Equal(t, tt.listeners, resourceNames(t, lds))
			cds, err := fetch(t, stream, request(tt.nodeID, resource.ClusterType))
			require.NoError(t, err)
			assert.Equal(t, tt.clusters, resourceNames(t, cds))
			sds, err := fetch(t, stream, request(tt.nodeID, resource.SecretType, sidecar.SecretSVID, sidecar.SecretTrustBundle))
			require.NoError(t, err)
			assert.ElementsMatch(t, []string{sidecar.SecretSVID, sidecar.SecretTrustBundle}, resourceNames(t, sds))
			assert.Equal(t, pemOf(e.leaves[tt.id]), secretPEM(t, sds, sidecar.SecretSVID), "svid must be the node's own")
			assert.Equal(t, pemOf(e.ca.cert), secretPEM(t, sds, sidecar.SecretTrustBundle))
		})
	}
	assert.InDelta(t, 3, value(t, e.srv.metrics.pushes.WithLabelValues(resource.ListenerType)), 0)
	assert.InDelta(t, 3, value(t, e.srv.metrics.pushes.WithLabelValues(resource.SecretType)), 0)
	assert.Equal(t, uint64(9), metricValue(t, e.srv.metrics.latency).GetHistogram().GetSampleCount())
	families, err := e.reg.Gather()
	require.NoError(t, err)
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestADSNamedRequestForAnotherNodesResource(t *testing.T) {
	e := startADS(t)
	stream := e.dial(t, "flask")
	// Asking by name for redis's listener yields only what flask's snapshot holds.
	lds, err := fetch(t, stream, request(flaskID.String(), resource.ListenerType, "inbound|16379", "outbound|redis|16379"))
	require.NoError(t, err)
	assert.Equal(t, []string{"outbound|redis|16379"}, resourceNames(t, lds))
}

func TestADSRefusals(t *testing.T) {
	e := startADS(t)
	tests := []struct {
		name       string
		cert       string
		nodeID     string
		code       codes.Code
		msg        string
		log        string
		refusedFor string
	}{
		{
			name: "node.id of another service", cert: "flask", nodeID: redisID.String(), code: codes.PermissionDenied,
			msg:        `xds: node.id "spiffe://attestmesh.local/flask-redis/redis" does not match the SPIFFE ID "spiffe://attestmesh.local/flask-redis/flask" of the client certificate`,
			log:        `claimed_node_id=spiffe://attestmesh.local/flask-redis/redis`,
			refusedFor: refusedNodeIDMismatch,
		},
		{
			name: "client certificate without a SPIFFE ID", cert: "no-spiffe-id", nodeID: flaskID.String(), code: codes.Unauthenticated,
			msg:        "xds: client certificate is not an X.509-SVID",
			log:        `msg="stream refused" subsystem=xds`,
			refusedFor: refusedNoSVID,
		},
		{name: "no client certificate", nodeID: flaskID.String(), code: codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := e.open(t, tt.cert)
			if err == nil {
				_, err = fetch(t, stream, request(tt.nodeID, resource.ListenerType))
			}
			require.Error(t, err)
			assert.Equal(t, tt.code, status.Code(err), "%v", err)
			assert.Contains(t, status.Convert(err).Message(), tt.msg)
			assert.Contains(t, e.logs.String(), tt.log)
			if tt.refusedFor != "" {
				assert.InDelta(t, 1, value(t, e.srv.metrics.refused.WithLabelValues(tt.refusedFor)), 0)
			}
		})
	}
	assert.InDelta(t, 0, value(t, e.srv.metrics.pushes.WithLabelValues(resource.ListenerType)), 0)
	assert.Eventually(t, func() bool { return value(t, e.srv.metrics.connected) == 0 },
		5*time.Second, 10*time.Millisecond, "refused streams must not count as connected")
}

func TestADSNACKAndPushOnUpdate(t *testing.T) {
	e := startADS(t)
	stream := e.dial(t, "flask")
	node := flaskID.String()
	lds, err := fetch(t, stream, request(node, resource.ListenerType))
	require.NoError(t, err)
	sds, err := fetch(t, stream, request(node, resource.SecretType, sidecar.SecretSVID, sidecar.SecretTrustBundle))
	require.NoError(t, err)
	require.InDelta(t, 1, value(t, e.srv.metrics.connected), 0)

	// NACK the listeners, ACK the secrets.
	nack := request(node, resource.ListenerType)
	nack.ResponseNonce = lds.GetNonce()
	nack.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "listener outbound|redis|16379: port in use"}
	require.NoError(t, stream.Send(nack))
	ack := request(node, resource.SecretType, sidecar.SecretSVID, sidecar.SecretTrustBundle)
	ack.VersionInfo, ack.ResponseNonce = sds.GetVersionInfo(), sds.GetNonce()
	require.NoError(t, stream.Send(ack))
	require.Eventually(t, func() bool {
		return value(t, e.srv.metrics.nacks.WithLabelValues(resource.ListenerType)) == 1
	}, 5*time.Second, 10*time.Millisecond)
	assert.Contains(t, e.logs.String(), `error="listener outbound|redis|16379: port in use"`)

	// Rotating flask's SVID pushes only flask's secrets, with the new certificate.
	now := time.Now()
	leaf, _ := e.ca.issue(t, flaskID, "", now.Add(-time.Minute), now.Add(time.Hour))
	e.leaves[flaskID] = leaf
	require.NoError(t, e.srv.Update(flaskRedis(), []*x509.Certificate{e.ca.cert}, e.svids()))
	// The NACK carried no accepted version, so the listeners may be sent again first, unchanged.
	var pushed *discovery.DiscoveryResponse
	for pushed.GetTypeUrl() != resource.SecretType {
		pushed, err = stream.Recv()
		require.NoError(t, err)
		if pushed.GetTypeUrl() == resource.ListenerType {
			assert.Equal(t, lds.GetVersionInfo(), pushed.GetVersionInfo())
		}
	}
	assert.NotEqual(t, sds.GetVersionInfo(), pushed.GetVersionInfo())
	assert.Equal(t, pemOf(leaf), secretPEM(t, pushed, sidecar.SecretSVID))
}

func metricValue(t *testing.T, m prometheus.Metric) *dto.Metric {
	t.Helper()
	var out dto.Metric
	require.NoError(t, m.Write(&out))
	return &out
}

// value is the value of a counter or gauge.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	d := metricValue(t, m)
	if d.GetCounter() != nil {
		return d.GetCounter().GetValue()
	}
	return d.GetGauge().GetValue()
}

// A sidecar whose service leaves the mesh (its registration was removed, or left out because
// its registrant lost its rights) is pushed an empty configuration: what it served stops.
func TestADSServiceLeavingTheMeshGetsNothing(t *testing.T) {
	e := startADS(t)
	stream := e.dial(t, "flask")
	node := flaskID.String()
	lds, err := fetch(t, stream, request(node, resource.ListenerType))
	require.NoError(t, err)
	require.NotEmpty(t, lds.GetResources())

	ack := request(node, resource.ListenerType)
	ack.VersionInfo, ack.ResponseNonce = lds.GetVersionInfo(), lds.GetNonce()
	require.NoError(t, stream.Send(ack))
	require.NoError(t, e.srv.Update(&Mesh{TrustDomain: flaskRedis().TrustDomain}, []*x509.Certificate{e.ca.cert}, e.svids()))
	got := make(chan *discovery.DiscoveryResponse, 1)
	go func() {
		r, _ := stream.Recv()
		got <- r
	}()
	var pushed *discovery.DiscoveryResponse
	select {
	case pushed = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("nothing pushed: the sidecar would keep serving the listeners of a mesh it left")
	}
	assert.Equal(t, resource.ListenerType, pushed.GetTypeUrl())
	assert.NotEqual(t, lds.GetVersionInfo(), pushed.GetVersionInfo())
	assert.Empty(t, pushed.GetResources(), "no listeners left")
}
