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

// TestMuxWriteBufferNeverAliased: once one write's buffer exceeds 4*maxPending (control frames
// are never held back), spare is not replaced, pending and spare share an array, and the next
// swap makes pending alias the buffer being written: a frame queued during that write
// overwrites the bytes in flight.
func TestMuxWriteBufferNeverAliased(t *testing.T) {
	gc := &gateConn{entered: make(chan struct{}), release: make(chan struct{})}
	mc := &muxConn{m: &Manager{yield: func() {}}, conn: gc, streams: map[uint32]*stream{}, done: make(chan struct{})}
	mc.wcond.L = &mc.wmu
	done := make(chan error)
	go func() { done <- mc.writeFrame(frameReset, 1, nil) }()
	<-gc.entered // write 1 (8 bytes) in flight
	for i := 0; i < (4*maxPending)/frameHeaderLen+1000; i++ {
		_ = mc.writeFrame(frameReset, 7, nil) // e.g. RSTs for OPENs past maxStreams
	}
	gc.release <- struct{}{}
	<-gc.entered // write 2 (> 4 MiB) in flight; spare is write 1's array
	a := make([]byte, 16)
	copy(a, "stream-2 secret!")
	_ = mc.writeFrame(frameData, 2, a[:0]) // 8 bytes: fits write 1's array exactly
	gc.release <- struct{}{}
	<-gc.entered // write 3: stream 2's frame in flight
	_ = mc.writeFrame(frameData, 3, nil)
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
	require.Greater(t, len(gc.got), 2)
	id := binary.BigEndian.Uint32(gc.got[2][4:])
	require.Equal(t, uint32(2), id, "the frame in flight was overwritten: stream 2's frame left as stream %d's", id)
}
