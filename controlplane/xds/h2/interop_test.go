package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// dialGRPC returns a gRPC-Go client of addr; dial, if set, makes its TCP connections.
func dialGRPC(t *testing.T, p *testPKI, addr string, dial func(context.Context, string) (net.Conn, error)) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(p.clientTLS())),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)),
	}
	if dial != nil {
		opts = append(opts, grpc.WithContextDialer(dial))
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func newStream(ctx context.Context, cc *grpc.ClientConn, method string) (grpc.ClientStream, error) {
	return cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
}

// echo sends each of msgs on a new Echo stream and checks that they come back.
func echo(ctx context.Context, t *testing.T, cc *grpc.ClientConn, msgs ...[]byte) {
	t.Helper()
	cs, err := newStream(ctx, cc, pathEcho)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, m := range msgs {
			if err := cs.SendMsg(wrapperspb.Bytes(m)); err != nil {
				return
			}
		}
		_ = cs.CloseSend()
	}()
	for i, m := range msgs {
		got := &wrapperspb.BytesValue{}
		require.NoError(t, cs.RecvMsg(got), "message %d", i)
		require.True(t, bytes.Equal(m, got.GetValue()), "message %d: %d bytes back for %d", i, len(got.GetValue()), len(m))
	}
	require.ErrorIs(t, cs.RecvMsg(&wrapperspb.BytesValue{}), io.EOF)
	wg.Wait()
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// TestGRPCInterop: a gRPC-Go client: small and large messages both ways, on concurrent
// streams; an unknown method; cancellation and deadlines reach the handler; Stop ends the
// streams, and every goroutine of the server ends.
func TestGRPCInterop(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	p := newTestPKI(t)
	svc := newTestService()
	s, addr := startServer(t, p, svc, func(c *Config) { c.MaxRecvMsgSize = 8 << 20 }, nil)
	cc := dialGRPC(t, p, addr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("messages", func(t *testing.T) {
		echo(ctx, t, cc, nil, []byte("x"), pattern(70000), pattern(3<<20), pattern(1), pattern(1<<20))
	})
	t.Run("concurrent streams", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() { echo(ctx, t, cc, pattern(1000*i), pattern(200000+i)) })
		}
		wg.Wait()
	})
	t.Run("too large", func(t *testing.T) {
		cs, err := newStream(ctx, cc, pathEcho)
		require.NoError(t, err)
		require.NoError(t, cs.SendMsg(wrapperspb.Bytes(pattern(9<<20))))
		err = cs.RecvMsg(&wrapperspb.BytesValue{})
		require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	})
	t.Run("unknown method", func(t *testing.T) {
		cs, err := newStream(ctx, cc, "/no.Such/Method")
		require.NoError(t, err)
		err = cs.RecvMsg(&wrapperspb.BytesValue{})
		require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	})
	t.Run("cancel", func(t *testing.T) {
		sctx, scancel := context.WithCancel(ctx)
		cs, err := newStream(sctx, cc, pathHold)
		require.NoError(t, err)
		require.NoError(t, cs.SendMsg(wrapperspb.Bytes(nil)))
		ss := <-svc.started
		scancel()
		select {
		case e := <-svc.ended:
			require.Same(t, ss, e)
		case <-ctx.Done():
			t.Fatal("the handler did not see the cancellation")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer dcancel()
		cs, err := newStream(dctx, cc, pathHold)
		require.NoError(t, err)
		require.NoError(t, cs.SendMsg(wrapperspb.Bytes(nil)))
		ss := <-svc.started
		dl, ok := ss.Context().Deadline()
		require.True(t, ok, "grpc-timeout did not reach the handler")
		assert.WithinDuration(t, time.Now().Add(300*time.Millisecond), dl, 300*time.Millisecond)
		<-svc.ended
		err = cs.RecvMsg(&wrapperspb.BytesValue{})
		// The server's status can beat the client's own timer: then the client sees the
		// server's UNKNOWN (TestContextErrorStatus).
		require.Contains(t, []codes.Code{codes.DeadlineExceeded, codes.Unknown}, status.Code(err), "%v", err)
		if status.Code(err) == codes.Unknown {
			t.Logf("the gRPC-Go client saw the server's status for its deadline: %v (see TestContextErrorStatus)", err)
		}
	})
	t.Run("stop", func(t *testing.T) {
		cs, err := newStream(ctx, cc, pathHold)
		require.NoError(t, err)
		require.NoError(t, cs.SendMsg(wrapperspb.Bytes(nil)))
		<-svc.started
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
		<-svc.ended
		err = cs.RecvMsg(&wrapperspb.BytesValue{})
		require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	})
	require.NoError(t, cc.Close())
}

// TestGRPCEventStream: gRPC-Go against an event stream that answers every message from a
// goroutine of its own, with messages larger than a window.
func TestGRPCEventStream(t *testing.T) {
	p := newTestPKI(t)
	rec := newEventRecorder()
	_, addr := startServer(t, p, newTestService(), nil, rec.register)
	cc := dialGRPC(t, p, addr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := newStream(ctx, cc, pathEvents)
	require.NoError(t, err)
	require.NoError(t, cs.SendMsg(wrapperspb.Bytes(pattern(100000))))
	st := <-rec.opened
	m := <-rec.msgs
	go func() {
		for range 3 {
			if st.SendMsg(&wrapperspb.BytesValue{Value: m[5:]}) != nil { // m[5:]: skip the tag and length
				return
			}
		}
	}()
	for range 3 {
		got := &wrapperspb.BytesValue{}
		require.NoError(t, cs.RecvMsg(got))
		require.Len(t, got.GetValue(), len(m)-5)
	}
	require.NoError(t, cs.CloseSend())
	require.ErrorIs(t, cs.RecvMsg(&wrapperspb.BytesValue{}), io.EOF)
	require.ErrorIs(t, <-rec.ends, io.EOF)
}

// dribbleConn writes what it is given a few bytes at a time, pausing now and then: the
// server sees TLS records, and frames, cut anywhere.
type dribbleConn struct {
	net.Conn
	n int
}

func (d *dribbleConn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		d.n++
		k := min(len(p), 1+d.n%13)
		if _, err := d.Conn.Write(p[:k]); err != nil {
			return written, err
		}
		written += k
		p = p[k:]
		if d.n%50 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	return written, nil
}

// TestRestCutRecords: rest (peeking TLS with a past deadline, then waiting on the socket)
// loses no byte when records and frames arrive cut anywhere.
func TestRestCutRecords(t *testing.T) {
	p := newTestPKI(t)
	_, addr := startServer(t, p, newTestService(), nil, nil)
	cc := dialGRPC(t, p, addr, func(ctx context.Context, a string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", a)
		if err != nil {
			return nil, err
		}
		return &dribbleConn{Conn: nc}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	echo(ctx, t, cc, nil, []byte("a"), pattern(100), pattern(20000), pattern(70000), pattern(5))
}

// TestRestCoalescedFrames: many frames in one TLS record (and several records in one TCP
// segment): the server handles all of them without waiting for more bytes on the socket.
func TestRestCoalescedFrames(t *testing.T) {
	p := newTestPKI(t)
	svc := newTestService()
	_, addr := startServer(t, p, svc, nil, nil)
	c := dialRaw(t, p, addr, true)
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	c.hbuf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", pathDrain}, {":authority", "x"}, {"content-type", "application/grpc"}} {
		_ = c.henc.WriteField(hpackField(f[0], f[1]))
	}
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}))
	const n = 200
	for i := range n {
		require.NoError(t, fr.WriteData(1, false, grpcMsg([]byte{byte(i)})))
	}
	require.NoError(t, fr.WritePing(false, [8]byte{9}))
	// One Write: one TLS record (it is below 16 KiB), then the client waits.
	require.NoError(t, c.do(func(*http2.Framer) error {
		_, err := c.tc.Write(buf.Bytes())
		return err
	}))
	for i := range n {
		select {
		case m := <-svc.got:
			require.Equal(t, []byte{byte(i)}, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d of %d not delivered: bytes the server had were left unread", i, n)
		}
	}
	c.waitFor(5*time.Second, "PING ack", func(f frame) bool { return f.typ == http2.FramePing && f.flags.Has(http2.FlagPingAck) })
}
