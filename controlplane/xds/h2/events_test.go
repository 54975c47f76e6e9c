package h2

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// eventRecorder serves pathEvents as an event stream and records what happens to its streams.
type eventRecorder struct {
	opened chan Stream
	msgs   chan []byte
	ends   chan error
	// onOpen, if set, runs (in a goroutine of its own) for every stream opened.
	onOpen func(Stream)
	open   atomic.Int64 // streams opened and not ended
}

func newEventRecorder() *eventRecorder {
	return &eventRecorder{opened: make(chan Stream, 1<<14), msgs: make(chan []byte, 1<<14), ends: make(chan error, 1<<14)}
}

func (r *eventRecorder) register(s *Server) {
	s.RegisterEvents(pathEvents, func(st Stream) (Events, error) {
		r.open.Add(1)
		r.opened <- st
		if r.onOpen != nil {
			go r.onOpen(st)
		}
		return recEvents{r}, nil
	})
}

type recEvents struct{ r *eventRecorder }

func (e recEvents) Message(data []byte) error {
	e.r.msgs <- append([]byte(nil), data...)
	return nil
}

func (e recEvents) End(err error) error {
	e.r.open.Add(-1)
	e.r.ends <- err
	return nil
}

// TestEventStreamEndedAfterFramerStreamError: a stream error that x/net's Framer reports
// (a WINDOW_UPDATE of 0 on the stream, or trailers with an invalid field) resets the stream
// (resetStream), but readFrames then `continue`s without looking at the stream's pending end
// (c.pending/c.deliver), so an event stream's End is never called: the stream stays in the
// connection's map (counted against MaxConcurrentStreams) and its handler (xds: the sotw stream,
// registered with the server) stays open until another frame arrives on that stream or the
// connection closes. A hostile peer does this on purpose.
func TestEventStreamEndedAfterFramerStreamError(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(c *rawClient) error
	}{
		{"WINDOW_UPDATE of 0", func(c *rawClient) error {
			return c.do(func(fr *http2.Framer) error {
				fr.AllowIllegalWrites = true
				defer func() { fr.AllowIllegalWrites = false }()
				return fr.WriteWindowUpdate(1, 0)
			})
		}},
		{"trailers with an upper-case field name", func(c *rawClient) error {
			return c.do(func(fr *http2.Framer) error {
				c.hbuf.Reset()
				_ = c.henc.WriteField(hpack.HeaderField{Name: "X-Bad", Value: "1"})
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true})
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPKI(t)
			rec := newEventRecorder()
			s, addr := startServer(t, p, newTestService(), nil, rec.register)
			c := dialRaw(t, p, addr, true)
			c.headers(1, pathEvents, false)
			select {
			case <-rec.opened:
			case <-time.After(5 * time.Second):
				t.Fatal("the event stream did not open")
			}
			require.NoError(t, tc.send(c))
			c.waitFor(5*time.Second, "RST_STREAM", func(f frame) bool { return f.typ == http2.FrameRSTStream && f.streamID == 1 })
			select {
			case err := <-rec.ends:
				t.Logf("End called: %v", err)
			case <-time.After(2 * time.Second):
				sc := connOf(t, s)
				t.Errorf("BUG: the server reset the event stream but never called its End (streams open on the connection: %d, handlers open: %d)",
					streamCount(sc), rec.open.Load())
			}
		})
	}
}

// TestBugEventStreamDeadlineNotEnded: a grpc-timeout only cancels an event stream's context;
// nothing ends the stream (End is not called, no DEADLINE_EXCEEDED status goes out, the stream
// keeps its slot) until the client resets it. gRPC-Go's server ends the stream with
// DEADLINE_EXCEEDED; a hostile client that never resets keeps its streams.
func TestEventStreamDeadlineEndsIt(t *testing.T) {
	p := newTestPKI(t)
	rec := newEventRecorder()
	s, addr := startServer(t, p, newTestService(), nil, rec.register)
	c := dialRaw(t, p, addr, true)
	c.headers(1, pathEvents, false, "grpc-timeout", "100m")
	var st Stream
	select {
	case st = <-rec.opened:
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream did not open")
	}
	select {
	case <-st.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the stream's context did not end at its deadline")
	}
	// The stream is reset at its deadline, as gRPC's server does ...
	_, ok := c.tryWaitFor(2*time.Second, func(f frame) bool {
		return f.streamID == 1 && f.typ == http2.FrameRSTStream
	})
	assert.True(t, ok, "no RST_STREAM at the deadline")
	// ... and its End is delivered on the connection's goroutine after the next frame it
	// reads (a client's ping at the latest; the server pings after KeepaliveTime).
	require.NoError(t, c.do(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{9}) }))
	select {
	case err := <-rec.ends:
		t.Logf("End called: %v", err)
	case <-time.After(2 * time.Second):
		assert.Fail(t, "the event stream's End was not called", "streams open: %d", streamCount(connOf(t, s)))
	}
}

// TestEventStreamsRapidReset opens and resets event streams as fast as the client can write:
// every stream opened is ended, none stays.
func TestEventStreamsRapidReset(t *testing.T) {
	p := newTestPKI(t)
	rec := newEventRecorder()
	s, addr := startServer(t, p, newTestService(), func(c *Config) { c.MaxConcurrentStreams = 8 }, rec.register)
	c := dialRaw(t, p, addr, true)
	const n = 5000
	err := c.do(func(fr *http2.Framer) error {
		for i := range uint32(n) {
			id := 2*i + 1
			if err := c.writeHeadersLocked(id, pathEvents, false); err != nil {
				return err
			}
			if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	sc := connOf(t, s)
	require.Eventually(t, func() bool { return rec.open.Load() == 0 && streamCount(sc) == 0 && len(rec.opened) == len(rec.ends) },
		10*time.Second, 10*time.Millisecond, "open %d, streams %d", rec.open.Load(), streamCount(sc))
	t.Logf("opened %d event streams of %d, all ended", len(rec.opened), n)
}

// TestEventStreamSendAndEnd: an event stream's messages are delivered in order, SendMsg from
// another goroutine works, and the client's end of stream ends it with io.EOF.
func TestEventStreamSendAndEnd(t *testing.T) {
	p := newTestPKI(t)
	rec := newEventRecorder()
	big := make([]byte, 300<<10)
	sent := make(chan error, 1)
	rec.onOpen = func(st Stream) { sent <- st.SendMsg(wrapperspb.Bytes(big)) }
	_, addr := startServer(t, p, newTestService(), nil, rec.register)
	c := dialRaw(t, p, addr, true)
	c.headers(1, pathEvents, false)
	for i := range 10 {
		c.data(1, grpcMsg([]byte{byte(i)}), false)
	}
	for i := range 10 {
		select {
		case m := <-rec.msgs:
			v := &wrapperspb.BytesValue{}
			require.NoError(t, proto.Unmarshal(m, v))
			require.Equal(t, []byte{byte(i)}, v.GetValue())
		case <-time.After(5 * time.Second):
			t.Fatal("message not delivered")
		}
	}
	// Receive the big message, granting window as it comes.
	got := 0
	for got < len(grpcMsg(big)) {
		f := c.waitFor(5*time.Second, "DATA", func(f frame) bool { return f.typ == http2.FrameData })
		got += len(f.data)
		n := uint32(len(f.data)) //nolint:gosec // G115: a frame
		require.NoError(t, c.do(func(fr *http2.Framer) error {
			if err := fr.WriteWindowUpdate(0, n); err != nil {
				return err
			}
			return fr.WriteWindowUpdate(1, n)
		}))
	}
	require.NoError(t, <-sent)
	c.data(1, nil, true)
	select {
	case err := <-rec.ends:
		require.ErrorIs(t, err, io.EOF)
	case <-time.After(5 * time.Second):
		t.Fatal("End not called")
	}
	tr := c.waitFor(5*time.Second, "trailers", func(f frame) bool { return f.typ == http2.FrameHeaders && f.flags.Has(http2.FlagHeadersEndStream) })
	require.Equal(t, "0", tr.fields["grpc-status"])
}

// TestBugStalledWindowPinsSenderAfterEnd: a client that reads but never grants window, then ends
// its side mid-message, keeps the stream forever: End was called, but finish handed the stream's
// end to the SendMsg in flight (handOff), which waits for window that never comes. The sender's
// goroutine and the whole marshalled message stay pinned, and the stream keeps its slot of
// MaxConcurrentStreams, for as long as the client keeps the connection (it answers pings).
// (The package doc says a peer that stops reading loses its connection; one that reads but
// grants no window does not.)
func TestStalledWindowEndsSenderAfterEnd(t *testing.T) {
	p := newTestPKI(t)
	rec := newEventRecorder()
	sendDone := make(chan error, 8)
	rec.onOpen = func(st Stream) { sendDone <- st.SendMsg(wrapperspb.Bytes(make([]byte, 1<<20))) }
	s, addr := startServer(t, p, newTestService(), func(c *Config) { c.MaxConcurrentStreams = 2; c.WriteTimeout = time.Second }, rec.register)
	c := dialRaw(t, p, addr, true)
	// The connection's window is granted; the streams' never.
	require.NoError(t, c.do(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 16<<20) }))
	for _, id := range []uint32{1, 3} {
		c.headers(id, pathEvents, false)
		got := 0
		for got < initialWindow {
			f := c.waitFor(5*time.Second, "DATA", func(f frame) bool { return f.typ == http2.FrameData && f.streamID == id })
			got += len(f.data)
		}
		c.data(id, nil, true)
		select {
		case err := <-rec.ends:
			require.ErrorIs(t, err, io.EOF)
		case <-time.After(5 * time.Second):
			t.Fatal("End not called")
		}
	}
	c.headers(5, pathEvents, false)
	refused, _ := c.tryWaitFor(2*time.Second, func(f frame) bool { return f.typ == http2.FrameRSTStream && f.streamID == 5 })
	// A SendMsg left to end its stream waits at most WriteTimeout (1 s here) for window.
	for range 2 {
		select {
		case err := <-sendDone:
			t.Logf("a SendMsg returned: %v", err)
			assert.Equal(t, codes.Unavailable, status.Code(err))
		case <-time.After(5 * time.Second):
			assert.Fail(t, "the client ended both streams, yet their SendMsg (1 MiB each) still wait for window",
				"streams held: %d; a new stream refused: %v (code %v)", streamCount(connOf(t, s)), refused.typ == http2.FrameRSTStream, refused.code)
			return
		}
	}
	assert.Eventually(t, func() bool { return streamCount(connOf(t, s)) == 0 }, 5*time.Second, 10*time.Millisecond, "the streams were not let go")
}

// TestEventStreamCancelledByStop: Stop ends an event stream (End with an error) and returns.
func TestEventStreamCancelledByStop(t *testing.T) {
	p := newTestPKI(t)
	rec := newEventRecorder()
	s, addr := startServer(t, p, newTestService(), nil, rec.register)
	c := dialRaw(t, p, addr, true)
	c.headers(1, pathEvents, false)
	<-rec.opened
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		s.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("Stop did not return")
	}
	err := <-rec.ends
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}
