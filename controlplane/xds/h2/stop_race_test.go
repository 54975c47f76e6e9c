package h2

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// TestStopRacingConnStart (fails under -race only): Stop (conn.close) reads c.keepalive while the connection's
// goroutine (start) may be setting it, with no lock between: a data race, and a timer that
// close missed is never stopped (it fires after KeepaliveTime, holding the conn until then).
func TestStopRacingConnStart(t *testing.T) {
	p := newTestPKI(t)
	for range 1000 {
		s, err := NewServer(Config{TLS: p.serverTLS()})
		require.NoError(t, err)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		go func() { _ = s.Serve(lis) }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", lis.Addr().String())
		require.NoError(t, err)
		tc := tls.Client(nc, p.clientTLS())
		require.NoError(t, tc.HandshakeContext(ctx))
		fr := http2.NewFramer(tc, tc)
		_, _ = tc.Write([]byte(http2.ClientPreface))
		_ = fr.WriteSettings()
		_, _ = fr.ReadFrame() // the server's SETTINGS: its goroutine is reading ours
		s.Stop()
		cancel()
		_ = nc.Close()
	}
}
