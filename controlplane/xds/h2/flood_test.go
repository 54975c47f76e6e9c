package h2

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// waitNoConns waits until s has no connection.
func waitNoConns(t *testing.T, s *Server, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 0
	}, within, 10*time.Millisecond, "the server kept the connection")
}

// TestControlFloodWithoutReading: PING, SETTINGS and refused-stream floods from a client that
// reads nothing make the server write (acks, RST_STREAM) synchronously: it stops reading while
// its write is blocked, queues nothing, and closes the connection after WriteTimeout.
func TestControlFloodWithoutReading(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(fr *http2.Framer, i uint32) error
	}{
		{"PING", func(fr *http2.Framer, _ uint32) error { return fr.WritePing(false, [8]byte{}) }},
		{"SETTINGS", func(fr *http2.Framer, _ uint32) error { return fr.WriteSettings() }},
		{"refused streams", func(fr *http2.Framer, i uint32) error {
			// An unknown method: each is answered with a trailers-only response.
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2*i + 1, BlockFragment: unknownMethodBlock, EndStream: true, EndHeaders: true})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPKI(t)
			s, addr := startServer(t, p, newTestService(), func(c *Config) {
				c.WriteTimeout = time.Second
				c.MinPingInterval = time.Nanosecond // ping strikes are not what this tests
			}, nil)
			c := dialRaw(t, p, addr, false)
			start := time.Now()
			n := uint32(0)
			var err error
			for ; time.Since(start) < 30*time.Second; n++ {
				_ = c.tc.SetWriteDeadline(time.Now().Add(3 * time.Second))
				if err = tc.send(c.fr, n); err != nil {
					break
				}
			}
			t.Logf("the client wrote %d frames in %v, then: %v", n, time.Since(start).Round(time.Millisecond), err)
			require.Error(t, err, "the server kept reading a client that reads nothing")
			waitNoConns(t, s, 5*time.Second)
		})
	}
}

// unknownMethodBlock is a request's header block (HPACK, no dynamic table) for an unknown method.
var unknownMethodBlock = func() []byte {
	b := appendField(nil, ":method", "POST")
	b = appendField(b, ":scheme", "https")
	b = appendField(b, ":path", "/no.Such/Method")
	b = appendField(b, ":authority", "x")
	return appendField(b, "content-type", "application/grpc")
}()

// TestTooManyPings: the third ping too soon is answered GOAWAY ENHANCE_YOUR_CALM.
func TestTooManyPings(t *testing.T) {
	p := newTestPKI(t)
	s, addr := startServer(t, p, newTestService(), func(c *Config) { c.MinPingInterval = time.Minute }, nil)
	c := dialRaw(t, p, addr, true)
	for range 4 {
		_ = c.do(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{}) })
	}
	g := c.waitFor(5*time.Second, "GOAWAY", func(f frame) bool { return f.typ == http2.FrameGoAway })
	require.Equal(t, http2.ErrCodeEnhanceYourCalm, g.code)
	require.Equal(t, "too_many_pings", string(g.data))
	waitNoConns(t, s, 5*time.Second)
}

// TestKeepalive: a client that answers pings keeps its connection; one that does not loses it
// after KeepaliveTime + KeepaliveTimeout.
func TestKeepaliveClosesOnlyTheSilent(t *testing.T) {
	p := newTestPKI(t)
	s, addr := startServer(t, p, newTestService(), func(c *Config) {
		c.KeepaliveTime, c.KeepaliveTimeout = 100*time.Millisecond, 100*time.Millisecond
	}, nil)
	answers := dialRaw(t, p, addr, true)
	_ = answers
	silent := dialRaw(t, p, addr, false)
	_ = silent
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 1
	}, 5*time.Second, 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	assert.Equal(t, 1, n, "the connection answering pings was closed")
}
