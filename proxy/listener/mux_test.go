package listener

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/proxy/identity"
	"github.com/attestmesh/attestmesh/proxy/metrics"
	"github.com/attestmesh/attestmesh/proxy/proxytest"
	"github.com/attestmesh/attestmesh/proxy/resource"
)

// tunnel is a client and a server Manager with SVIDs from one CA: the client's outbound
// listener carries app connections to the server's inbound listener, which hands them to an
// echo server.
type tunnel struct {
	ca                 *proxytest.CA
	clientID, serverID spiffeid.ID
	client, server     *Manager
	serverMetrics      *metrics.Metrics
	clientAddr         string
	serverAddr         string
	serverLogs         *proxytest.SyncBuffer
	inbound            *resource.Listener
}

func newTunnel(t *testing.T, clientMux, serverMux bool) *tunnel {
	t.Helper()
	ca, err := proxytest.NewCA("attestmesh.local")
	require.NoError(t, err)
	echo, err := proxytest.StartEcho()
	require.NoError(t, err)
	t.Cleanup(echo.Close)
	tn := &tunnel{ca: ca, clientID: ca.ID("/app/client"), serverID: ca.ID("/app/server"), serverLogs: &proxytest.SyncBuffer{}}
	tn.clientAddr, err = proxytest.FreeAddr()
	require.NoError(t, err)
	tn.serverAddr, err = proxytest.FreeAddr()
	require.NoError(t, err)

	newMgr := func(id spiffeid.ID, mux bool, log *slog.Logger) (*Manager, *metrics.Metrics) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		creds, err := identity.NewSource(key)
		require.NoError(t, err)
		cert, err := ca.Issue(id, key.Public(), time.Hour)
		require.NoError(t, err)
		require.NoError(t, creds.SetAttested(&identity.Identity{SVID: []*x509.Certificate{cert}, Bundle: ca.Bundle()}))
		require.NoError(t, creds.SetTrustBundle(ca.TD, ca.Bundle()))
		m := metrics.New()
		mgr, err := New(Config{Creds: creds, Metrics: m, Logger: log, Multiplex: mux})
		require.NoError(t, err)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = mgr.Shutdown(ctx)
		})
		mgr.SecretsReady(resource.SecretSVID, resource.SecretTrustBundle)
		return mgr, m
	}
	tn.server, tn.serverMetrics = newMgr(tn.serverID, serverMux, slog.New(slog.NewTextHandler(tn.serverLogs, nil)))
	tn.client, _ = newMgr(tn.clientID, clientMux, slog.New(slog.DiscardHandler))

	require.NoError(t, tn.server.UpdateClusters([]*resource.Cluster{{Name: "local", Endpoints: []string{echo.Addr}, ConnectTimeout: time.Second}}))
	tn.inbound = tn.inboundAllowing(tn.clientID)
	require.NoError(t, tn.server.UpdateListeners([]*resource.Listener{tn.inbound}))
	require.NoError(t, tn.client.UpdateClusters([]*resource.Cluster{{
		Name: "remote", Endpoints: []string{tn.serverAddr}, ConnectTimeout: time.Second,
		TLS: &resource.UpstreamTLS{Peers: peers(tn.serverID)},
	}}))
	require.NoError(t, tn.client.UpdateListeners([]*resource.Listener{
		{Name: "outbound", Address: tn.clientAddr, Direction: resource.Outbound, Cluster: "remote"},
	}))
	return tn
}

func peers(allowed spiffeid.ID) resource.PeerPolicy {
	return resource.PeerPolicy{
		Matchers: []string{"exact:" + allowed.String()}, Authorize: tlsconfig.AuthorizeID(allowed),
		CertSecret: resource.SecretSVID, BundleSecret: resource.SecretTrustBundle,
	}
}

func (tn *tunnel) inboundAllowing(id spiffeid.ID) *resource.Listener {
	p := peers(id)
	return &resource.Listener{Name: "inbound", Address: tn.serverAddr, Direction: resource.Inbound, Cluster: "local", Peers: &p}
}

func muxCount(m *Manager) int {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	return len(m.muxes)
}

func dialApp(t *testing.T, addr string) net.Conn {
	t.Helper()
	var d net.Dialer
	c, err := d.DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	return c
}

func echoOnce(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	_, err := c.Write(msg)
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, msg, got)
}

// Many app connections share one mTLS connection, and each is counted as a connection.
func TestMuxStreamsShareOneConnection(t *testing.T) {
	tn := newTunnel(t, true, true)
	const conns = 20
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c := dialApp(t, tn.clientAddr)
			for j := range 5 {
				echoOnce(t, c, bytes.Repeat([]byte{byte('a' + i)}, 10+j*100))
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 1, muxCount(tn.client))
	assert.Equal(t, 1, muxCount(tn.server))
	assert.InDelta(t, conns, tn.serverMetrics.Connections.WithLabelValues("inbound", "inbound").Value(), 0)
}

// Either side without MuxProto: one mTLS connection per app connection, as before.
func TestMuxFallback(t *testing.T) {
	for _, tt := range []struct {
		name           string
		client, server bool
	}{{"server without", true, false}, {"client without", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			tn := newTunnel(t, tt.client, tt.server)
			for range 3 {
				echoOnce(t, dialApp(t, tn.clientAddr), []byte("hello"))
			}
			assert.Zero(t, muxCount(tn.client))
			assert.Zero(t, muxCount(tn.server))
		})
	}
}

// A half-close travels through the stream: the echo server sees EOF, closes, and the app
// reads everything, then EOF.
func TestMuxHalfClose(t *testing.T) {
	tn := newTunnel(t, true, true)
	c := dialApp(t, tn.clientAddr)
	_, err := c.Write([]byte("last words"))
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "last words", string(got))
	require.Eventually(t, func() bool {
		return tn.serverMetrics.ActiveConnections.WithLabelValues("inbound", "inbound").Value() == 0
	}, 5*time.Second, 10*time.Millisecond, "the stream ended on both sides")
}

// Streams larger than the flow-control window arrive intact, in both directions at once,
// and a stream whose app does not read holds up no other stream.
func TestMuxFlowControl(t *testing.T) {
	tn := newTunnel(t, true, true)
	const size = 3 << 20
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			c := dialApp(t, tn.clientAddr)
			data := make([]byte, size)
			_, _ = rand.Read(data)
			errc := make(chan error, 1)
			go func() {
				_, err := c.Write(data)
				errc <- err
			}()
			got := make([]byte, size)
			_, err := io.ReadFull(c, got)
			assert.NoError(t, err)
			assert.NoError(t, <-errc)
			assert.True(t, bytes.Equal(data, got), "the stream's bytes arrive in order")
		})
	}
	wg.Wait()

	// The stalled app writes 2 MiB and reads none of the echo: its stream's window fills, the
	// echo server stops, and still another stream goes back and forth.
	stalled := dialApp(t, tn.clientAddr)
	go func() { _, _ = stalled.Write(make([]byte, 2<<20)) }()
	time.Sleep(200 * time.Millisecond)
	c := dialApp(t, tn.clientAddr)
	for range 10 {
		echoOnce(t, c, []byte("not held up"))
	}
	assert.Equal(t, 1, muxCount(tn.client))
}

// A stream opened after the listener's policy stopped allowing the client is refused and
// counted as a denial; the stream opened before goes on (as an open connection would).
func TestMuxPolicyChange(t *testing.T) {
	tn := newTunnel(t, true, true)
	before := dialApp(t, tn.clientAddr)
	echoOnce(t, before, []byte("allowed"))

	require.NoError(t, tn.server.UpdateListeners([]*resource.Listener{tn.inboundAllowing(tn.ca.ID("/app/someone-else"))}))
	after := dialApp(t, tn.clientAddr)
	_, _ = after.Write([]byte("refused"))
	_, err := after.Read(make([]byte, 16))
	require.Error(t, err, "the refused stream's app connection is closed")
	assert.InDelta(t, 1, tn.serverMetrics.AuthzDenials.WithLabelValues("inbound").Value(), 0)
	assert.Contains(t, tn.serverLogs.String(), "stream refused")
	echoOnce(t, before, []byte("still open"))

	// Allowed again: new streams go through on the same connection.
	require.NoError(t, tn.server.UpdateListeners([]*resource.Listener{tn.inboundAllowing(tn.clientID)}))
	echoOnce(t, dialApp(t, tn.clientAddr), []byte("allowed again"))
	assert.Equal(t, 1, muxCount(tn.client))
}

// Shutdown sends GOAWAY: the client's next app connection gets a new mTLS connection while
// the open stream drains; at the deadline the rest is closed.
func TestMuxShutdown(t *testing.T) {
	tn := newTunnel(t, true, true)
	open := dialApp(t, tn.clientAddr)
	echoOnce(t, open, []byte("before"))

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tn.server.Shutdown(ctx) }()
	require.Eventually(t, func() bool {
		tn.client.connsMu.Lock()
		defer tn.client.connsMu.Unlock()
		for mc := range tn.client.muxes {
			mc.mu.Lock()
			draining := mc.draining
			mc.mu.Unlock()
			if !draining {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "GOAWAY reached the client")
	echoOnce(t, open, []byte("draining"))
	require.ErrorContains(t, <-done, "connections closed at the deadline")
	_, err := open.Read(make([]byte, 1))
	require.Error(t, err)
	require.Eventually(t, func() bool { return muxCount(tn.client) == 0 }, 5*time.Second, 10*time.Millisecond)
}

// The listener's idle timeout closes an idle stream, not the shared connection.
func TestMuxIdleTimeout(t *testing.T) {
	tn := newTunnel(t, true, true)
	require.NoError(t, tn.client.UpdateListeners([]*resource.Listener{
		{Name: "outbound", Address: tn.clientAddr, Direction: resource.Outbound, Cluster: "remote", IdleTimeout: 300 * time.Millisecond},
	}))
	busy := dialApp(t, tn.clientAddr)
	idle := dialApp(t, tn.clientAddr)
	echoOnce(t, idle, []byte("once"))
	start := time.Now()
	for time.Since(start) < 600*time.Millisecond {
		echoOnce(t, busy, []byte("ping"))
		time.Sleep(50 * time.Millisecond)
	}
	_, err := idle.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	echoOnce(t, busy, []byte("still busy"))
}

// A client connection whose stream IDs are spent drains, and the next app connection goes over
// a new mTLS connection (instead of waiting for the spent one until the connect timeout).
func TestMuxStreamIDsExhausted(t *testing.T) {
	tn := newTunnel(t, true, true)
	first := dialApp(t, tn.clientAddr)
	echoOnce(t, first, []byte("first"))
	require.Equal(t, 1, muxCount(tn.client))
	tn.client.connsMu.Lock()
	for mc := range tn.client.muxes {
		mc.mu.Lock()
		mc.nextID = maxStreamID
		mc.mu.Unlock()
	}
	tn.client.connsMu.Unlock()

	next := dialApp(t, tn.clientAddr)
	echoOnce(t, next, []byte("on a new connection"))
	echoOnce(t, first, []byte("the spent one still carries its streams while it drains"))
}

// A connection with one stream writes without yielding first (runtime.Gosched wakes another
// thread, which then often makes the write: a wake-up and a hand-off per message at one
// connection); with more streams it yields, so that their frames can leave together.
func TestMuxWriteYieldsOnlyWithOtherStreams(t *testing.T) {
	tn := newTunnel(t, true, true)
	var yields atomic.Int64
	count := func() { yields.Add(1); runtime.Gosched() }
	// Before any connection exists: the muxConns' goroutines start after this.
	tn.client.yield, tn.server.yield = count, count

	a := dialApp(t, tn.clientAddr)
	for i := range 20 {
		echoOnce(t, a, bytes.Repeat([]byte{'a'}, 10+i))
	}
	assert.Zero(t, yields.Load(), "yields with one stream")

	b := dialApp(t, tn.clientAddr)
	echoOnce(t, b, []byte("b"))
	for i := range 20 {
		echoOnce(t, a, bytes.Repeat([]byte{'a'}, 10+i))
	}
	assert.Positive(t, yields.Load(), "yields with two streams")
	assert.Equal(t, 1, muxCount(tn.client))
}
