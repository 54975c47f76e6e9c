package listener

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
)

// frame encodes one multiplexed-tunnel frame.
func frame(typ frameType, id uint32, p []byte) []byte {
	var hdr [frameHeaderLen]byte
	binary.BigEndian.PutUint32(hdr[0:], uint32(len(p))) //nolint:gosec // G115: test frames are small
	hdr[0] = byte(typ)
	binary.BigEndian.PutUint32(hdr[4:], id)
	return append(hdr[:], p...)
}

// FuzzMuxFrames feeds arbitrary bytes from the peer to both sides of a multiplexed
// connection: whatever arrives, the read loop ends with EOF or a protocol error (never a
// panic or a hang), and closing the connection ends every stream it opened.
func FuzzMuxFrames(f *testing.F) {
	window := binary.BigEndian.AppendUint32(nil, 1024)
	f.Add(bytes.Join([][]byte{
		frame(frameOpen, 1, nil), frame(frameData, 1, []byte("hello")), frame(frameWindow, 1, window),
		frame(frameFin, 1, nil), frame(frameOpen, 3, nil), frame(frameReset, 3, nil),
	}, nil))
	f.Add(frame(frameGoAway, 0, nil))
	f.Add(append(frame(frameOpen, 1, nil), frame(frameOpen, 1, nil)...))
	f.Add(frame(frameWindow, 1, []byte{1, 2}))
	f.Add([]byte{byte(frameData), 0xff, 0xff, 0xff, 0, 0, 0, 1})
	f.Add(frame(99, 1, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, client := range []bool{false, true} {
			muxFromPeer(t, client, in)
		}
	})
}

func muxFromPeer(t *testing.T, client bool, in []byte) {
	t.Helper()
	local, peer := net.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(io.Discard, peer) })
	mc := &muxConn{
		m: &Manager{muxes: map[*muxConn]struct{}{}}, conn: local, raw: local, client: client,
		log: slog.New(slog.DiscardHandler), streams: map[uint32]*stream{}, done: make(chan struct{}),
	}
	mc.wcond.L = &mc.wmu
	var apps []net.Conn
	mc.accept = func(_ *muxConn, s *stream) {
		app, other := net.Pipe()
		apps = append(apps, other)
		wg.Go(func() { _, _ = io.Copy(io.Discard, other) })
		s.setLocal(app)
	}
	err := mc.readFrames(bytes.NewReader(in))
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errMuxProtocol) {
		t.Fatalf("read loop ended with %v, want EOF or a protocol error", err)
	}
	mc.close(err)
	mc.mu.Lock()
	left := len(mc.streams)
	mc.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d streams left after close", left)
	}
	_ = peer.Close()
	for _, a := range apps {
		_ = a.Close()
	}
	wg.Wait()
}
