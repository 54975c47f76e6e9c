package h2

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// stream is one request: a grpc.ServerStream for its method's handler. As with gRPC, SendMsg
// may be called concurrently with RecvMsg but not with itself, nor RecvMsg with itself.
type stream struct {
	c        *conn
	id       uint32
	m        *method
	ctx      context.Context
	cancel   context.CancelFunc
	stopWake func() bool // nil without a deadline
	// events is the handler of an event stream, nil for a stream with a goroutine (guarded by
	// c.mu; set before its first message is delivered, then only read).
	events Events
	// ended: an event stream's End was called (guarded by c.mu).
	ended bool

	// Guarded by c.mu.
	sendWindow int64
	recvWindow int64
	owed       uint32   // received bytes not yet credited to the stream's window
	queue      [][]byte // received messages the handler has not read
	recvErr    error    // why receiving ended (io.EOF: the client ended its side)
	recvDone   bool     // recvErr is set: nothing more is queued
	// remoteClosed: the client ended its side (END_STREAM), or the stream was reset.
	remoteClosed bool
	// reset: the stream was reset (by either side); nothing more is sent on it.
	reset     bool
	peerReset bool

	// The reader's assembly of the message being received.
	prefix  [5]byte
	prefixN int
	msg     []byte
	need    int

	// finished: the trailers went out (or the stream ended otherwise); written with c.wmu and
	// c.mu held, read with either.
	finished bool
	// finishing: the handler returned; a SendMsg still running may complete the message it
	// has begun (midMessage), and then sends the trailers, unless the client grants it no
	// window for WriteTimeout (stalled).
	finishing, midMessage, stalled bool
	stall                          *time.Timer

	// Guarded by c.wmu.
	headersSent bool
	header      metadata.MD
	trailer     metadata.MD
	sending     bool   // a SendMsg runs
	handOff     bool   // finish left the stream's end to the running SendMsg
	trailers    []byte // the frames finish left for it to write, if any
}

// run runs the handler, then sends its status.
func (st *stream) run() {
	defer st.c.s.wg.Done()
	if st.finish(st.callHandler()) {
		st.done()
	}
}

// done ends the stream once its status went out (or never will).
func (st *stream) done() {
	st.cancel()
	if st.stopWake != nil {
		st.stopWake()
	}
	st.c.mu.Lock()
	stall := st.stall
	st.c.mu.Unlock()
	if stall != nil {
		stall.Stop()
	}
	st.c.streamEnded(st)
}

func (st *stream) callHandler() (err error) {
	defer func() {
		if r := recover(); r != nil {
			st.c.s.log.Error("stream handler panicked", "stream", st.id, "panic_type", fmt.Sprintf("%T", r))
			err = status.Error(codes.Internal, "h2: the handler panicked")
		}
	}()
	return st.m.handler(st.m.srv, st)
}

// receive adds DATA to the message being assembled, and queues the messages it completes.
// c.mu is held.
func (st *stream) receive(p []byte) {
	for len(p) > 0 {
		if st.prefixN < len(st.prefix) {
			k := copy(st.prefix[st.prefixN:], p)
			st.prefixN += k
			p = p[k:]
			if st.prefixN < len(st.prefix) {
				return
			}
			switch st.prefix[0] {
			case 0:
			case 1:
				st.endReceiving(status.Error(codes.Unimplemented, "h2: compressed messages are not accepted"))
				return
			default:
				st.endReceiving(status.Errorf(codes.Internal, "h2: a message's compressed flag is %d", st.prefix[0]))
				return
			}
			n := binary.BigEndian.Uint32(st.prefix[1:])
			if limit := st.c.s.cfg.MaxRecvMsgSize; int64(n) > int64(limit) {
				st.endReceiving(status.Errorf(codes.ResourceExhausted, "h2: received message larger than max (%d vs. %d)", n, limit))
				return
			}
			st.need = int(n)
			st.msg = make([]byte, 0, min(st.need, maxWrite))
		}
		k := min(len(p), st.need-len(st.msg))
		st.msg = append(st.msg, p[:k]...)
		p = p[k:]
		if len(st.msg) == st.need {
			st.queue = append(st.queue, st.msg)
			st.msg, st.prefixN = nil, 0
		}
	}
}

// endReceiving ends the stream's receiving with err (io.EOF: the client ended its side, in
// which case a message half received is an error). c.mu is held.
func (st *stream) endReceiving(err error) {
	if st.recvDone {
		return
	}
	if errors.Is(err, io.EOF) && st.prefixN > 0 {
		err = status.Error(codes.Internal, "h2: the client ended the stream inside a message")
	}
	st.recvErr, st.recvDone = err, true
	st.msg = nil
}

// resetLocked resets the stream: its handler's calls fail and nothing more is sent on it. It
// returns the RST_STREAM to write (after c.mu is released), none for a reset by the peer.
// c.mu is held.
func (st *stream) resetLocked(code http2.ErrCode) []byte {
	if st.reset {
		return nil
	}
	st.reset, st.remoteClosed = true, true
	st.endReceiving(status.Error(codes.Canceled, "h2: the stream was reset"))
	st.queue = nil
	st.cancel()
	st.c.cond.Broadcast()
	if st.peerReset {
		return nil
	}
	return appendRSTStream(nil, st.id, code)
}

func (st *stream) Context() context.Context { return st.ctx }

func (st *stream) SetHeader(md metadata.MD) error {
	st.c.wmu.Lock()
	defer st.c.wmu.Unlock()
	if st.headersSent {
		return status.Error(codes.Internal, "h2: SetHeader after the headers were sent")
	}
	st.header = metadata.Join(st.header, md)
	return nil
}

func (st *stream) SendHeader(md metadata.MD) error {
	st.c.wmu.Lock()
	defer st.c.wmu.Unlock()
	if st.headersSent {
		return status.Error(codes.Internal, "h2: SendHeader called twice")
	}
	st.header = metadata.Join(st.header, md)
	if err := st.sendable(); err != nil {
		return err
	}
	return st.c.writeLocked(st.appendResponseHeaders(nil))
}

func (st *stream) SetTrailer(md metadata.MD) {
	st.c.wmu.Lock()
	defer st.c.wmu.Unlock()
	st.trailer = metadata.Join(st.trailer, md)
}

// appendResponseHeaders appends the response's HEADERS and marks them sent; c.wmu is held.
func (st *stream) appendResponseHeaders(b []byte) []byte {
	block := append([]byte(nil), indexedStatus200)
	block = appendField(block, "content-type", "application/grpc")
	block = appendMetadata(block, st.header)
	st.headersSent = true
	st.c.sentData.Store(true)
	st.c.mu.Lock()
	maxFrame := st.c.maxSendFrame
	st.c.mu.Unlock()
	return appendHeaders(b, st.id, block, false, maxFrame)
}

// sendable returns why nothing more may be sent on the stream; c.wmu is held.
func (st *stream) sendable() error {
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	switch {
	case st.c.err != nil:
		return status.Error(codes.Unavailable, "h2: the connection closed")
	case st.finished || st.reset:
		return status.Error(codes.Canceled, "h2: the stream ended")
	}
	return nil
}

// SendMsg sends m, a protobuf message, as DATA, waiting for flow-control window as needed. A
// message goes out whole or, if sending fails part way, the stream is reset, so the client
// never takes a part for a message. A SendMsg running when the handler returns completes the
// message it has begun, then sends the handler's status.
func (st *stream) SendMsg(m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "h2: %T is not a protobuf message", m)
	}
	body := make([]byte, 5, 5+proto.Size(msg))
	body, err := proto.MarshalOptions{}.MarshalAppend(body, msg)
	if err != nil {
		return status.Errorf(codes.Internal, "h2: marshal: %v", err)
	}
	if len(body)-5 > 1<<32-1 {
		return status.Error(codes.ResourceExhausted, "h2: message larger than 4 GiB")
	}
	binary.BigEndian.PutUint32(body[1:], uint32(len(body)-5)) //nolint:gosec // G115: checked above
	c := st.c
	c.wmu.Lock()
	if st.sending {
		c.wmu.Unlock()
		return status.Error(codes.Internal, "h2: concurrent SendMsg on one stream")
	}
	st.sending = true
	c.wmu.Unlock()

	err = st.send(body)

	c.wmu.Lock()
	st.sending = false
	c.mu.Lock()
	var rst []byte
	if err != nil && st.midMessage {
		rst = st.resetLocked(http2.ErrCodeCancel)
	}
	st.midMessage = false
	trailers, handOff := st.trailers, st.handOff
	st.trailers, st.handOff = nil, false
	c.mu.Unlock()
	if rst != nil {
		_ = c.writeLocked(rst)
	}
	if handOff {
		// The handler returned while this message was going out: its status follows it.
		if len(trailers) > 0 && st.sendable() == nil {
			_ = c.writeLocked(trailers)
		}
		c.mu.Lock()
		st.finished = true
		c.mu.Unlock()
	}
	c.wmu.Unlock()
	if handOff {
		st.done()
	}
	return err
}

// send writes body, the length-prefixed message, as the windows allow.
func (st *stream) send(body []byte) error {
	for len(body) > 0 {
		n, maxFrame, err := st.reserve(len(body))
		if err != nil {
			return err
		}
		if err := st.writeData(body[:n], maxFrame); err != nil {
			return err
		}
		body = body[n:]
		st.c.mu.Lock()
		st.midMessage = len(body) > 0
		st.c.mu.Unlock()
	}
	return nil
}

// reserve waits until the stream and the connection have window, and takes up to want bytes
// (at most maxWrite) of it.
func (st *stream) reserve(want int) (n, maxFrame int, err error) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.err != nil:
			return 0, 0, status.Error(codes.Unavailable, "h2: the connection closed")
		case st.reset || st.finished || st.finishing && !st.midMessage:
			return 0, 0, status.Error(codes.Canceled, "h2: the stream ended")
		case st.stalled:
			return 0, 0, status.Error(codes.Unavailable, "h2: the client granted no flow-control window after the stream ended")
		case st.ctx.Err() != nil:
			return 0, 0, status.FromContextError(st.ctx.Err()).Err()
		}
		if w := min(c.sendWindow, st.sendWindow); w > 0 {
			n := int(min(w, int64(want), maxWrite))
			c.sendWindow -= int64(n)
			st.sendWindow -= int64(n)
			return n, c.maxSendFrame, nil
		}
		c.cond.Wait()
	}
}

// writeData writes p as DATA frames of at most maxFrame bytes, after the response headers if
// they were not sent.
func (st *stream) writeData(p []byte, maxFrame int) error {
	buf := bufPool.Get().(*bytesBuffer)
	defer buf.put()
	b := buf.b[:0]
	st.c.wmu.Lock()
	defer st.c.wmu.Unlock()
	if err := st.sendable(); err != nil {
		return err
	}
	if !st.headersSent {
		b = st.appendResponseHeaders(b)
	}
	for len(p) > 0 {
		k := min(len(p), maxFrame)
		b = appendFrameHeader(b, k, http2.FrameData, 0, st.id)
		b = append(b, p[:k]...)
		p = p[k:]
	}
	buf.b = b
	st.c.sentData.Store(true)
	return st.c.writeLocked(b)
}

// RecvMsg waits for the next message and unmarshals it into m, a protobuf message. It returns
// io.EOF once the client ended its side.
func (st *stream) RecvMsg(m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "h2: %T is not a protobuf message", m)
	}
	c := st.c
	c.mu.Lock()
	for len(st.queue) == 0 && !st.recvDone && c.err == nil && st.ctx.Err() == nil {
		c.cond.Wait()
	}
	if len(st.queue) == 0 {
		err := st.recvErr
		switch {
		case st.recvDone:
		case c.err != nil:
			err = status.Error(codes.Unavailable, "h2: the connection closed")
		default:
			err = status.FromContextError(st.ctx.Err()).Err()
		}
		c.mu.Unlock()
		return err
	}
	data, credit := st.pop()
	c.mu.Unlock()
	if credit != nil {
		if err := c.write(credit); err != nil {
			return status.Error(codes.Unavailable, "h2: the connection closed")
		}
	}
	if err := proto.Unmarshal(data, msg); err != nil {
		return status.Errorf(codes.Internal, "h2: unmarshal: %v", err)
	}
	return nil
}

// pop takes the first received message, and returns the WINDOW_UPDATE to write (after c.mu is
// released) if the stream's window is owed and no message waits any more. c.mu is held.
func (st *stream) pop() (data, credit []byte) {
	data = st.queue[0]
	st.queue[0] = nil
	st.queue = st.queue[1:]
	if len(st.queue) == 0 {
		st.queue = nil
		if st.owed >= creditThreshold && !st.remoteClosed {
			credit = appendWindowUpdate(nil, st.id, st.owed)
			st.recvWindow += int64(st.owed)
			st.owed = 0
		}
	}
	return data, credit
}

// finish sends the handler's status as trailers (or a trailers-only response), then resets
// the stream if the client has not ended its side, as gRPC does. If a SendMsg is running, the
// frames are left for it to write after its message, and finish returns false: that SendMsg
// ends the stream.
func (st *stream) finish(handlerErr error) bool {
	c := st.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	st.finishing = true
	c.cond.Broadcast() // a SendMsg waiting for window to begin a message gives up
	maxFrame := c.maxSendFrame
	remoteOpen := !st.remoteClosed
	c.mu.Unlock()
	if st.sendable() != nil {
		c.mu.Lock()
		st.finished = true
		c.mu.Unlock()
		st.handOff = st.sending
		if st.sending {
			st.stallAfter(c.s.cfg.WriteTimeout)
		}
		return !st.sending
	}
	s, ok := status.FromError(handlerErr)
	if !ok {
		s = status.FromContextError(handlerErr) // Unknown for an error of neither kind
	}
	var block []byte
	if !st.headersSent {
		block = append(block, indexedStatus200)
		block = appendField(block, "content-type", "application/grpc")
		block = appendMetadata(block, st.header)
	}
	block = appendField(block, "grpc-status", strconv.Itoa(int(s.Code())))
	if msg := s.Message(); msg != "" {
		block = appendField(block, "grpc-message", encodeGRPCMessage(msg))
	}
	if p := s.Proto(); len(p.GetDetails()) > 0 {
		if d, err := proto.Marshal(p); err == nil {
			block = appendField(block, "grpc-status-details-bin", base64.RawStdEncoding.EncodeToString(d))
		}
	}
	block = appendMetadata(block, st.trailer)
	b := appendHeaders(nil, st.id, block, true, maxFrame)
	if remoteOpen {
		b = appendRSTStream(b, st.id, http2.ErrCodeNo)
	}
	if st.sending {
		st.trailers, st.handOff = b, true
		st.stallAfter(c.s.cfg.WriteTimeout)
		return false
	}
	_ = c.writeLocked(b)
	c.mu.Lock()
	st.finished = true
	c.cond.Broadcast()
	c.mu.Unlock()
	return true
}

// stallAfter bounds how long the running SendMsg, left to end the stream, may wait for window.
func (st *stream) stallAfter(d time.Duration) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	st.stall = time.AfterFunc(d, func() {
		c.mu.Lock()
		st.stalled = true
		c.cond.Broadcast()
		c.mu.Unlock()
	})
}

// bytesBuffer is a pooled write buffer.
type bytesBuffer struct{ b []byte }

func (buf *bytesBuffer) put() {
	if cap(buf.b) <= maxPooled {
		buf.b = buf.b[:0]
		bufPool.Put(buf)
	}
}
