//go:build benchmesh

package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The peers' TLS: TLS 1.3 only, with the suite Go's TLS 1.3 picks on machines with AES
// hardware (the sidecars' choice), P-256 keys, each side verifying the other.
const (
	suite      = "TLS_AES_128_GCM_SHA256"
	serverName = "redis"
)

// pki is a throwaway P-256 CA with a server and a client certificate for the HAProxy and
// stunnel pairs, in a directory only root can read that the test removes.
type pki struct {
	ca                         string
	serverCert, serverKey      string
	clientCert, clientKey      string
	serverBundle, clientBundle string // certificate and key in one file, as HAProxy's crt wants
}

func writePKI(t *testing.T, dir string) pki {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o700))
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench-mesh CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	p := pki{ca: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.ca, "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile, bundle string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			DNSNames: []string{serverName}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		require.NoError(t, err)
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		certFile, keyFile, bundle = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
		both := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
		require.NoError(t, os.WriteFile(bundle, both, 0o600))
		return certFile, keyFile, bundle
	}
	p.serverCert, p.serverKey, p.serverBundle = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey, p.clientBundle = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

// haproxyGlobal is shared by both HAProxy instances: one thread, TLS 1.3 with the one suite.
const haproxyGlobal = `global
  nbthread 1
  maxconn 4096
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
  ssl-default-bind-ciphersuites ` + suite + `
  ssl-default-server-ciphersuites ` + suite + `

defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
`

// haproxyClient takes plaintext on the client namespace's loopback and carries it over mTLS to
// the server, verifying its certificate (CA and name).
func haproxyClient(p pki, serverIP string) string {
	return haproxyGlobal + fmt.Sprintf(`
frontend app
  bind 127.0.0.1:%d
  default_backend tunnel

backend tunnel
  server redis %s:%d ssl crt %s ca-file %s verify required verifyhost %s sni str(%s)
`, haproxyPort, serverIP, haproxyServerPort, p.clientBundle, p.ca, serverName, serverName)
}

// haproxyServer terminates mTLS on the server namespace's bridge address, requiring a client
// certificate from the CA, and hands the connection to Redis on the loopback.
func haproxyServer(p pki, serverIP string) string {
	return haproxyGlobal + fmt.Sprintf(`
frontend tunnel
  bind %s:%d ssl crt %s ca-file %s verify required
  default_backend redis

backend redis
  server redis 127.0.0.1:%d
`, serverIP, haproxyServerPort, p.serverBundle, p.ca, redisPort)
}

// stunnelCommon: in the foreground, no pid file, warnings only, Nagle off on both sockets as
// HAProxy and Go have it.
func stunnelCommon(dir, name string) string {
	return fmt.Sprintf(`foreground = yes
pid =
syslog = no
debug = 4
output = %s
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
`, filepath.Join(dir, name+".out"))
}

func stunnelClient(p pki, dir, serverIP string) string {
	return stunnelCommon(dir, "stunnel-client") + fmt.Sprintf(`
[redis]
client = yes
accept = 127.0.0.1:%d
connect = %s:%d
cert = %s
key = %s
CAfile = %s
verifyChain = yes
checkHost = %s
sni = %s
sslVersionMin = TLSv1.3
ciphersuites = %s
`, stunnelPort, serverIP, stunnelServerPort, p.clientCert, p.clientKey, p.ca, serverName, serverName, suite)
}

func stunnelServer(p pki, dir, serverIP string) string {
	return stunnelCommon(dir, "stunnel-server") + fmt.Sprintf(`
[redis]
accept = %s:%d
connect = 127.0.0.1:%d
cert = %s
key = %s
CAfile = %s
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
ciphersuites = %s
`, serverIP, stunnelServerPort, redisPort, p.serverCert, p.serverKey, p.ca, suite)
}
