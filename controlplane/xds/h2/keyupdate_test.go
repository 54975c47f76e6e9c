package h2

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// TestKeyUpdateAfterIdle: a TLS 1.3 KeyUpdate that requests the server's
// (OpenSSL s_client's "K" command) is answered by crypto/tls inside the connection's read (rest's
// or the Framer's), outside conn.write, so under the write deadline that the last write left.
// Once a connection has written nothing for WriteTimeout (a sidecar's usual state: 30 s in xds)
// that deadline has passed: crypto/tls's KeyUpdate write fails at once, and handleKeyUpdate then
// returns without switching to the client's new read secret, so the client's next record fails
// ("local error: tls: bad record MAC") and the connection dies. With H2_KEYUPDATE_IDLE=10ms (less
// than WriteTimeout) the test passes. Needs openssl.
func TestKeyUpdateAfterIdle(t *testing.T) {
	idle := time.Second
	if v := os.Getenv("H2_KEYUPDATE_IDLE"); v != "" {
		idle, _ = time.ParseDuration(v)
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl")
	}
	p := newTestPKI(t)
	s, addr := startServer(t, p, newTestService(), func(c *Config) { c.WriteTimeout = 300 * time.Millisecond }, nil)
	dir := t.TempDir()
	writePEM := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return path
	}
	key, err := x509.MarshalPKCS8PrivateKey(p.client.PrivateKey)
	require.NoError(t, err)
	ca := writePEM("ca.pem", "CERTIFICATE", p.caDER)
	cert := writePEM("cert.pem", "CERTIFICATE", p.client.Certificate[0])
	keyFile := writePEM("key.pem", "PRIVATE KEY", key)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", addr, "-tls1_3", "-alpn", "h2",
		"-cert", cert, "-key", keyFile, "-CAfile", ca, "-servername", "127.0.0.1")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	sc := connOf(t, s) // the TLS handshake is done
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&b, nil)
	require.NoError(t, fr.WriteSettings())
	_, err = stdin.Write(b.Bytes())
	require.NoError(t, err)
	time.Sleep(idle) // idle for longer than WriteTimeout
	_, err = stdin.Write([]byte("K\n"))
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond)
	b.Reset()
	require.NoError(t, fr.WritePing(false, [8]byte{1}))
	_, err = stdin.Write(b.Bytes())
	require.NoError(t, err)
	time.Sleep(time.Second)
	sc.mu.Lock()
	closed := sc.err
	sc.mu.Unlock()
	assert.NoError(t, closed, "BUG: the connection closed after the client's KeyUpdate")
}
