//go:build linux || darwin

package h2

import (
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// TestRestNoSpinOnPartialRecord: a connection whose TLS record is half received costs no CPU
// while it waits for the rest.
func TestRestNoSpinOnPartialRecord(t *testing.T) {
	p := newTestPKI(t)
	_, addr := startServer(t, p, newTestService(), nil, nil)
	var hold sync.Mutex
	holdConn := &holdingConn{hold: &hold}
	c := dialRawConn(t, p, addr, func(nc net.Conn) net.Conn {
		holdConn.Conn = nc
		return holdConn
	}, true)
	c.waitFor(5*time.Second, "SETTINGS", func(f frame) bool { return f.typ == http2.FrameSettings })
	hold.Lock()
	holdConn.cut = true
	hold.Unlock()
	done := make(chan error, 1)
	go func() { done <- c.do(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{7}) }) }()
	time.Sleep(100 * time.Millisecond) // the first half is sent, the rest held
	before := cpuTime(t)
	time.Sleep(time.Second)
	used := cpuTime(t) - before
	t.Logf("CPU used in 1 s while a record was half received: %v", used)
	assert.Less(t, used, 200*time.Millisecond, "the server spins")
	holdConn.release()
	require.NoError(t, <-done)
	c.waitFor(5*time.Second, "PING ack", func(f frame) bool { return f.typ == http2.FramePing && f.flags.Has(http2.FlagPingAck) })
}

// holdingConn, once cut is set, writes the first half of a Write and holds the rest until
// release.
type holdingConn struct {
	net.Conn
	hold     *sync.Mutex
	cut      bool
	released chan struct{}
}

func (h *holdingConn) release() {
	h.hold.Lock()
	defer h.hold.Unlock()
	if h.released != nil {
		close(h.released)
	}
}

func (h *holdingConn) Write(p []byte) (int, error) {
	h.hold.Lock()
	cut := h.cut
	if cut {
		h.cut = false
		h.released = make(chan struct{})
	}
	released := h.released
	h.hold.Unlock()
	if !cut || len(p) < 2 {
		return h.Conn.Write(p)
	}
	n, err := h.Conn.Write(p[:len(p)/2])
	if err != nil {
		return n, err
	}
	<-released
	m, err := h.Conn.Write(p[len(p)/2:])
	return n + m, err
}

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Skip("no getrusage")
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
