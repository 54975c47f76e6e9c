package proxy_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkTunnelThroughput pushes 32 KiB writes through an echo server,
// directly and through client sidecar -> mTLS -> server sidecar; bytes
// count both directions once (b.SetBytes is the payload size).
func BenchmarkTunnelThroughput(b *testing.B) {
	const chunk = 32 << 10
	run := func(b *testing.B, addr string) {
		b.Helper()
		var d net.Dialer
		c, err := d.DialContext(b.Context(), "tcp", addr)
		require.NoError(b, err)
		defer func() { _ = c.Close() }()
		payload := make([]byte, chunk)
		back := make([]byte, chunk)
		done := make(chan error, 1)
		b.SetBytes(chunk)
		b.ReportAllocs()
		b.ResetTimer()
		go func() {
			for i := 0; i < b.N; i++ {
				if _, err := io.ReadFull(c, back); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		for i := 0; i < b.N; i++ {
			if _, err := c.Write(payload); err != nil {
				b.Fatal(err)
			}
		}
		require.NoError(b, <-done)
	}

	b.Run("direct", func(b *testing.B) {
		m := newMesh(b)
		run(b, m.echo.Addr)
	})
	b.Run("tunnel", func(b *testing.B) {
		m := newMesh(b)
		server := m.start(b, m.serverID, time.Hour)
		client := m.start(b, m.clientID, time.Hour)
		m.publish(b, m.serverID, "v1", m.serverResources(b, true))
		m.publish(b, m.clientID, "v1", m.clientResources(b, m.serverInbound))
		server.waitReady(b)
		client.waitReady(b)
		run(b, m.clientOutbound)
	})
}
