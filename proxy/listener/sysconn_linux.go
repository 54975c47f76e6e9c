package listener

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// wakeAfter is how long a connection's reads may go on without waiting for data, all raw, before
// one of them is a system call the runtime sees (see sysConn).
const wakeAfter = time.Millisecond

// sysConn is a TCP connection whose reads and writes are raw system calls on its non-blocking
// socket, made inside syscall.RawConn's Read and Write (which keep the netpoller's waiting,
// deadlines and Close as net.TCPConn has them).
//
// Why: every system call made through syscall.Syscall tells the Go runtime that the goroutine
// enters a system call, and the first one after the process has been idle wakes the runtime's
// monitor thread (sysmon) from its deep sleep, a futex wake-up on the path of the message. A
// sidecar at one connection goes from idle to busy twice per request, so each request woke sysmon
// twice per sidecar, and sysmon then polled every 20 µs on the other CPU while the sidecar
// worked. A read or write of a non-blocking socket never blocks, so it need not release its P:
// a raw system call leaves the runtime's state alone. sysmon still wakes for its timers, and
// whenever the process makes any other system call.
//
// But sysmon is also what preempts a goroutine that runs for 10 ms and polls the network while
// every P is busy. A goroutine whose socket always has data waiting (a bulk transfer) never waits
// and never makes another system call, so with sysmon asleep it kept its P for as long as the
// transfer lasted (seconds; up to sysmon's 60 s sleep), and every other connection with it. So
// once a connection's reads have gone on for wakeAfter without waiting, the next one is made with
// syscall.Read, which wakes sysmon if it sleeps. A request and its response each wait for data,
// so they are all raw still.
//
// Reads are serialized with each other, and writes with each other, as net.Conn's are.
type sysConn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu  sync.Mutex
	rbuf []byte
	rn   int
	rerr error
	rfn  func(uintptr) bool
	// rbusy: when this connection's reads began to find data without waiting (zero: the last
	// read waited). rwaited: this read waited; rwake: this read is made with syscall.Read.
	rbusy          time.Time
	rwaited, rwake bool

	wmu  sync.Mutex
	wbuf []byte
	wn   int
	werr error
	wfn  func(uintptr) bool
}

// rawIO returns c with raw-system-call reads and writes when it is a TCP connection, otherwise
// c as it is.
func rawIO(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	sc := &sysConn{TCPConn: tc, rc: rc}
	sc.rfn, sc.wfn = sc.readOnce, sc.writeAll
	return sc
}

func (c *sysConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, c.checkOpen("read")
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr = p, 0, nil
	c.rwaited, c.rwake = false, false
	if !c.rbusy.IsZero() && time.Since(c.rbusy) >= wakeAfter {
		c.rwake = true
	}
	err := c.rc.Read(c.rfn)
	c.rbuf = nil
	switch {
	case c.rwaited:
		c.rbusy = time.Time{}
	case c.rwake || c.rbusy.IsZero():
		c.rbusy = time.Now()
	}
	if err != nil {
		return 0, c.opError("read", err)
	}
	if c.rerr != nil && !errors.Is(c.rerr, io.EOF) {
		return c.rn, c.opError("read", os.NewSyscallError("read", c.rerr))
	}
	return c.rn, c.rerr
}

// readOnce reads once into rbuf: false (wait for the socket) on EAGAIN.
func (c *sysConn) readOnce(fd uintptr) bool {
	for {
		var n int
		var err syscall.Errno
		if c.rwake {
			n, err = errno(syscall.Read(int(fd), c.rbuf))
		} else {
			n, err = rawRead(fd, c.rbuf)
		}
		switch err {
		case 0:
			c.rn = n
			if n == 0 {
				c.rerr = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			c.rwaited = true
			return false
		default:
			c.rerr = err
			return true
		}
	}
}

func (c *sysConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = p, 0, nil
	if len(p) == 0 {
		return 0, c.checkOpen("write")
	}
	err := c.rc.Write(c.wfn)
	c.wbuf = nil
	if err != nil {
		return c.wn, c.opError("write", err)
	}
	if c.werr != nil {
		return c.wn, c.opError("write", os.NewSyscallError("write", c.werr))
	}
	return c.wn, nil
}

// writeAll writes wbuf until all of it is written (true) or the socket is full (false: wait).
func (c *sysConn) writeAll(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, err := rawWrite(fd, c.wbuf[c.wn:])
		switch err {
		case 0:
			if n == 0 {
				c.werr = io.ErrShortWrite
				return true
			}
			c.wn += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = err
			return true
		}
	}
	return true
}

// checkOpen is the error of a read or write of nothing: net.ErrClosed once the connection is
// closed, as net.TCPConn's.
func (c *sysConn) checkOpen(op string) error {
	if err := c.rc.Control(func(uintptr) {}); err != nil {
		return c.opError(op, err)
	}
	return nil
}

// opError is the error net.TCPConn would return: RawConn's own errors (closed, deadline) are
// already *net.OpError, as "raw-read" and "raw-write".
func (c *sysConn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// errno is syscall.Read's or syscall.Write's result as rawRead's and rawWrite's.
func errno(n int, err error) (int, syscall.Errno) {
	if err == nil {
		return n, 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return n, e
	}
	return n, syscall.EIO
}

// writeFD writes p to the non-blocking socket fd once, as syscall.Write does but without
// telling the runtime (see sysConn).
func writeFD(fd uintptr, p []byte) (int, error) {
	n, err := rawWrite(fd, p)
	if err != 0 {
		return -1, err
	}
	return n, nil
}
