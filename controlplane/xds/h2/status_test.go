package h2

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
)

// TestContextErrorStatus: a handler that returns its context's error (Hold does, as
// go-control-plane's handlers do) gets grpc-status UNKNOWN (2): finish converts with
// status.Convert. gRPC-Go's server uses status.FromContextError for errors that are not a
// status: DEADLINE_EXCEEDED (4) or CANCELLED (1).
func TestContextErrorStatus(t *testing.T) {
	p := newTestPKI(t)
	svc := newTestService()
	_, addr := startServer(t, p, svc, nil, nil)
	c := dialRaw(t, p, addr, true)
	c.headers(1, pathHold, false, "grpc-timeout", "50m")
	tr := c.waitFor(5*time.Second, "trailers", func(f frame) bool {
		return f.typ == http2.FrameHeaders && f.streamID == 1 && f.flags.Has(http2.FlagHeadersEndStream)
	})
	got, err := strconv.Atoi(tr.fields["grpc-status"])
	require.NoError(t, err)
	assert.Equal(t, codes.DeadlineExceeded, codes.Code(got), "BUG: a handler's context.DeadlineExceeded sent as %v (%q)", codes.Code(got), tr.fields["grpc-message"]) //nolint:gosec // G115: a status code
}

// TestStopClosesHandshakes: Stop waits for every TLS handshake under way, each up to
// HandshakeTimeout (20 s by default), so a TCP peer that connects and sends nothing (no
// certificate needed) delays the control plane's shutdown by up to 20 s.
func TestStopClosesHandshakes(t *testing.T) {
	p := newTestPKI(t)
	s, addr := startServer(t, p, newTestService(), func(c *Config) { c.HandshakeTimeout = 5 * time.Second }, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	defer func() { _ = nc.Close() }()
	time.Sleep(100 * time.Millisecond) // accepted, its handshake waits
	start := time.Now()
	s.Stop()
	took := time.Since(start)
	assert.Less(t, took, time.Second, "BUG: Stop took %v: it waited for the handshake of a peer that sends nothing", took.Round(time.Millisecond))
}

// TestPartialMessagesHeldPerConnection measures what one connection makes the server hold with
// a message half sent on every stream: the streams' windows are credited while a message is
// assembled, so each stream holds up to MaxRecvMsgSize whether or not its handler reads.
func TestPartialMessagesHeldPerConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 16 MiB")
	}
	p := newTestPKI(t)
	svc := newTestService()
	const streams, size = 8, 2 << 20
	s, addr := startServer(t, p, svc, func(c *Config) { c.MaxConcurrentStreams, c.MaxRecvMsgSize = streams, size }, nil)
	c := dialRaw(t, p, addr, true)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	chunk := make([]byte, 16000)
	for i := range uint32(streams) {
		id := 2*i + 1
		c.headers(id, pathHold, false)
		msg := make([]byte, 5, size)
		msg[1], msg[2] = byte(size>>24), byte(size>>16)
		for len(msg) < size-len(chunk) {
			msg = append(msg, chunk...)
		}
		c.sendFlow(id, msg, false) // all but the end of the message
	}
	sc := connOf(t, s)
	require.Eventually(t, func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		n := 0
		for _, st := range sc.streams {
			n += len(st.msg)
		}
		return n >= streams*(size-len(chunk))
	}, 30*time.Second, 10*time.Millisecond)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("one connection, %d streams with a %d MiB message each, never completed: the heap grew by %.1f MiB",
		streams, size>>20, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20)) //nolint:gosec // G115: heap sizes
}
