package listener

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attestmesh/attestmesh/proxy/metrics"
)

// bufSize is the copy buffer: large enough for a full TLS record.
const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, bufSize)
	return &b
}}

var errIdle = errors.New("listener: idle timeout")

// pipe copies between down and up until both directions end, then closes
// both. It runs one direction on the calling goroutine and the other on one
// more goroutine. EOF in one direction is propagated as a half-close
// (CloseWrite); an error in either direction closes both connections. With
// idle > 0, a connection with no bytes in either direction for idle is closed.
func pipe(down, up net.Conn, bytes *metrics.Counter, idle time.Duration) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if copyHalf(down, up, bytes, idle, &last) != nil {
			_ = down.Close()
			_ = up.Close()
		}
	}()
	if copyHalf(up, down, bytes, idle, &last) != nil {
		_ = down.Close()
		_ = up.Close()
	}
	<-done
	_ = down.Close()
	_ = up.Close()
}

// copyHalf copies src to dst with a pooled buffer; it does not allocate per
// read. It returns nil when src ended cleanly (and dst was half-closed).
func copyHalf(dst, src net.Conn, bytes *metrics.Counter, idle time.Duration, last *atomic.Int64) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	if idle > 0 {
		_ = src.SetReadDeadline(time.Now().Add(idle))
	}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			bytes.Add(float64(n))
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			closeWrite(dst)
			return nil
		}
		if idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// The deadline is only moved when it fires: the other direction
			// may have been busy meanwhile.
			lastActive := time.Unix(0, last.Load())
			if time.Since(lastActive) < idle {
				_ = src.SetReadDeadline(lastActive.Add(idle))
				continue
			}
			return errIdle
		}
		return err
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}
