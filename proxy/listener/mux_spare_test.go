package listener

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// gateConn blocks every Write until released, then records what the buffer holds.
type gateConn struct {
	net.Conn
	entered, release chan struct{}
	got              [][]byte
}

func (c *gateConn) Write(p []byte) (int, error) {
	c.entered <- struct{}{}
	<-c.release
	c.got = append(c.got, bytes.Clone(p))
	return len(p), nil
}
func (c *gateConn) SetWriteDeadline(time.Time) error { return nil }

// TestMuxWriteBufferNeverAliased: a write buffer too large to keep (over 4*maxPending) is
// dropped after its write; spare must not then still be the array that pending was given, or
// the next swap hands pending the array being written, and a frame queued during that write
// overwrites the bytes in flight. (Control frames no longer queue that much, see
// TestMuxControlFramesBounded; the state is set up directly.)
func TestMuxWriteBufferNeverAliased(t *testing.T) {
	gc := &gateConn{entered: make(chan struct{}), release: make(chan struct{})}
	mc := &muxConn{m: &Manager{yield: func() {}}, conn: gc, streams: map[uint32]*stream{}, done: make(chan struct{})}
	mc.wcond.L = &mc.wmu
	mc.spare = make([]byte, 0, 64)
	mc.pending = make([]byte, 0, 4*maxPending+64)
	done := make(chan error)
	go func() { done <- mc.writeFrame(frameReset, 1, nil) }()
	<-gc.entered // write 1, from the oversized array, in flight; pending is spare's array
	require.NoError(t, mc.writeFrame(frameData, 2, nil))
	gc.release <- struct{}{}
	<-gc.entered // write 2, stream 2's frame, in flight
	require.NoError(t, mc.writeFrame(frameData, 3, nil))
	gc.release <- struct{}{}
	for {
		select {
		case <-gc.entered:
			gc.release <- struct{}{}
			continue
		case err := <-done:
			require.NoError(t, err)
		}
		break
	}
	require.Len(t, gc.got, 3)
	id := binary.BigEndian.Uint32(gc.got[1][4:])
	require.Equal(t, uint32(2), id, "the frame in flight was overwritten: stream 2's frame left as stream %d's", id)
}

// closeGate is a gateConn whose Close records that it was called and lets a blocked Write
// fail.
type closeGate struct {
	*gateConn
	closed chan struct{}
}

func (c *closeGate) Close() error {
	close(c.closed)
	return nil
}

// TestMuxControlFramesBounded: control frames do not wait for maxPending (the read loop sends
// them), so a peer that sends without reading could have the sidecar queue its replies without
// bound while a write blocks. Past maxControlPending the connection fails and is closed.
func TestMuxControlFramesBounded(t *testing.T) {
	gc := &closeGate{gateConn: &gateConn{entered: make(chan struct{}), release: make(chan struct{})}, closed: make(chan struct{})}
	m := &Manager{yield: func() {}, muxes: map[*muxConn]struct{}{}}
	mc := &muxConn{m: m, conn: gc, raw: gc, streams: map[uint32]*stream{}, done: make(chan struct{})}
	mc.wcond.L = &mc.wmu
	done := make(chan error)
	go func() { done <- mc.writeFrame(frameReset, 1, nil) }()
	<-gc.entered // a write that the peer does not take
	var err error
	frames := 0
	for ; err == nil && frames < 2*maxControlPending/frameHeaderLen; frames++ {
		err = mc.writeFrame(frameReset, 7, nil) // e.g. RESETs for OPENs past maxStreams
	}
	require.ErrorIs(t, err, errMuxProtocol)
	require.ErrorContains(t, err, "the peer does not read")
	require.Equal(t, maxControlPending/frameHeaderLen+1, frames, "refused at the bound, not before")
	select {
	case <-gc.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed")
	}
	gc.release <- struct{}{}
	require.ErrorIs(t, <-done, errMuxProtocol, "the blocked writer sees the failure")
}
