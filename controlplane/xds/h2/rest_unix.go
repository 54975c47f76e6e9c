//go:build linux || darwin

package h2

import (
	"errors"
	"net"
	"syscall"
	"time"
)

type rawConn = syscall.RawConn

// restable returns the raw connection that rest waits on, nil if nc has none.
func restable(nc net.Conn) rawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// rest waits until the connection has bytes to read, in a short chain of calls: the goroutine
// of a connection rests here, and the runtime halves a goroutine's stack only while less than
// a quarter of it (less the 800 bytes it keeps for functions that do not check) is in use. A
// TLS read blocked on its socket is about 1.5 KiB of calls, so a goroutine that once grew to
// 8 KiB (most start there: the runtime starts goroutines at the average stack in use, which
// TLS handshakes raise) would stay there; resting here it is halved to 4 KiB.
//
// Bytes that TLS holds already are taken first (a Read with a deadline in the past returns
// them without touching the socket, and times out otherwise), and given to the Framer. Then
// the socket is waited for until a peek finds a byte (Go's poller is edge-triggered: only a
// read that found nothing may wait).
func (c *conn) rest() {
	if c.rawRC == nil || c.rd.peeked {
		return
	}
	_ = c.tc.SetReadDeadline(time.Unix(1, 0))
	n, err := c.tc.Read(c.rd.one[:])
	_ = c.tc.SetReadDeadline(time.Time{})
	if n == 1 {
		c.rd.peeked = true
		return
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return // the Framer's read returns the error
	}
	_ = c.rawRC.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT) //nolint:gosec // G115: a file descriptor
		return !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR)
	})
}
