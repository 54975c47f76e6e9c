package h2

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRapidResetGoroutineStreams (CVE-2023-44487): streams opened and reset at once keep
// their slot until their handler returns, so no more than MaxConcurrentStreams handlers run;
// the others are refused, and the connection still serves afterwards.
func TestRapidResetGoroutineStreams(t *testing.T) {
	s, svc, c := rawSetup(t, func(c *Config) { c.MaxConcurrentStreams = 10 })
	// The runtime starts its GC workers (one per P) at the first collection: counted in the
	// base, not in the peak.
	runtime.GC()
	base := runtime.NumGoroutine()
	stop := make(chan struct{})
	peak := make(chan int, 1)
	go func() {
		m := 0
		for {
			select {
			case <-stop:
				peak <- m
				return
			default:
				m = max(m, runtime.NumGoroutine())
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	const n = 20000
	err := c.do(func(fr *http2.Framer) error {
		for i := range uint32(n) {
			id := 2*i + 1
			if err := c.writeHeadersLocked(id, pathHold, false); err != nil {
				return err
			}
			if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	// Once the PING is answered the server has read every frame before it.
	require.NoError(t, c.do(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1}) }))
	c.waitFor(10*time.Second, "PING ack", func(f frame) bool { return f.typ == http2.FramePing && f.flags.Has(http2.FlagPingAck) })
	sc := connOf(t, s)
	require.Eventually(t, func() bool { return len(svc.started) == len(svc.ended) && streamCount(sc) == 0 }, 10*time.Second, 10*time.Millisecond)
	close(stop)
	pk := <-peak
	t.Logf("%d streams opened and reset: %d handlers ran; goroutines %d at start, at most %d", n, len(svc.started), base, pk)
	assert.LessOrEqual(t, pk-base, 10+20, "handler goroutines beyond MaxConcurrentStreams")
	// The connection still serves.
	c.headers(2*n+1, pathEcho, false)
	c.data(2*n+1, grpcMsg([]byte("hi")), true)
	f := c.waitFor(5*time.Second, "the echo", func(f frame) bool {
		return f.streamID == 2*n+1 && f.typ != http2.FrameHeaders || f.typ == http2.FrameGoAway
	})
	require.Equal(t, http2.FrameData, f.typ, "%+v", f)
}

// TestMaxConcurrentStreams: a stream beyond the limit is refused; a slot freed is reused.
func TestMaxConcurrentStreams(t *testing.T) {
	_, svc, c := rawSetup(t, func(c *Config) { c.MaxConcurrentStreams = 3 })
	for _, id := range []uint32{1, 3, 5, 7} {
		c.headers(id, pathHold, false)
	}
	f := c.waitFor(5*time.Second, "RST_STREAM", func(f frame) bool { return f.typ == http2.FrameRSTStream })
	require.Equal(t, uint32(7), f.streamID)
	require.Equal(t, http2.ErrCodeRefusedStream, f.code)
	require.NoError(t, c.do(func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeCancel) }))
	<-svc.ended
	require.Eventually(t, func() bool {
		c.headers(9, pathHold, false)
		return true
	}, time.Second, time.Millisecond)
	select {
	case <-svc.started:
	case <-time.After(5 * time.Second):
	}
	_, refused := c.tryWaitFor(500*time.Millisecond, func(f frame) bool { return f.typ == http2.FrameRSTStream && f.streamID == 9 })
	require.False(t, refused, "a stream refused although a slot was free")
}

// TestTruncatedMessageNotDelivered: a message that the client's end of stream cuts is an
// error, never a message.
func TestTruncatedMessageNotDelivered(t *testing.T) {
	_, svc, c := rawSetup(t, nil)
	whole := grpcMsg(make([]byte, 100))
	c.headers(1, pathDrain, false)
	c.data(1, grpcMsg([]byte("first")), false)
	c.data(1, whole[:50], true)
	select {
	case err := <-svc.recvErr:
		require.Equal(t, codes.Internal, status.Code(err), "%v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's receive did not end")
	}
	require.Len(t, svc.got, 1)
	require.Equal(t, []byte("first"), <-svc.got)

	// Trailers cutting a message.
	c.headers(3, pathDrain, false)
	c.data(3, whole[:3], false)
	require.NoError(t, c.do(func(fr *http2.Framer) error {
		c.hbuf.Reset()
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	}))
	select {
	case err := <-svc.recvErr:
		require.Equal(t, codes.Internal, status.Code(err), "%v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's receive did not end")
	}
	require.Empty(t, svc.got)
}

// TestDataAfterEndStream: DATA after the client's END_STREAM resets the stream
// (STREAM_CLOSED) and is never delivered.
func TestDataAfterEndStream(t *testing.T) {
	_, svc, c := rawSetup(t, nil)
	c.headers(1, pathHold, false)
	<-svc.started
	c.data(1, grpcMsg([]byte("a")), true)
	c.data(1, grpcMsg([]byte("b")), false)
	f := c.waitFor(5*time.Second, "RST_STREAM", func(f frame) bool { return f.typ == http2.FrameRSTStream && f.streamID == 1 })
	require.Equal(t, http2.ErrCodeStreamClosed, f.code)

	// DATA on a stream never opened ends the connection.
	c.data(101, grpcMsg([]byte("c")), false)
	g := c.waitFor(5*time.Second, "GOAWAY", func(f frame) bool { return f.typ == http2.FrameGoAway })
	require.Equal(t, http2.ErrCodeProtocol, g.code)
}

// TestStreamWindowEnforced: DATA beyond a stream's window resets the stream; beyond the
// connection's ends the connection.
func TestStreamWindowEnforced(t *testing.T) {
	_, svc, c := rawSetup(t, nil)
	c.headers(1, pathHold, false)
	<-svc.started
	// Hold never reads: a message of 70000 bytes is assembled (the stream is credited while no
	// message waits), then one that waits; what follows it is beyond the window.
	c.data(1, prefixed(make([]byte, 16000)), false)
	// Then the start of a message of 200,000 bytes, and more of it than the window.
	c.data(1, append(binary.BigEndian.AppendUint32([]byte{0}, 200000), make([]byte, 15995)...), false)
	for range 4 {
		c.data(1, make([]byte, 16000), false)
	}
	f := c.waitFor(5*time.Second, "RST_STREAM", func(f frame) bool { return f.typ == http2.FrameRSTStream && f.streamID == 1 })
	require.Equal(t, http2.ErrCodeFlowControl, f.code)
}

// TestRecvQueueBounded: a handler that does not read lets at most 1,024 messages wait; empty
// messages (5 bytes on the wire, a 24-byte slice each in the queue) beyond that reset the
// stream, so one window of DATA cannot make the server hold several windows of queue.
func TestRecvQueueBounded(t *testing.T) {
	s, svc, c := rawSetup(t, nil)
	c.headers(1, pathHold, false)
	<-svc.started
	c.data(1, make([]byte, 16380), false) // 3,276 empty messages
	f := c.waitFor(5*time.Second, "RST_STREAM", func(f frame) bool { return f.typ == http2.FrameRSTStream && f.streamID == 1 })
	assert.Equal(t, http2.ErrCodeEnhanceYourCalm, f.code)
	sc := connOf(t, s)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st := sc.streams[1]; st != nil {
		assert.Empty(t, st.queue, "a reset stream keeps no message")
		held := cap(st.queue) * int(unsafe.Sizeof([]byte(nil)))
		assert.LessOrEqual(t, held, 2*initialWindow)
	}
}

// TestInitialWindowOverflowRefused: RFC 9113 section 6.9.2: a SETTINGS_INITIAL_WINDOW_SIZE
// that takes a stream's window above 2^31-1 is a connection error (FLOW_CONTROL_ERROR).
// handleSettings adds the delta unchecked. Harmless here (windows are int64 and reserve takes
// at most maxWrite), but the server then sends more than a conforming client may accept.
func TestInitialWindowOverflowRefused(t *testing.T) {
	_, svc, c := rawSetup(t, nil)
	c.headers(1, pathHold, false)
	<-svc.started
	require.NoError(t, c.do(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(1, 1<<31-1-initialWindow) }))
	require.NoError(t, c.do(func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: initialWindow + 1})
	}))
	_, ok := c.tryWaitFor(2*time.Second, func(f frame) bool { return f.typ == http2.FrameGoAway && f.code == http2.ErrCodeFlowControl })
	assert.True(t, ok, "BUG: a stream's window went above 2^31-1 through SETTINGS_INITIAL_WINDOW_SIZE without a connection error")
}

// TestWindowShrinkAndGrow: a SETTINGS_INITIAL_WINDOW_SIZE of 0 mid-message stops the server's
// DATA (the window goes negative, nothing is sent); growing it again completes the message
// intact.
func TestWindowShrinkAndGrow(t *testing.T) {
	_, _, c := rawSetup(t, nil)
	require.NoError(t, c.do(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 16<<20) }))
	payload := make([]byte, 200<<10)
	for i := range payload {
		payload[i] = byte(i)
	}
	want := grpcMsg(payload)
	c.headers(1, pathEcho, false)
	// Shrink before the echo is sent: the request follows.
	require.NoError(t, c.do(func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	}))
	c.sendFlow(1, want, true)
	_, got := c.tryWaitFor(500*time.Millisecond, func(f frame) bool { return f.typ == http2.FrameData && f.streamID == 1 })
	require.False(t, got, "DATA sent with a window of 0")
	require.NoError(t, c.do(func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	}))
	var out []byte
	for len(out) < len(want) {
		f := c.waitFor(5*time.Second, "DATA", func(f frame) bool { return f.typ == http2.FrameData && f.streamID == 1 })
		out = append(out, f.data...)
	}
	require.Equal(t, want, out)
}

// TestHeaderFloods: a header list beyond 16 KiB is answered 431 and the connection goes on;
// CONTINUATION frames that keep coming beyond it end the connection (x/net's limit).
func TestHeaderFloods(t *testing.T) {
	_, _, c := rawSetup(t, nil)
	big := make([]byte, 8000)
	for i := range big {
		big[i] = 'a'
	}
	c.headers(1, pathHold, false, "x-a", string(big), "x-b", string(big), "x-c", string(big))
	f := c.waitFor(5*time.Second, "the 431", func(f frame) bool { return f.typ == http2.FrameHeaders && f.streamID == 1 })
	require.Equal(t, "431", f.fields[":status"])

	err := c.do(func(fr *http2.Framer) error {
		c.hbuf.Reset()
		_ = c.henc.WriteField(hpackField(":method", "POST"))
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: c.hbuf.Bytes()}); err != nil {
			return err
		}
		frag := make([]byte, 16000)
		for range 1000 {
			if err := fr.WriteContinuation(3, false, frag); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("CONTINUATION flood: the client's writes ended with %v", err)
	g := c.waitFor(5*time.Second, "GOAWAY", func(f frame) bool { return f.typ == http2.FrameGoAway })
	require.Equal(t, http2.ErrCodeProtocol, g.code)
}

// TestStreamIDReuse: HEADERS on an ID already used opens nothing: on an open stream without
// END_STREAM it resets the stream (malformed trailers); on a closed one, or a lower unused ID,
// it is ignored.
func TestStreamIDReuse(t *testing.T) {
	s, svc, c := rawSetup(t, nil)
	c.headers(5, pathHold, false)
	<-svc.started
	c.headers(5, pathHold, false)
	f := c.waitFor(5*time.Second, "RST_STREAM", func(f frame) bool { return f.typ == http2.FrameRSTStream && f.streamID == 5 })
	require.Equal(t, http2.ErrCodeProtocol, f.code)
	<-svc.ended
	c.headers(5, pathHold, false) // closed
	c.headers(3, pathHold, false) // lower, never used
	require.NoError(t, c.do(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{3}) }))
	c.waitFor(5*time.Second, "PING ack", func(f frame) bool { return f.typ == http2.FramePing && f.flags.Has(http2.FlagPingAck) })
	require.Empty(t, svc.started, "a handler started for a reused stream ID")
	sc := connOf(t, s)
	require.Eventually(t, func() bool { return streamCount(sc) == 0 }, 5*time.Second, time.Millisecond)
}

// TestClientGoAway: after the client's GOAWAY the connection closes with its last stream.
func TestClientGoAway(t *testing.T) {
	s, svc, c := rawSetup(t, nil)
	c.headers(1, pathHold, false)
	<-svc.started
	require.NoError(t, c.do(func(fr *http2.Framer) error { return fr.WriteGoAway(1, http2.ErrCodeNo, nil) }))
	require.NoError(t, c.do(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{4}) }))
	c.waitFor(5*time.Second, "PING ack", func(f frame) bool { return f.typ == http2.FramePing && f.flags.Has(http2.FlagPingAck) })
	require.NotNil(t, connOf(t, s), "closed with a stream open")
	require.NoError(t, c.do(func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeCancel) }))
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 0
	}, 5*time.Second, time.Millisecond)
}
