package listener

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tcpPair returns both ends of a loopback TCP connection, the first wrapped by rawIO.
func tcpPair(t *testing.T) (*sysConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	a := <-accepted
	require.NotNil(t, a)
	sc, ok := rawIO(d).(*sysConn)
	require.True(t, ok, "rawIO of a TCP connection is a sysConn")
	t.Cleanup(func() {
		_ = sc.Close()
		_ = a.Close()
	})
	return sc, a.(*net.TCPConn)
}

func TestRawIOKeepsOtherConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	assert.Same(t, a, rawIO(a), "only TCP connections are wrapped")
}

// Bytes cross both ways intact, including writes far larger than the socket buffers (the write
// waits for the socket to drain: EAGAIN, then the netpoller) and reads into small buffers.
func TestSysConnCarriesBytes(t *testing.T) {
	sc, peer := tcpPair(t)
	big := make([]byte, 8<<20)
	_, _ = rand.Read(big)

	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	n, err := sc.Write(big)
	require.NoError(t, err)
	assert.Equal(t, len(big), n)
	assert.True(t, bytes.Equal(big, <-got), "the peer read what sysConn wrote")

	go func() {
		_, _ = peer.Write(big)
		_ = peer.CloseWrite()
	}()
	var back bytes.Buffer
	buf := make([]byte, 1000)
	for {
		n, err := sc.Read(buf)
		back.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			assert.Zero(t, n, "EOF comes with no bytes")
			break
		}
		require.NoError(t, err)
	}
	assert.True(t, bytes.Equal(big, back.Bytes()), "sysConn read what the peer wrote, then EOF")

	n, err = sc.Read(nil)
	assert.Zero(t, n)
	require.NoError(t, err, "a read of nothing returns at once")
	n, err = sc.Write(nil)
	assert.Zero(t, n)
	assert.NoError(t, err, "a write of nothing returns at once")
}

// CloseWrite (the pipe's half-close) still reaches the socket through the wrapper.
func TestSysConnHalfClose(t *testing.T) {
	sc, peer := tcpPair(t)
	closeWrite(sc)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := peer.Read(make([]byte, 1))
	assert.Zero(t, n)
	require.ErrorIs(t, err, io.EOF, "the peer sees the half-close")
	_, err = peer.Write([]byte("still open this way"))
	require.NoError(t, err)
	b := make([]byte, 64)
	n, err = sc.Read(b)
	require.NoError(t, err)
	assert.Equal(t, "still open this way", string(b[:n]))
}

// Errors are what net.TCPConn returns: deadlines are timeouts, Close ends a blocked read with
// net.ErrClosed, a reset is the errno; all as *net.OpError of op "read" or "write".
func TestSysConnErrors(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		sc, peer := tcpPair(t)
		require.NoError(t, sc.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
		_, err := sc.Read(make([]byte, 10))
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		assert.True(t, ne.Timeout())
		assert.Equal(t, "read", opOf(t, err))

		require.NoError(t, sc.SetWriteDeadline(time.Now().Add(200*time.Millisecond)))
		// Nobody reads: the socket buffers fill, then the deadline passes.
		n, err := sc.Write(make([]byte, 64<<20))
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		// What was written before the deadline is counted (none at all when the kernel is
		// short of TCP memory, as net.TCPConn's write would find too).
		assert.Less(t, n, 64<<20)
		assert.Equal(t, "write", opOf(t, err))
		// n is exactly what the peer receives.
		require.NoError(t, sc.Close())
		require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
		got, err := io.Copy(io.Discard, peer)
		require.NoError(t, err)
		assert.Equal(t, int64(n), got, "the count of a write cut by its deadline")
	})
	t.Run("closed while reading", func(t *testing.T) {
		sc, _ := tcpPair(t)
		errc := make(chan error, 1)
		go func() {
			_, err := sc.Read(make([]byte, 10))
			errc <- err
		}()
		time.Sleep(20 * time.Millisecond)
		require.NoError(t, sc.Close())
		select {
		case err := <-errc:
			require.ErrorIs(t, err, net.ErrClosed)
			assert.Equal(t, "read", opOf(t, err))
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end the blocked read")
		}
	})
	t.Run("closed, nothing to read or write", func(t *testing.T) {
		sc, _ := tcpPair(t)
		require.NoError(t, sc.Close())
		_, err := sc.Read(nil)
		require.ErrorIs(t, err, net.ErrClosed)
		assert.Equal(t, "read", opOf(t, err))
		_, err = sc.Write(nil)
		require.ErrorIs(t, err, net.ErrClosed)
		assert.Equal(t, "write", opOf(t, err))
	})
	t.Run("reset", func(t *testing.T) {
		sc, peer := tcpPair(t)
		require.NoError(t, peer.SetLinger(0))
		require.NoError(t, peer.Close()) // RST
		require.NoError(t, sc.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err := sc.Read(make([]byte, 10))
		require.ErrorIs(t, err, syscall.ECONNRESET)
		assert.Equal(t, "read", opOf(t, err))
		var se *os.SyscallError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, "read", se.Syscall)
		_, err = sc.Write([]byte("x"))
		require.Error(t, err, "a reset connection takes no writes")
		assert.Equal(t, "write", opOf(t, err))
	})
}

func opOf(t *testing.T, err error) string {
	t.Helper()
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	return oe.Op
}

// The listener carries app and mTLS connections on sysConns: both ends of a multiplexed stream
// (the app connection accepted by the client sidecar, the one it dials on the server side) and
// the mTLS connection under the tunnel.
func TestListenerUsesRawIO(t *testing.T) {
	tn := newTunnel(t, true, true)
	a := dialApp(t, tn.clientAddr)
	echoOnce(t, a, []byte("raw"))

	var mcs []*muxConn
	for _, m := range []*Manager{tn.client, tn.server} {
		m.connsMu.Lock()
		for mc := range m.muxes {
			mcs = append(mcs, mc)
		}
		m.connsMu.Unlock()
	}
	require.Len(t, mcs, 2, "one tunnel, seen from each side")
	for _, mc := range mcs {
		assert.IsType(t, &sysConn{}, mc.raw, "the mTLS connection's socket (client %v)", mc.client)
		mc.mu.Lock()
		for _, s := range mc.streams {
			s.rmu.Lock()
			assert.IsType(t, &sysConn{}, s.local, "the app connection of stream %d (client %v)", s.id, mc.client)
			s.rmu.Unlock()
		}
		mc.mu.Unlock()
	}
}
