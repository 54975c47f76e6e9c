package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	sidecar "github.com/attestmesh/attestmesh/proxy/resource"
)

// The state-of-the-world protocol as go-control-plane's snapshot cache in ADS mode answers it,
// which the streams of sotw.go keep.

type adsStream = discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient

// responses receives the responses of stream from now on; it ends when the stream does.
func responses(stream adsStream) <-chan *discovery.DiscoveryResponse {
	out := make(chan *discovery.DiscoveryResponse, 16)
	go func() {
		defer close(out)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			out <- r
		}
	}()
	return out
}

// recvWithin returns the next response from responses, or nil if none comes within d.
func recvWithin(t *testing.T, responses <-chan *discovery.DiscoveryResponse, d time.Duration) *discovery.DiscoveryResponse {
	t.Helper()
	select {
	case r, ok := <-responses:
		require.True(t, ok, "stream ended")
		return r
	case <-time.After(d):
		return nil
	}
}

func ackOf(node string, resp *discovery.DiscoveryResponse, names ...string) *discovery.DiscoveryRequest {
	req := request(node, resp.GetTypeUrl(), names...)
	req.VersionInfo, req.ResponseNonce = resp.GetVersionInfo(), resp.GetNonce()
	return req
}

// rotateSVID issues id a new SVID and publishes it: only id's secrets change.
func (e *adsEnv) rotateSVID(t *testing.T, id spiffeid.ID) *x509.Certificate {
	t.Helper()
	now := time.Now()
	leaf, _ := e.ca.issue(t, id, "", now.Add(-time.Minute), now.Add(time.Hour))
	e.leaves[id] = leaf
	require.NoError(t, e.srv.Update(flaskRedis(), []*x509.Certificate{e.ca.cert}, e.svids()))
	return leaf
}

func TestADSAnswers(t *testing.T) {
	secrets := []string{sidecar.SecretSVID, sidecar.SecretTrustBundle}
	node := flaskID.String()
	tests := []struct {
		name string
		// first is sent on a new stream of flask after its listeners were fetched (lds);
		// answered says whether it is answered at once.
		first    func(lds *discovery.DiscoveryResponse) *discovery.DiscoveryRequest
		answered bool
	}{
		{"ACK of the current version: waits for a change", func(lds *discovery.DiscoveryResponse) *discovery.DiscoveryRequest {
			return ackOf(node, lds)
		}, false},
		{"NACK: the current version again", func(lds *discovery.DiscoveryResponse) *discovery.DiscoveryRequest {
			nack := ackOf(node, lds)
			nack.VersionInfo = ""
			return nack
		}, true},
		{"stale nonce: ignored", func(lds *discovery.DiscoveryResponse) *discovery.DiscoveryRequest {
			stale := ackOf(node, lds)
			stale.VersionInfo, stale.ResponseNonce = "", "older"
			return stale
		}, false},
		{"secrets named in full: answered", func(*discovery.DiscoveryResponse) *discovery.DiscoveryRequest {
			return request(node, resource.SecretType, secrets...)
		}, true},
		{"secrets named in part: not answered (ADS: a request names every resource of its type)", func(*discovery.DiscoveryResponse) *discovery.DiscoveryRequest {
			return request(node, resource.SecretType, sidecar.SecretSVID)
		}, false},
		{"a type the snapshot does not hold: waits", func(*discovery.DiscoveryResponse) *discovery.DiscoveryRequest {
			return request(node, resource.EndpointType)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startADS(t)
			stream := e.dial(t, "flask")
			lds, err := fetch(t, stream, request(node, resource.ListenerType))
			require.NoError(t, err)
			require.NoError(t, stream.Send(tt.first(lds)))
			got := recvWithin(t, responses(stream), 300*time.Millisecond)
			if !tt.answered {
				assert.Nil(t, got, "answered: %v", got)
				return
			}
			require.NotNil(t, got)
			assert.Equal(t, tt.first(lds).GetTypeUrl(), got.GetTypeUrl())
			assert.NotEqual(t, lds.GetNonce(), got.GetNonce(), "every response has a nonce of its own")
		})
	}
}

// Requests that would make the control plane keep what a sidecar sends are not kept: a type no
// snapshot holds leaves no state on the stream, and a request naming more than
// maxResourceNames resources is refused for that reason.
func TestADSRequestsKeepNothingUnbounded(t *testing.T) {
	e := startADS(t)
	node := flaskID.String()
	stream := e.dial(t, "flask")
	for i := range 50 {
		require.NoError(t, stream.Send(request(node, fmt.Sprintf("type.example/x%d", i), "a", "b")))
	}
	_, err := fetch(t, stream, request(node, resource.ListenerType))
	require.NoError(t, err, "the stream still serves")
	e.srv.streamsMu.Lock()
	var subs []string
	for _, st := range e.srv.streams {
		if st.sotw != nil {
			st.sotw.mu.Lock()
			for _, sub := range st.sotw.subs {
				subs = append(subs, sub.typeURL)
			}
			st.sotw.mu.Unlock()
		}
	}
	e.srv.streamsMu.Unlock()
	assert.Equal(t, []string{resource.ListenerType}, subs, "only the served type is kept")

	names := make([]string, maxResourceNames+1)
	for i := range names {
		names[i] = strconv.Itoa(i)
	}
	_, err = fetch(t, stream, request(node, resource.SecretType, names...))
	require.Error(t, err)
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "names 1025 resources, at most 1024")
}

// A stream that holds the current version and has been sent nothing yet (a sidecar that
// reconnected) is answered: go-control-plane answers when the snapshot holds resources that the
// stream was not sent.
func TestADSReconnectWithTheCurrentVersion(t *testing.T) {
	e := startADS(t)
	node := flaskID.String()
	first, err := fetch(t, e.dial(t, "flask"), request(node, resource.ListenerType))
	require.NoError(t, err)
	again := request(node, resource.ListenerType)
	again.VersionInfo = first.GetVersionInfo()
	got, err := fetch(t, e.dial(t, "flask"), again)
	require.NoError(t, err)
	assert.Equal(t, first.GetVersionInfo(), got.GetVersionInfo())
	assert.True(t, proto.Equal(first.GetResources()[0], got.GetResources()[0]))
}

// Every stream of a node (the replicas of a service) is pushed the node's change, the streams
// of other nodes are not, and a stream that asked before its node had a snapshot is answered
// when one is published.
func TestADSPushReachesEveryStreamOfTheNode(t *testing.T) {
	e := startADS(t)
	secrets := []string{sidecar.SecretSVID, sidecar.SecretTrustBundle}
	lateID := spiffeid.RequireFromPath(td, "/flask-redis/late")
	now := time.Now()
	lateLeaf, lateKey := e.ca.issue(t, lateID, "", now.Add(-time.Minute), now.Add(time.Hour))
	e.certs["late"] = tls.Certificate{Certificate: [][]byte{lateLeaf.Raw}, PrivateKey: lateKey, Leaf: lateLeaf}

	late := e.dial(t, "late")
	require.NoError(t, late.Send(request(lateID.String(), resource.SecretType, secrets...)))
	lateResponses := responses(late)
	assert.Nil(t, recvWithin(t, lateResponses, 200*time.Millisecond), "no snapshot yet, nothing to answer")

	tests := []struct {
		cert   string
		id     spiffeid.ID
		pushed bool
	}{
		{"flask", flaskID, true},
		{"flask", flaskID, true},
		{"redis", redisID, false},
	}
	streams := make([]adsStream, len(tests))
	for i, tt := range tests {
		streams[i] = e.dial(t, tt.cert)
		sds, err := fetch(t, streams[i], request(tt.id.String(), resource.SecretType, secrets...))
		require.NoError(t, err)
		require.NoError(t, streams[i].Send(ackOf(tt.id.String(), sds, secrets...)))
	}
	leaf := e.rotateSVID(t, flaskID)
	for i, tt := range tests {
		got := recvWithin(t, responses(streams[i]), time.Second)
		if !tt.pushed {
			assert.Nil(t, got, "stream %d of %s", i, tt.cert)
			continue
		}
		require.NotNil(t, got, "stream %d of %s", i, tt.cert)
		assert.Equal(t, pemOf(leaf), secretPEM(t, got, sidecar.SecretSVID))
	}

	e.leaves[lateID] = lateLeaf
	require.NoError(t, e.srv.Update(flaskRedis(), []*x509.Certificate{e.ca.cert}, e.svids()))
	got := recvWithin(t, lateResponses, time.Second)
	require.NotNil(t, got, "published: the waiting request is answered")
	assert.Equal(t, pemOf(lateLeaf), secretPEM(t, got, sidecar.SecretSVID))
}

func TestADSRequestWithoutTypeURL(t *testing.T) {
	e := startADS(t)
	_, err := fetch(t, e.dial(t, "flask"), request(flaskID.String(), ""))
	require.Error(t, err)
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
}

// Streams that end while their node's changes are pushed: no push sends on a stream whose
// handler returned (run with -race), and the server stops cleanly.
func TestADSPushWhileStreamsEnd(t *testing.T) {
	e := startADS(t)
	node := flaskID.String()
	secrets := []string{sidecar.SecretSVID, sidecar.SecretTrustBundle}
	const streams = 16
	var wg sync.WaitGroup
	var cancels []context.CancelFunc
	for i := range streams {
		cfg := &tls.Config{RootCAs: e.roots, ServerName: "xds.attestmesh.local", MinVersion: tls.VersionTLS13,
			Certificates: []tls.Certificate{e.certs["flask"]}}
		conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		ctx, cancel := context.WithCancel(t.Context())
		cancels = append(cancels, cancel)
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		require.NoError(t, err)
		sds, err := fetch(t, stream, request(node, resource.SecretType, secrets...))
		require.NoError(t, err)
		require.NoError(t, stream.Send(ackOf(node, sds, secrets...)))
		wg.Go(func() {
			defer cancel()
			for range i { // stream i takes up to i pushes, then ends
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				if err := stream.Send(ackOf(node, resp, secrets...)); err != nil {
					return
				}
			}
		})
	}
	for range streams {
		e.rotateSVID(t, flaskID)
	}
	time.Sleep(50 * time.Millisecond)
	for _, cancel := range cancels { // the streams still waiting for a push
		cancel()
	}
	wg.Wait()
	assert.Eventually(t, func() bool { return value(t, e.srv.metrics.connected) == 0 },
		5*time.Second, 10*time.Millisecond, "every stream ended")
}

// withPorts is flaskRedis with flask connecting to n more ports of redis: flask's clusters and
// listeners are large.
func withPorts(n int) *Mesh {
	m := flaskRedis()
	for i := range n {
		port := uint32(20000 + i) //nolint:gosec // G115: small
		m.Services[1].Ports = append(m.Services[1].Ports, Port{Port: port, AppPort: port + 10000, AllowedPeers: []string{"flask"}})
		m.Services[0].Connects = append(m.Services[0].Connects, Connect{
			Service: "redis", Port: port, LocalPort: port + 20000, Endpoints: []string{fmt.Sprintf("10.0.0.12:%d", port)},
		})
	}
	return m
}

// sotwStreams returns the server's state-of-the-world streams.
func sotwStreams(srv *Server) []*sotwStream {
	srv.streamsMu.Lock()
	defer srv.streamsMu.Unlock()
	var out []*sotwStream
	for _, st := range srv.streams {
		if st.sotw != nil {
			out = append(out, st.sotw)
		}
	}
	return out
}

// A sidecar that stops reading (grants no more HTTP/2 flow-control window) blocks the Send of
// its responses, never its stream's handler: the handler still receives, and returns when the
// sidecar half-closes or sends a request that is refused, instead of holding the stream (its
// goroutine, its state) until the connection dies, which keepalive pings answered by the
// sidecar put off forever.
func TestADSSidecarThatStopsReadingDoesNotWedgeItsStream(t *testing.T) {
	const window = 64 << 10 // gRPC's minimum
	tests := []struct {
		name string
		then func(adsStream) error
		code codes.Code
		msg  string
	}{
		{"the sidecar half-closes", func(s adsStream) error { return s.CloseSend() }, codes.OK, ""},
		{"the sidecar sends a request that is refused", func(s adsStream) error {
			return s.Send(request(redisID.String(), resource.ListenerType))
		}, codes.PermissionDenied, "does not match the SPIFFE ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startADS(t)
			require.NoError(t, e.srv.Update(withPorts(1000), []*x509.Certificate{e.ca.cert}, e.svids()))
			// The clusters response fills the stream's flow-control window and gRPC's write
			// quota behind it (another window), so the listeners' Send blocks.
			w := e.srv.current(flaskID).wireOf(resource.ClusterType)
			size := 0
			for _, a := range w.anys {
				size += proto.Size(a)
			}
			require.Greater(t, size, 3*window, "the clusters response must exceed two windows")

			cfg := &tls.Config{RootCAs: e.roots, ServerName: "xds.attestmesh.local", MinVersion: tls.VersionTLS13,
				Certificates: []tls.Certificate{e.certs["flask"]}}
			conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
				grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
			require.NoError(t, err)
			t.Cleanup(func() { _ = conn.Close() })
			stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
			require.NoError(t, err)
			node := flaskID.String()
			require.NoError(t, stream.Send(request(node, resource.ClusterType)))
			require.NoError(t, stream.Send(request(node, resource.ListenerType)))
			require.Eventually(t, func() bool {
				return value(t, e.srv.metrics.pushes.WithLabelValues(resource.ClusterType)) == 1
			}, 5*time.Second, 10*time.Millisecond, "clusters answered")
			time.Sleep(200 * time.Millisecond) // the next Send blocks meanwhile
			var sending bool                   // a Send is blocked: the test shows what it claims
			for _, st := range sotwStreams(e.srv) {
				sending = sending || st.pushes.Load() != 0
			}

			require.NoError(t, tt.then(stream))
			require.Eventually(t, func() bool { return value(t, e.srv.metrics.connected) == 0 },
				5*time.Second, 10*time.Millisecond, "the stream's handler did not return: a blocked Send wedged it")
			assert.True(t, sending, "no Send was blocked when the sidecar acted")
			// Reading again, the sidecar gets what was sent and then the stream's status.
			for err == nil {
				_, err = stream.Recv()
			}
			if tt.code == codes.OK {
				require.ErrorIs(t, err, io.EOF)
				return
			}
			assert.Equal(t, tt.code, status.Code(err), "%v", err)
			assert.Contains(t, status.Convert(err).Message(), tt.msg)
		})
	}
}

// A stream's requests beyond its rate wait: a client that repeats a request the control plane
// answers each time (an old version with the current nonce) gets no more responses than the
// limit allows, and none of its requests is dropped. Noise on the machine only slows the client,
// so the bound holds on any machine.
func TestADSRequestRateIsLimited(t *testing.T) {
	const limit, burst = 5, 5
	e := startADSWith(t, func(s *Server) { s.requestRate, s.requestBurst = limit, burst })
	node := flaskID.String()
	stream := e.dial(t, "flask")
	got := responses(stream)
	start := time.Now()
	require.NoError(t, stream.Send(request(node, resource.ListenerType)))
	answered := 0
	// For a second at least, and beyond the burst.
	for time.Since(start) < time.Second || answered <= burst+limit {
		resp := recvWithin(t, got, 5*time.Second)
		require.NotNil(t, resp, "request %d was not answered", answered+1)
		answered++
		again := ackOf(node, resp)
		again.VersionInfo = ""
		require.NoError(t, stream.Send(again))
	}
	elapsed := time.Since(start)
	assert.LessOrEqual(t, answered, burst+int(limit*elapsed.Seconds())+1,
		"answered %d requests in %v: the limit did not engage", answered, elapsed)
	assert.Contains(t, e.logs.String(), "request rate exceeded, waiting")
}

// TestSotWOnAGRPCServer: adsServer serves state-of-the-world streams on a gRPC-Go server too,
// on the handler's goroutine (Serve serves them as h2 events), with the same responses and
// refusals.
func TestSotWOnAGRPCServer(t *testing.T) {
	e := startADS(t)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(e.srv.tls)))
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, &adsServer{s: e.srv})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	e.addr = lis.Addr().String()

	stream := e.dial(t, "flask")
	resp, err := fetch(t, stream, request(flaskID.String(), resource.ClusterType))
	require.NoError(t, err)
	assert.Equal(t, resource.ClusterType, resp.GetTypeUrl())
	assert.Equal(t, e.srv.current(flaskID).wireOf(resource.ClusterType).version, resp.GetVersionInfo())
	assert.NotEmpty(t, resp.GetResources())
	_, err = fetch(t, stream, request(redisID.String(), resource.ListenerType))
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "does not match the SPIFFE ID")
}
