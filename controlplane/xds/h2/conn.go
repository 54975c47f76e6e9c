package h2

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

const (
	// initialWindow is HTTP/2's default initial window, which the server keeps for streams
	// and for the connection.
	initialWindow = 65535
	// creditThreshold: received bytes are credited back (WINDOW_UPDATE) once this many are
	// owed, so the peer's window never falls below three quarters of initialWindow for that
	// reason, and a stream of small messages is not answered frame for frame.
	creditThreshold = initialWindow / 4
	// maxWrite bounds the DATA of one write, so that a large message does not need a buffer
	// of its size.
	maxWrite = 64 << 10
	// maxHeaderListSize is the SETTINGS_MAX_HEADER_LIST_SIZE the server announces and holds
	// requests to.
	maxHeaderListSize = 16 << 10
	// maxPingStrikes is gRPC's: the third ping too soon ends the connection.
	maxPingStrikes = 2
	// maxFrameSize is HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which the server keeps.
	maxFrameSize = 16384
	// maxQueued bounds the received messages a stream keeps for its handler; more resets the
	// stream (ENHANCE_YOUR_CALM).
	maxQueued = 1024
)

// conn is one client connection. Its reader goroutine (serve) reads every frame and keeps the
// connection's and its streams' state; stream handlers and their senders write.
//
// Locks: wmu (writes) may be held while taking mu; never the other way round.
type conn struct {
	s   *Server
	tc  *tls.Conn
	raw net.Conn // closed to end the connection: tls.Conn.Close would wait for a writer
	// ctx carries the peer; it is never cancelled: close cancels each stream's context, which
	// spares every connection a cancelCtx and its map of children.
	ctx context.Context

	wmu sync.Mutex // serialises writes to tc; held for one write, which WriteTimeout bounds

	mu   sync.Mutex // guards the fields below
	cond sync.Cond  // on mu: a window grew, a message or an error arrived, or a stream ended
	// streams are the open streams, by ID.
	streams map[uint32]*stream
	// sendWindow is the connection-level window for the server's DATA.
	sendWindow int64
	// initialSendWindow and maxSendFrame are the peer's SETTINGS.
	initialSendWindow int64
	maxSendFrame      int
	// err is why the connection closed; nil while it is open.
	err error
	// goingAway: the peer sent GOAWAY; the connection closes when its last stream ends.
	goingAway bool

	// The reader's own state.
	fr           *http2.Framer
	rd           frameReader
	rawRC        rawConn // of raw, for rest; nil if it has none
	lastStreamID uint32
	connRecv     int64  // the connection window the client has left
	connOwed     uint32 // received bytes not yet credited to the connection window
	pingStrikes  int
	lastPingAt   time.Time

	// lastRead is the time (UnixNano) of the last frame read; pingSentAt of the keepalive ping
	// awaiting an answer, 0 if none.
	lastRead, pingSentAt atomic.Int64
	// sentData is set when the server sends HEADERS or DATA: the client's next ping is not
	// counted against it (gRPC's rule).
	sentData atomic.Bool
	// ended is set when an event stream ended other than by one of its frames (a stream error
	// the Framer found, its deadline): the connection's goroutine delivers its End after the
	// next frame it reads, of any stream (the client's pings, or its answers to the server's,
	// come at least every KeepaliveTime).
	ended atomic.Bool
	// keepalive is set once, under mu, unless the connection closed first.
	keepalive *time.Timer
}

func newConn(s *Server, tc *tls.Conn) *conn {
	cs := tc.ConnectionState()
	p := &peer.Peer{
		Addr:      tc.RemoteAddr(),
		LocalAddr: tc.LocalAddr(),
		AuthInfo: credentials.TLSInfo{
			State:          cs,
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		},
	}
	c := &conn{
		s: s, tc: tc, raw: tc.NetConn(), ctx: peer.NewContext(context.Background(), p),
		streams:           make(map[uint32]*stream),
		sendWindow:        initialWindow,
		initialSendWindow: initialWindow,
		maxSendFrame:      maxFrameSize,
		connRecv:          initialWindow,
	}
	c.cond.L = &c.mu
	c.rd.tc = tc
	c.rawRC = restable(c.raw)
	return c
}

// serve reads the client's preface, then frames until the connection ends. The goroutine
// spends its life blocked in the read of the next frame, so the frames below that read are kept
// small (the preface and the connection's end are handled in functions of their own): the
// runtime halves a stack only while less than a quarter of it is in use, and this keeps a
// connection's goroutine at 4 KiB.
func (c *conn) serve(prefaceDeadline time.Time) {
	err := c.start(prefaceDeadline)
	if err == nil {
		err = c.readFrames()
	}
	c.end(err)
	c.s.wg.Done()
}

// start reads the client's preface, sends the server's SETTINGS and reads the client's, which
// must come first.
func (c *conn) start(prefaceDeadline time.Time) error {
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.tc, preface[:]); err != nil {
		return fmt.Errorf("h2: reading the client preface: %w", err)
	}
	if string(preface[:]) != http2.ClientPreface {
		return errors.New("h2: the client did not send HTTP/2's preface")
	}
	b := appendSettings(nil,
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.s.cfg.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	)
	if err := c.write(b); err != nil {
		return err
	}
	c.fr = http2.NewFramer(nil, &c.rd)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = maxHeaderListSize
	c.fr.SetMaxReadFrameSize(maxFrameSize)
	f, err := c.fr.ReadFrame()
	if err != nil {
		return c.readError(err)
	}
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		return c.goAway(http2.ErrCodeProtocol, "the client's preface did not end with SETTINGS")
	}
	_ = c.tc.SetReadDeadline(time.Time{})
	c.lastRead.Store(time.Now().UnixNano())
	c.mu.Lock()
	if c.err == nil { // else close ran first, and has no timer to stop
		c.keepalive = time.AfterFunc(c.s.cfg.KeepaliveTime, c.checkAlive)
	}
	c.mu.Unlock()
	return c.handle(f)
}

// readFrames reads and handles frames until the connection ends, and returns why.
func (c *conn) readFrames() error {
	for {
		c.rest()
		c.freshWriteDeadline()
		f, err := c.fr.ReadFrame()
		if err != nil {
			if err = c.frameError(err); err != nil {
				return err
			}
		} else {
			if err := c.handle(f); err != nil {
				return err
			}
			if id := f.Header().StreamID; c.pending(id) {
				c.work(func() { c.deliver(id) })
			}
		}
		if c.ended.Swap(false) {
			c.deliverEnded()
		}
	}
}

// freshWriteDeadline renews the write deadline unless a writer holds the lock (it set its own).
// crypto/tls answers a client's KeyUpdate from within a read, with the deadline of the last
// write: one long past would fail that answer, and TLS would then refuse the client's next
// record.
func (c *conn) freshWriteDeadline() {
	if c.wmu.TryLock() {
		_ = c.tc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
		c.wmu.Unlock()
	}
}

// deliverEnded delivers the end of every event stream that ended without a frame of its own.
func (c *conn) deliverEnded() {
	c.mu.Lock()
	var ids []uint32
	for id, st := range c.streams {
		if st.events != nil && !st.ended && st.recvDone {
			ids = append(ids, id)
		}
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.work(func() { c.deliver(id) })
	}
}

// frameReader is what the Framer reads: the byte rest took from TLS, then TLS.
type frameReader struct {
	tc     *tls.Conn
	one    [1]byte
	peeked bool
}

func (r *frameReader) Read(p []byte) (int, error) {
	if r.peeked && len(p) > 0 {
		p[0], r.peeked = r.one[0], false
		return 1, nil
	}
	return r.tc.Read(p)
}

// work runs f on a goroutine of its own and waits for it: reading, HPACK, the connection's state
// and writing control frames fit in 4 KiB of stack, and what handlers do (Events, opening a
// stream) would grow the connection's goroutine beyond it (see rest).
func (c *conn) work(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// pending reports whether the event stream id has messages, or its end, to deliver.
func (c *conn) pending(id uint32) bool {
	if id == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[id]
	return st != nil && st.events != nil && !st.ended && (len(st.queue) > 0 || st.recvDone)
}

// frameError handles an error of the Framer: a stream error resets that stream (the frame was
// read whole) and the connection goes on (nil); any other error ends the connection.
func (c *conn) frameError(err error) error {
	var se http2.StreamError
	if errors.As(err, &se) {
		return c.resetStream(se)
	}
	return c.readError(err)
}

// end closes the connection for err, and ends the streams served on its goroutine; the
// handlers of the others see the error.
func (c *conn) end(err error) {
	c.close(err)
	c.mu.Lock()
	var open []*stream
	for _, st := range c.streams {
		if st.events != nil {
			open = append(open, st)
		}
	}
	c.mu.Unlock()
	for _, st := range open {
		c.work(func() { c.endEvents(st, status.Error(codes.Unavailable, "h2: the connection closed")) })
	}
	c.s.untrack(c)
}

// deliver hands the messages and the end of an event stream (see Events) to its handler; the
// connection reads nothing else meanwhile.
func (c *conn) deliver(id uint32) {
	for {
		c.mu.Lock()
		st := c.streams[id]
		if st == nil || st.events == nil || st.ended {
			c.mu.Unlock()
			return
		}
		if len(st.queue) == 0 {
			done, err := st.recvDone, st.recvErr
			c.mu.Unlock()
			if done {
				c.endEvents(st, err)
			}
			return
		}
		data, credit := st.pop()
		c.mu.Unlock()
		if credit != nil {
			if c.write(credit) != nil {
				return
			}
		}
		if err := st.events.Message(data); err != nil {
			c.endEvents(st, err)
			return
		}
	}
}

// endEvents ends an event stream: its handler's End gives the status to send.
func (c *conn) endEvents(st *stream, err error) {
	c.mu.Lock()
	if st.ended {
		c.mu.Unlock()
		return
	}
	st.ended = true
	c.mu.Unlock()
	if st.finish(st.events.End(err)) {
		st.done()
	}
}

// resetStream resets the stream of a stream error that the Framer found.
func (c *conn) resetStream(se http2.StreamError) error {
	c.lastRead.Store(time.Now().UnixNano())
	if se.StreamID%2 == 1 && se.StreamID > c.lastStreamID {
		c.lastStreamID = se.StreamID // a request refused as it opened
	}
	c.mu.Lock()
	var rst []byte
	if st := c.streams[se.StreamID]; st != nil {
		rst = st.resetLocked(se.Code)
		c.ended.Store(st.events != nil)
	} else {
		rst = appendRSTStream(nil, se.StreamID, se.Code)
	}
	c.mu.Unlock()
	return c.writeIf(rst)
}

// readError returns the connection's end for an error of the Framer: GOAWAY for an error of
// the protocol.
func (c *conn) readError(err error) error {
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		return c.goAway(http2.ErrCode(ce), "h2: "+err.Error())
	}
	if errors.Is(err, http2.ErrFrameTooLarge) {
		return c.goAway(http2.ErrCodeFrameSize, "h2: frame too large")
	}
	return err
}

// handle handles one frame; an error ends the connection.
func (c *conn) handle(f http2.Frame) error {
	c.lastRead.Store(time.Now().UnixNano())
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.handleHeaders(f)
	case *http2.DataFrame:
		return c.handleData(f)
	case *http2.WindowUpdateFrame:
		return c.handleWindowUpdate(f)
	case *http2.SettingsFrame:
		return c.handleSettings(f)
	case *http2.PingFrame:
		return c.handlePing(f)
	case *http2.RSTStreamFrame:
		c.handleRST(f)
		return nil
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goingAway = true
		idle := len(c.streams) == 0
		c.mu.Unlock()
		if idle {
			return errors.New("h2: the client sent GOAWAY")
		}
		return nil
	case *http2.PushPromiseFrame:
		return c.goAway(http2.ErrCodeProtocol, "h2: a client may not push")
	default: // PRIORITY, and frame types this server does not know
		return nil
	}
}

func (c *conn) handleSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			defer c.mu.Unlock()
			delta := int64(s.Val) - c.initialSendWindow
			for _, st := range c.streams {
				if st.sendWindow+delta > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl) // RFC 9113 section 6.9.2
				}
			}
			c.initialSendWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
			}
			c.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.mu.Lock()
			c.maxSendFrame = int(s.Val)
			c.mu.Unlock()
		}
		return nil
	})
	if err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return c.goAway(http2.ErrCode(ce), "h2: invalid SETTINGS")
		}
		return c.goAway(http2.ErrCodeProtocol, "h2: invalid SETTINGS")
	}
	return c.write(appendFrameHeader(nil, 0, http2.FrameSettings, http2.FlagSettingsAck, 0))
}

func (c *conn) handlePing(f *http2.PingFrame) error {
	if f.IsAck() {
		return nil // lastRead is the keepalive's answer
	}
	if err := c.write(appendPing(nil, true, f.Data)); err != nil {
		return err
	}
	now := time.Now()
	if c.sentData.Swap(false) {
		c.pingStrikes = 0
		c.lastPingAt = now
		return nil
	}
	if !c.lastPingAt.IsZero() && now.Sub(c.lastPingAt) < c.s.cfg.MinPingInterval {
		c.pingStrikes++
	}
	c.lastPingAt = now
	if c.pingStrikes > maxPingStrikes {
		return c.goAway(http2.ErrCodeEnhanceYourCalm, "too_many_pings")
	}
	return nil
}

func (c *conn) handleWindowUpdate(f *http2.WindowUpdateFrame) error {
	incr := int64(f.Increment)
	c.mu.Lock()
	if f.StreamID == 0 {
		if c.sendWindow+incr > 1<<31-1 {
			c.mu.Unlock()
			return c.goAway(http2.ErrCodeFlowControl, "h2: connection window above 2^31-1")
		}
		c.sendWindow += incr
		c.cond.Broadcast()
		c.mu.Unlock()
		return nil
	}
	var rst []byte
	if st := c.streams[f.StreamID]; st != nil && !st.reset {
		if st.sendWindow+incr > 1<<31-1 {
			rst = st.resetLocked(http2.ErrCodeFlowControl)
		} else {
			st.sendWindow += incr
			c.cond.Broadcast()
		}
	}
	// Otherwise a stream that ended (an idle one the Framer refuses).
	c.mu.Unlock()
	return c.writeIf(rst)
}

func (c *conn) handleRST(f *http2.RSTStreamFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[f.StreamID]; st != nil {
		st.peerReset = true
		st.resetLocked(http2.ErrCodeNo) // the peer reset it: nothing to send
	}
}

func (c *conn) handleData(f *http2.DataFrame) error {
	n := f.Length
	c.connRecv -= int64(n)
	if c.connRecv < 0 {
		return c.goAway(http2.ErrCodeFlowControl, "h2: DATA beyond the connection's window")
	}
	c.connOwed += n
	var out []byte
	if c.connOwed >= creditThreshold {
		out = appendWindowUpdate(out, 0, c.connOwed)
		c.connRecv += int64(c.connOwed)
		c.connOwed = 0
	}
	c.mu.Lock()
	st := c.streams[f.StreamID]
	switch {
	case st == nil && f.StreamID > c.lastStreamID:
		c.mu.Unlock()
		return c.goAway(http2.ErrCodeProtocol, "h2: DATA on a stream not opened")
	case st == nil || st.reset:
		// A stream that ended or was reset, its frames still in flight: ignored but for the
		// connection window.
		c.mu.Unlock()
		return c.writeIf(out)
	case st.remoteClosed:
		out = append(out, st.resetLocked(http2.ErrCodeStreamClosed)...)
		c.mu.Unlock()
		return c.writeIf(out)
	}
	st.recvWindow -= int64(n)
	if st.recvWindow < 0 {
		out = append(out, st.resetLocked(http2.ErrCodeFlowControl)...)
		c.mu.Unlock()
		return c.writeIf(out)
	}
	st.owed += n
	if !st.recvDone {
		st.receive(f.Data())
		if len(st.queue) > maxQueued {
			// Messages of a few bytes would cost far more than the window that bounds them.
			out = append(out, st.resetLocked(http2.ErrCodeEnhanceYourCalm)...)
			c.ended.Store(st.events != nil)
			c.mu.Unlock()
			return c.writeIf(out)
		}
	}
	if f.StreamEnded() {
		st.remoteClosed = true
		st.endReceiving(io.EOF)
	}
	// A stream's window is returned only while none of its messages waits for the handler;
	// RecvMsg returns it otherwise.
	if (len(st.queue) == 0 || st.recvDone) && st.owed >= creditThreshold && !st.remoteClosed {
		out = appendWindowUpdate(out, st.id, st.owed)
		st.recvWindow += int64(st.owed)
		st.owed = 0
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.writeIf(out)
}

func (c *conn) handleHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return c.goAway(http2.ErrCodeProtocol, "h2: a client stream with an even ID")
	}
	if id <= c.lastStreamID {
		return c.handleTrailers(f)
	}
	c.lastStreamID = id
	if f.Truncated {
		return c.earlyAbort(id, 431, codes.Internal, "h2: the request's header list is larger than 16 KiB")
	}
	if f.PseudoValue("method") != "POST" {
		return c.writeIf(appendRSTStream(nil, id, http2.ErrCodeProtocol))
	}
	var contentType, timeout string
	for _, h := range f.RegularFields() {
		switch h.Name {
		case "content-type":
			contentType = h.Value
		case "grpc-timeout":
			timeout = h.Value
		}
	}
	if contentType != "application/grpc" && !strings.HasPrefix(contentType, "application/grpc+") &&
		!strings.HasPrefix(contentType, "application/grpc;") {
		return c.earlyAbort(id, 415, codes.InvalidArgument, fmt.Sprintf("invalid gRPC request content-type %q", contentType))
	}
	c.mu.Lock()
	active := len(c.streams)
	c.mu.Unlock()
	if active >= int(c.s.cfg.MaxConcurrentStreams) {
		return c.writeIf(appendRSTStream(nil, id, http2.ErrCodeRefusedStream))
	}
	path := f.PseudoValue("path")
	m := c.s.methods[path]
	if m == nil {
		return c.trailersOnly(id, codes.Unimplemented, fmt.Sprintf("unknown method %s", path), !f.StreamEnded())
	}
	md, err := incomingMetadata(f.RegularFields())
	if err != nil {
		return c.writeIf(appendRSTStream(nil, id, http2.ErrCodeProtocol))
	}
	ctx := c.ctx
	if len(md) > 0 {
		ctx = metadata.NewIncomingContext(ctx, md)
	}
	var cancel context.CancelFunc
	deadline := timeout != ""
	if deadline {
		d, err := parseTimeout(timeout)
		if err != nil {
			return c.earlyAbort(id, 400, codes.Internal, err.Error())
		}
		ctx, cancel = context.WithTimeout(ctx, d)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	st := &stream{c: c, id: id, m: m, ctx: ctx, cancel: cancel, recvWindow: initialWindow}
	c.mu.Lock()
	st.sendWindow = c.initialSendWindow
	c.streams[id] = st
	if f.StreamEnded() {
		st.remoteClosed = true
		st.endReceiving(io.EOF)
	}
	c.mu.Unlock()
	if deadline {
		// The deadline ends the context by itself: the stream's waiters must wake, and an
		// event stream ends (reset, as gRPC's server does).
		st.stopWake = context.AfterFunc(ctx, func() {
			c.mu.Lock()
			var rst []byte
			if st.events != nil && !st.ended && errors.Is(st.ctx.Err(), context.DeadlineExceeded) {
				rst = st.resetLocked(http2.ErrCodeCancel)
				c.ended.Store(true)
			}
			c.cond.Broadcast()
			c.mu.Unlock()
			_ = c.writeIf(rst)
		})
	}
	if m.open == nil {
		c.s.wg.Add(1)
		go st.run()
		return nil
	}
	c.work(func() {
		events, err := m.open(st)
		if err != nil {
			c.mu.Lock()
			st.ended = true
			c.mu.Unlock()
			if st.finish(err) {
				st.done()
			}
			return
		}
		c.mu.Lock()
		st.events = events
		c.mu.Unlock()
	})
	return nil
}

// handleTrailers handles HEADERS on a stream already open: trailers, which must end the
// client's side.
func (c *conn) handleTrailers(f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	st := c.streams[f.StreamID]
	var rst []byte
	switch {
	case st == nil || st.reset:
		// A stream that ended: frames in flight are ignored.
	case !f.StreamEnded() || st.remoteClosed:
		rst = st.resetLocked(http2.ErrCodeProtocol)
	default:
		st.remoteClosed = true
		st.endReceiving(io.EOF)
		c.cond.Broadcast()
	}
	c.mu.Unlock()
	return c.writeIf(rst)
}

// earlyAbort answers a request the server does not take with an HTTP status and a gRPC status,
// as gRPC does.
func (c *conn) earlyAbort(id uint32, httpStatus int, code codes.Code, msg string) error {
	block := appendStatusField(nil, httpStatus)
	block = appendField(block, "content-type", "application/grpc")
	block = appendField(block, "grpc-status", fmt.Sprint(int(code)))
	block = appendField(block, "grpc-message", encodeGRPCMessage(msg))
	return c.writeHeaderBlock(id, block, true)
}

// trailersOnly answers a request with a gRPC status and no message; reset asks the client to
// stop sending (RST_STREAM NO_ERROR) when it has not ended its side.
func (c *conn) trailersOnly(id uint32, code codes.Code, msg string, reset bool) error {
	block := append([]byte(nil), indexedStatus200)
	block = appendField(block, "content-type", "application/grpc")
	block = appendField(block, "grpc-status", fmt.Sprint(int(code)))
	block = appendField(block, "grpc-message", encodeGRPCMessage(msg))
	c.mu.Lock()
	b := appendHeaders(nil, id, block, true, c.maxSendFrame)
	c.mu.Unlock()
	if reset {
		b = appendRSTStream(b, id, http2.ErrCodeNo)
	}
	return c.write(b)
}

func (c *conn) writeHeaderBlock(id uint32, block []byte, endStream bool) error {
	c.mu.Lock()
	b := appendHeaders(nil, id, block, endStream, c.maxSendFrame)
	c.mu.Unlock()
	return c.write(b)
}

// goAway sends GOAWAY with code and returns the error that ends the connection.
func (c *conn) goAway(code http2.ErrCode, reason string) error {
	debug := reason
	if len(debug) > 256 {
		debug = debug[:256]
	}
	_ = c.write(appendGoAway(nil, c.lastStreamID, code, debug))
	return fmt.Errorf("h2: connection error %v: %s", code, reason)
}

// writeIf writes b if it is not empty.
func (c *conn) writeIf(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return c.write(b)
}

// write writes b under the write lock, bounded by WriteTimeout; a failed write ends the
// connection.
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(b)
}

func (c *conn) writeLocked(b []byte) error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return status.Error(codes.Unavailable, "h2: the connection closed")
	}
	_ = c.tc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	if _, err := c.tc.Write(b); err != nil {
		c.close(fmt.Errorf("h2: write: %w", err))
		return status.Errorf(codes.Unavailable, "h2: the connection closed: write: %v", err)
	}
	return nil
}

// checkAlive is the keepalive timer's function: it pings a peer silent for KeepaliveTime and
// closes the connection when the ping gets no answer (or any other frame) in KeepaliveTimeout.
func (c *conn) checkAlive() {
	c.mu.Lock()
	closed, ka := c.err != nil, c.keepalive
	c.mu.Unlock()
	if closed || ka == nil {
		return
	}
	now := time.Now().UnixNano()
	last, sent := c.lastRead.Load(), c.pingSentAt.Load()
	if sent != 0 && last < sent {
		if wait := time.Duration(now - sent); wait < c.s.cfg.KeepaliveTimeout {
			ka.Reset(c.s.cfg.KeepaliveTimeout - wait)
			return
		}
		c.close(errors.New("h2: keepalive: the client did not answer a ping"))
		return
	}
	c.pingSentAt.Store(0)
	if idle := time.Duration(now - last); idle < c.s.cfg.KeepaliveTime {
		ka.Reset(c.s.cfg.KeepaliveTime - idle)
		return
	}
	c.pingSentAt.Store(now)
	if c.write(appendPing(nil, false, [8]byte{'k', 'e', 'e', 'p', 'a', 'l', 'i', 'v'})) == nil {
		ka.Reset(c.s.cfg.KeepaliveTimeout)
	}
}

// close ends the connection for err: every stream's waiters wake and fail.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if err == nil {
		err = errors.New("h2: connection closed")
	}
	c.err = err
	for _, st := range c.streams {
		st.cancel()
	}
	c.cond.Broadcast()
	ka := c.keepalive
	c.mu.Unlock()
	if ka != nil {
		ka.Stop()
	}
	_ = c.raw.Close()
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.s.log.Debug("connection closed", "peer", c.raw.RemoteAddr().String(), "error", err.Error())
	}
}

// streamEnded removes st; a connection the peer is leaving closes with its last stream.
func (c *conn) streamEnded(st *stream) {
	c.mu.Lock()
	delete(c.streams, st.id)
	last := c.goingAway && len(c.streams) == 0
	c.cond.Broadcast()
	c.mu.Unlock()
	if last {
		c.close(errors.New("h2: the client sent GOAWAY"))
	}
}

// bufPool holds write buffers of at most maxPooled bytes.
var bufPool = sync.Pool{New: func() any { return &bytesBuffer{b: make([]byte, 0, 1024)} }}

const maxPooled = maxWrite + 4*(frameHeaderLen) + 1024
