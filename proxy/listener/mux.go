package listener

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/attestmesh/attestmesh/proxy/metrics"
)

// MuxProto is the ALPN protocol of a multiplexed tunnel between two attestmesh sidecars: the
// app connections from one sidecar to one upstream address travel as streams over shared
// mTLS connections (Istio's HBONE idea, with a small framing of its own instead of HTTP/2).
// Under load, the messages of many app connections leave in one TLS record and one write, and
// arrive with one read, instead of one of each per message and connection. A peer that does
// not negotiate it (an older sidecar, Envoy) gets one mTLS connection per app connection.
//
// Each frame is an 8-byte header, type (1 byte), payload length (3 bytes, at most 16 KiB) and
// stream ID (4 bytes), then the payload. The client opens a stream with OPEN; DATA carries
// bytes; FIN half-closes one direction; RESET aborts both; WINDOW returns flow-control credit
// (each direction of a stream may have at most 256 KiB unacknowledged); GOAWAY (stream 0)
// says that no new streams will be accepted on the connection.
const MuxProto = "attestmesh-mux/1"

type frameType uint8

const (
	frameOpen frameType = 1 + iota
	frameData
	frameFin
	frameReset
	frameWindow
	frameGoAway
)

const (
	frameHeaderLen  = 8
	maxFramePayload = 16 << 10
	// streamWindow is each direction's flow-control window: what a sender may have in flight.
	streamWindow = 256 << 10
	// maxStreams is the most streams one connection carries; the client opens another beyond.
	maxStreams = 256
	// maxPending bounds data queued for one connection's writer; control frames may pass it.
	maxPending = 1 << 20
	// maxControlPending bounds what control frames may queue: they never wait for maxPending
	// (the read loop sends them), so a peer that sends without reading (every OPEN past
	// maxStreams is answered with RESET) would otherwise queue replies without bound while a
	// write blocks, for up to muxWriteTimeout. Real control traffic is a few frames per stream.
	maxControlPending = maxPending + 1<<20
	// muxWriteTimeout bounds one write to the peer: a peer that reads nothing for this long
	// loses the connection and its streams.
	muxWriteTimeout = 30 * time.Second
	// muxIdleTimeout closes a connection without streams (the server waits twice as long).
	muxIdleTimeout = 90 * time.Second
)

var (
	errMuxProtocol = errors.New("listener: multiplexed tunnel: protocol error")
	errMuxClosed   = errors.New("listener: multiplexed tunnel closed")
	errStreamReset = errors.New("listener: stream reset by the peer")
	errMuxFull     = errors.New("listener: multiplexed tunnel: no new streams on this connection")
)

// muxConn is one multiplexed mTLS connection, client or server side. Its methods are safe for
// concurrent use; readLoop runs on one goroutine.
type muxConn struct {
	m      *Manager
	conn   net.Conn // the TLS connection (what frames are read from and written to)
	raw    net.Conn // the socket under it, closed at once on failure
	client bool
	log    *slog.Logger
	// peer is the peer's certificate chain; peerNotAfter the leaf's expiry.
	peer         []*x509.Certificate
	peerNotAfter time.Time
	// sessionPrefix is the local SVID's (client): a rotated SVID means new connections.
	sessionPrefix string
	// accept handles an OPEN (server side).
	accept func(mc *muxConn, s *stream)
	// onClose runs once when the connection is gone.
	onClose func(mc *muxConn)

	wmu       sync.Mutex
	wcond     sync.Cond // data writers wait while pending is full
	pending   []byte
	spare     []byte
	writing   bool
	werr      error
	wdeadline time.Time

	mu       sync.Mutex
	streams  map[uint32]*stream
	nstreams atomic.Int32 // len(streams), read without mu by writeFrame
	nextID   uint32
	draining bool // no new streams
	closed   bool
	idle     *time.Timer
	done     chan struct{}

	// Server side: the authorization verdict for the last listener state and bundle (read
	// loop only).
	authState  *lstate
	authBundle *x509bundle.Bundle
}

// newMuxConn wraps an established connection that negotiated MuxProto; onClose (may be nil)
// runs once when it is gone.
func (m *Manager) newMuxConn(tc *tls.Conn, client bool, log *slog.Logger, onClose func(*muxConn)) *muxConn {
	cs := tc.ConnectionState()
	mc := &muxConn{
		m: m, conn: tc, raw: tc.NetConn(), client: client, log: log, peer: cs.PeerCertificates, onClose: onClose,
		sessionPrefix: m.cfg.Creds.SessionPrefix(),
		streams:       map[uint32]*stream{},
		done:          make(chan struct{}),
	}
	if len(cs.PeerCertificates) > 0 {
		mc.peerNotAfter = cs.PeerCertificates[0].NotAfter
	}
	mc.wcond.L = &mc.wmu
	m.connsMu.Lock()
	m.muxes[mc] = struct{}{}
	draining := m.draining
	m.connsMu.Unlock()
	if draining {
		mc.drain()
	}
	return mc
}

// maxStreamID is the last stream ID a client connection opens (IDs are never reused).
const maxStreamID = 1<<31 - 1

// usable reports whether a client connection may take a new stream: not draining or full, the
// local SVID unchanged since its handshake, the peer's certificate valid for another minute.
// A connection that is too old for new streams starts to drain.
func (mc *muxConn) usable(now time.Time) bool {
	if mc.sessionPrefix != mc.m.cfg.Creds.SessionPrefix() || now.Add(time.Minute).After(mc.peerNotAfter) {
		go mc.drain()
		return false
	}
	mc.mu.Lock()
	exhausted := mc.nextID >= maxStreamID
	ok := !mc.draining && !mc.closed && !exhausted && len(mc.streams) < maxStreams
	mc.mu.Unlock()
	if exhausted {
		// Its stream IDs are spent: it drains, and the next app connection gets a new one.
		go mc.drain()
	}
	return ok
}

// openStream starts a stream for the local connection local (client side).
func (mc *muxConn) openStream(local net.Conn, bytes *metrics.Counter, idle time.Duration) (*stream, error) {
	mc.mu.Lock()
	if mc.draining || mc.closed || len(mc.streams) >= maxStreams || mc.nextID >= maxStreamID {
		mc.mu.Unlock()
		return nil, errMuxFull
	}
	mc.nextID++
	s := mc.newStreamLocked(mc.nextID, bytes, idle)
	s.setLocal(local)
	mc.mu.Unlock()
	if err := mc.writeFrame(frameOpen, s.id, nil); err != nil {
		s.abort(false, err)
		return nil, err
	}
	return s, nil
}

func (mc *muxConn) newStreamLocked(id uint32, bytes *metrics.Counter, idle time.Duration) *stream {
	s := &stream{mc: mc, id: id, bytes: bytes, idle: idle, credit: streamWindow, done: make(chan struct{})}
	s.ccond.L = &s.cmu
	s.last.Store(time.Now().UnixNano())
	mc.streams[id] = s
	mc.nstreams.Store(int32(len(mc.streams))) //nolint:gosec // G115: at most maxStreams
	if mc.idle != nil {
		mc.idle.Stop()
		mc.idle = nil
	}
	return s
}

func (mc *muxConn) stream(id uint32) *stream {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return mc.streams[id]
}

// removeStream forgets an ended stream; a connection left without streams closes if it is
// draining, or after muxIdleTimeout.
func (mc *muxConn) removeStream(s *stream) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.streams[s.id] != s {
		return
	}
	delete(mc.streams, s.id)
	mc.nstreams.Store(int32(len(mc.streams))) //nolint:gosec // G115: at most maxStreams
	if len(mc.streams) > 0 || mc.closed {
		return
	}
	if mc.draining {
		go mc.close(nil)
		return
	}
	d := muxIdleTimeout
	if !mc.client {
		d *= 2
	}
	mc.idle = time.AfterFunc(d, func() {
		mc.mu.Lock()
		empty := len(mc.streams) == 0
		mc.mu.Unlock()
		if empty {
			mc.close(nil)
		}
	})
}

// drain takes no new streams (a server also tells its client with GOAWAY) and closes the
// connection once its last stream has ended.
func (mc *muxConn) drain() {
	mc.mu.Lock()
	if mc.draining || mc.closed {
		mc.mu.Unlock()
		return
	}
	mc.draining = true
	empty := len(mc.streams) == 0
	mc.mu.Unlock()
	if !mc.client {
		_ = mc.writeFrame(frameGoAway, 0, nil)
	}
	if empty {
		mc.close(nil)
	}
}

// close ends the connection: err == nil is a graceful close (close_notify), otherwise the
// socket is closed at once. Every open stream is aborted. Safe to call more than once.
func (mc *muxConn) close(err error) {
	mc.mu.Lock()
	if mc.closed {
		mc.mu.Unlock()
		return
	}
	mc.closed = true
	if mc.idle != nil {
		mc.idle.Stop()
	}
	streams := make([]*stream, 0, len(mc.streams))
	for _, s := range mc.streams {
		streams = append(streams, s)
	}
	mc.mu.Unlock()
	if err == nil {
		_ = mc.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = mc.conn.Close()
	} else {
		_ = mc.raw.Close()
	}
	mc.wmu.Lock()
	if mc.werr == nil {
		mc.werr = errMuxClosed
	}
	mc.wcond.Broadcast()
	mc.wmu.Unlock()
	for _, s := range streams {
		s.abort(false, errMuxClosed)
	}
	close(mc.done)
	mc.m.connsMu.Lock()
	delete(mc.m.muxes, mc)
	mc.m.connsMu.Unlock()
	if mc.onClose != nil {
		mc.onClose(mc)
	}
}

// writeFrame queues one frame and, unless another goroutine is writing, writes everything
// queued: frames that arrive while a write is in progress leave together with the next write,
// so under load many messages share one TLS record and one system call, and at low load
// nothing waits. DATA waits while maxPending bytes are queued; control frames never wait (the
// read loop sends them and must not wait for its own peer).
func (mc *muxConn) writeFrame(typ frameType, id uint32, p []byte) error {
	mc.wmu.Lock()
	if typ == frameData {
		for len(mc.pending) >= maxPending && mc.werr == nil {
			mc.wcond.Wait()
		}
	} else if len(mc.pending) >= maxControlPending && mc.werr == nil {
		mc.werr = fmt.Errorf("%w: the peer does not read: %d bytes of frames queued for it", errMuxProtocol, len(mc.pending))
		mc.wcond.Broadcast()
		err := mc.werr
		mc.wmu.Unlock()
		go mc.close(err) // closes the socket, which ends the blocked write
		return err
	}
	if err := mc.werr; err != nil {
		mc.wmu.Unlock()
		return err
	}
	var hdr [frameHeaderLen]byte
	binary.BigEndian.PutUint32(hdr[0:], uint32(len(p))) //nolint:gosec // G115: len(p) <= maxFramePayload
	hdr[0] = byte(typ)
	binary.BigEndian.PutUint32(hdr[4:], id)
	mc.pending = append(append(mc.pending, hdr[:]...), p...)
	if mc.writing {
		mc.wmu.Unlock()
		return nil
	}
	mc.writing = true
	// Let the goroutines that are ready to run (often woken by the same poll) queue their
	// frames first: with one thread nothing else runs while this one writes, and they would
	// each write alone. Not with one stream: there is nobody to wait for, and Gosched is not
	// free: it wakes an idle thread (a futex wake-up), which often takes this goroutine over,
	// so the write waits for a thread to be scheduled and runs on another CPU.
	if mc.nstreams.Load() > 1 {
		mc.wmu.Unlock()
		mc.m.yield()
		mc.wmu.Lock()
	}
	for len(mc.pending) > 0 && mc.werr == nil {
		buf := mc.pending
		// spare is pending's array from now on: it must not be handed out again (when buf is
		// too large to keep, spare stays nil rather than aliasing pending).
		mc.pending, mc.spare = mc.spare[:0], nil
		now := time.Now()
		if mc.wdeadline.Sub(now) < muxWriteTimeout/2 {
			mc.wdeadline = now.Add(muxWriteTimeout)
			_ = mc.conn.SetWriteDeadline(mc.wdeadline)
		}
		mc.wmu.Unlock()
		_, err := mc.conn.Write(buf)
		mc.wmu.Lock()
		if cap(buf) <= 4*maxPending {
			mc.spare = buf[:0]
		}
		if err != nil && mc.werr == nil {
			mc.werr = err
		}
		mc.wcond.Broadcast()
	}
	mc.writing = false
	err := mc.werr
	mc.wmu.Unlock()
	if err != nil {
		go mc.close(err)
	}
	return err
}

// readLoop reads frames until the connection fails or closes, then closes it.
func (mc *muxConn) readLoop() error {
	err := mc.readFrames(mc.conn)
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		mc.close(nil)
		return nil
	}
	mc.close(err)
	return err
}

func (mc *muxConn) readFrames(r io.Reader) error {
	var hdr [frameHeaderLen]byte
	buf := make([]byte, maxFramePayload)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		typ := frameType(hdr[0])
		n := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
		id := binary.BigEndian.Uint32(hdr[4:])
		if n > maxFramePayload {
			return fmt.Errorf("%w: frame of %d bytes, at most %d", errMuxProtocol, n, maxFramePayload)
		}
		p := buf[:n]
		if _, err := io.ReadFull(r, p); err != nil {
			return err
		}
		if err := mc.handle(typ, id, p); err != nil {
			return err
		}
	}
}

func (mc *muxConn) handle(typ frameType, id uint32, p []byte) error {
	switch typ {
	case frameData:
		if s := mc.stream(id); s != nil {
			s.deliver(p)
		}
	case frameFin:
		if s := mc.stream(id); s != nil {
			s.peerFin()
		}
	case frameReset:
		if s := mc.stream(id); s != nil {
			s.abort(false, errStreamReset)
		}
	case frameWindow:
		if len(p) != 4 {
			return fmt.Errorf("%w: WINDOW of %d bytes", errMuxProtocol, len(p))
		}
		if s := mc.stream(id); s != nil {
			s.addCredit(int(binary.BigEndian.Uint32(p)))
		}
	case frameOpen:
		if mc.client || id == 0 || len(p) != 0 {
			return fmt.Errorf("%w: unexpected OPEN", errMuxProtocol)
		}
		mc.mu.Lock()
		switch {
		case mc.streams[id] != nil:
			mc.mu.Unlock()
			return fmt.Errorf("%w: OPEN of open stream %d", errMuxProtocol, id)
		case mc.draining || mc.closed || len(mc.streams) >= maxStreams:
			mc.mu.Unlock()
			_ = mc.writeFrame(frameReset, id, nil)
			return nil
		}
		s := mc.newStreamLocked(id, nil, 0)
		mc.mu.Unlock()
		mc.accept(mc, s)
	case frameGoAway:
		if !mc.client {
			return fmt.Errorf("%w: GOAWAY from a client", errMuxProtocol)
		}
		mc.drain()
	default:
		return fmt.Errorf("%w: unknown frame type %d", errMuxProtocol, typ)
	}
	return nil
}

// stream is one app connection carried over a muxConn. Its local side is the app's plaintext
// connection: the accepted one (client side) or the one dialed to the app (server side).
type stream struct {
	mc    *muxConn
	id    uint32
	bytes *metrics.Counter
	idle  time.Duration
	last  atomic.Int64 // unix nanos of the last byte in either direction

	// local → peer: credit is what the peer still accepts.
	cmu    sync.Mutex
	ccond  sync.Cond
	credit int

	// peer → local. local is set once (server side: after the dial).
	rmu      sync.Mutex
	local    net.Conn
	raw      syscall.RawConn // local's, for the read loop's non-blocking writes; nil: none
	backlog  []byte          // received, not yet written to local
	flushing bool            // a goroutine is writing the backlog
	finIn    bool            // the peer half-closed: local's write side closes after the backlog
	consumed int             // written to local, not yet credited back
	dead     bool

	outDone, inDone atomic.Bool
	endOnce         sync.Once
	done            chan struct{}
	err             error // why it ended, when not cleanly; set before done closes

	// The read loop's non-blocking write, without a closure per write.
	wp   []byte
	wn   int
	werr error
	wfn  func(fd uintptr) bool
}

// setLocal attaches the local connection, then flushes whatever arrived before it.
func (s *stream) setLocal(c net.Conn) {
	var raw syscall.RawConn
	if sc, ok := c.(syscall.Conn); ok {
		if r, err := sc.SyscallConn(); err == nil {
			raw = r
		}
	}
	s.rmu.Lock()
	if s.dead {
		s.rmu.Unlock()
		_ = c.Close()
		return
	}
	s.local, s.raw = c, raw
	if raw != nil {
		s.wfn = s.writeOnce
	}
	start := len(s.backlog) > 0 || s.finIn
	if start {
		s.flushing = true
	}
	s.rmu.Unlock()
	if start {
		go s.flush()
	}
}

// deliver writes p, received from the peer, to the local connection: at once from the read loop
// when nothing is queued and the socket takes it all; otherwise the rest is queued for a
// flushing goroutine, so a slow local reader never holds up the other streams.
func (s *stream) deliver(p []byte) {
	s.last.Store(time.Now().UnixNano())
	if s.bytes != nil {
		s.bytes.Add(float64(len(p)))
	}
	s.rmu.Lock()
	if s.dead {
		s.rmu.Unlock()
		return
	}
	if s.local == nil || s.raw == nil || s.flushing || len(s.backlog) > 0 {
		if len(s.backlog)+len(p) > streamWindow {
			s.rmu.Unlock()
			s.abort(true, fmt.Errorf("%w: stream %d sent past its window", errMuxProtocol, s.id))
			return
		}
		s.backlog = append(s.backlog, p...)
		start := s.local != nil && !s.flushing
		if start {
			s.flushing = true
		}
		s.rmu.Unlock()
		if start {
			go s.flush()
		}
		return
	}
	s.rmu.Unlock()
	n, err := s.tryWrite(p)
	if err != nil {
		s.abort(true, err)
		return
	}
	s.credited(n)
	if n < len(p) {
		s.rmu.Lock()
		s.backlog = append(s.backlog, p[n:]...)
		s.flushing = true
		s.rmu.Unlock()
		go s.flush()
	}
}

// tryWrite makes one non-blocking write to the local socket; EAGAIN is 0 bytes written.
func (s *stream) tryWrite(p []byte) (int, error) {
	s.wp, s.wn, s.werr = p, 0, nil
	if err := s.raw.Write(s.wfn); err != nil {
		return 0, err
	}
	s.wp = nil
	if errors.Is(s.werr, syscall.EAGAIN) {
		return s.wn, nil
	}
	return s.wn, s.werr
}

func (s *stream) writeOnce(fd uintptr) bool {
	for {
		n, err := writeFD(fd, s.wp[s.wn:])
		if n > 0 {
			s.wn += n
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err == nil && s.wn < len(s.wp) && n > 0 {
			continue
		}
		s.werr = err
		return true
	}
}

// flush writes the backlog with blocking writes until it is empty, then half-closes the local
// connection if the peer did.
func (s *stream) flush() {
	for {
		s.rmu.Lock()
		if s.dead {
			s.flushing = false
			s.rmu.Unlock()
			return
		}
		if len(s.backlog) == 0 {
			s.flushing = false
			fin := s.finIn
			s.rmu.Unlock()
			if fin {
				s.closeLocalWrite()
			}
			return
		}
		b := s.backlog
		s.backlog = nil
		local := s.local
		s.rmu.Unlock()
		n, err := local.Write(b)
		s.credited(n)
		if err != nil {
			s.abort(true, err)
			return
		}
	}
}

// credited counts n bytes written to the local connection and returns credit to the peer in
// batches of half a window.
func (s *stream) credited(n int) {
	if n <= 0 {
		return
	}
	s.rmu.Lock()
	s.consumed += n
	c := s.consumed
	if c < streamWindow/2 {
		s.rmu.Unlock()
		return
	}
	s.consumed = 0
	s.rmu.Unlock()
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(c)) //nolint:gosec // G115: c <= 2*streamWindow
	_ = s.mc.writeFrame(frameWindow, s.id, b[:])
}

func (s *stream) peerFin() {
	s.rmu.Lock()
	if s.finIn || s.dead {
		s.rmu.Unlock()
		return
	}
	s.finIn = true
	now := s.local != nil && !s.flushing && len(s.backlog) == 0
	s.rmu.Unlock()
	if now {
		s.closeLocalWrite()
	}
}

func (s *stream) closeLocalWrite() {
	s.rmu.Lock()
	local := s.local
	s.rmu.Unlock()
	closeWrite(local)
	s.inDone.Store(true)
	s.maybeEnd()
}

func (s *stream) addCredit(n int) {
	s.cmu.Lock()
	s.credit += n
	s.ccond.Signal()
	s.cmu.Unlock()
}

// run copies the local connection to the peer until the local side ends, then waits for the
// other direction; it returns why the stream ended (nil when both directions closed cleanly).
func (s *stream) run() error {
	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:maxFramePayload]
	err := s.copyOut(buf)
	bufPool.Put(bp)
	if err != nil {
		s.abort(!errors.Is(err, errStreamReset) && !errors.Is(err, errMuxClosed), err)
	}
	<-s.done
	return s.err
}

func (s *stream) copyOut(buf []byte) error {
	s.rmu.Lock()
	local := s.local
	s.rmu.Unlock()
	if s.idle > 0 {
		_ = local.SetReadDeadline(time.Now().Add(s.idle))
	}
	for {
		err := s.copyOutConn(local, buf)
		switch {
		case err == nil:
			return nil
		case s.idle > 0 && errors.Is(err, os.ErrDeadlineExceeded):
			lastActive := time.Unix(0, s.last.Load())
			if time.Since(lastActive) < s.idle {
				_ = local.SetReadDeadline(lastActive.Add(s.idle))
				continue
			}
			return errIdle
		case s.isDead():
			return errStreamReset
		default:
			return err
		}
	}
}

// waitCredit waits until the peer accepts more bytes and returns how many, or 0 once the
// stream is dead.
func (s *stream) waitCredit(limit int) int {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	for s.credit <= 0 && !s.isDead() {
		s.ccond.Wait()
	}
	if s.isDead() {
		return 0
	}
	return min(s.credit, limit)
}

// sent accounts for k bytes read from the local connection and queues them for the peer.
func (s *stream) sent(p []byte) error {
	s.last.Store(time.Now().UnixNano())
	s.cmu.Lock()
	s.credit -= len(p)
	s.cmu.Unlock()
	if err := s.mc.writeFrame(frameData, s.id, p); err != nil {
		return err
	}
	if s.bytes != nil {
		s.bytes.Add(float64(len(p)))
	}
	return nil
}

// localEOF half-closes the stream towards the peer; the caller then calls maybeEnd.
func (s *stream) localEOF() error {
	if err := s.mc.writeFrame(frameFin, s.id, nil); err != nil {
		return err
	}
	s.outDone.Store(true)
	return nil
}

// copyOutConn copies the local connection to the peer until EOF (then it sends FIN and returns
// nil), an error, or the stream's end.
func (s *stream) copyOutConn(local net.Conn, buf []byte) error {
	for {
		n := s.waitCredit(len(buf))
		if n == 0 {
			return errStreamReset
		}
		k, err := local.Read(buf[:n])
		if k > 0 {
			if werr := s.sent(buf[:k]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			if err := s.localEOF(); err != nil {
				return err
			}
			s.maybeEnd()
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *stream) isDead() bool {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return s.dead
}

// maybeEnd ends the stream cleanly once both directions are closed.
func (s *stream) maybeEnd() {
	if s.outDone.Load() && s.inDone.Load() {
		s.end(nil, false)
	}
}

// abort ends the stream at once: the local connection closes and, with reset, the peer is told.
func (s *stream) abort(reset bool, err error) {
	s.end(err, reset)
}

func (s *stream) end(err error, reset bool) {
	s.endOnce.Do(func() {
		s.rmu.Lock()
		s.dead = true
		local := s.local
		s.backlog = nil
		s.rmu.Unlock()
		s.cmu.Lock()
		s.ccond.Broadcast()
		s.cmu.Unlock()
		// Never called inside a RawConn callback of local: Close would wait for it.
		if local != nil {
			_ = local.Close()
		}
		if reset {
			_ = s.mc.writeFrame(frameReset, s.id, nil)
		}
		s.mc.removeStream(s)
		s.err = err
		close(s.done)
	})
}
