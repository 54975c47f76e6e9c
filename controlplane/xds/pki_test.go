package xds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

// testCA issues test certificates with crypto/x509: a P-256 CA and leaves with a SPIFFE ID URI
// SAN or, for negative tests, a DNS name only.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newTestCA(tb testing.TB, notBefore, notAfter time.Time) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"attestmesh test"}, CommonName: "attestmesh test CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: "attestmesh.local"}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(tb, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(tb, err)
	return &testCA{cert: cert, key: key, serial: 1}
}

// issue returns a leaf for id (or, when id is zero, for dnsName only) and its key.
func (ca *testCA) issue(tb testing.TB, id spiffeid.ID, dnsName string, notBefore, notAfter time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if !id.IsZero() {
		tmpl.URIs = []*url.URL{id.URL()}
	}
	if dnsName != "" {
		tmpl.DNSNames = []string{dnsName}
		tmpl.Subject = pkix.Name{CommonName: dnsName}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(tb, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(tb, err)
	return cert, key
}

// goldenPKI loads the fixed certificates the golden files embed, creating them with -update
// when they are missing (certificates signed now differ on every run, so they are kept).
func goldenPKI(t *testing.T) (bundle []*x509.Certificate, svids map[spiffeid.ID][]*x509.Certificate) {
	t.Helper()
	dir := filepath.Join("testdata", "pki")
	names := map[string]spiffeid.ID{"flask": flaskID, "redis": redisID}
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); os.IsNotExist(err) && *update {
		from := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		until := time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC)
		ca := newTestCA(t, from, until)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		writePEM(t, filepath.Join(dir, "ca.pem"), ca.cert)
		for name, id := range names {
			leaf, _ := ca.issue(t, id, "", from, until)
			writePEM(t, filepath.Join(dir, name+".pem"), leaf)
		}
	}
	bundle = []*x509.Certificate{readPEM(t, filepath.Join(dir, "ca.pem"))}
	svids = make(map[spiffeid.ID][]*x509.Certificate)
	for name, id := range names {
		svids[id] = []*x509.Certificate{readPEM(t, filepath.Join(dir, name+".pem"))}
	}
	return bundle, svids
}

func writePEM(t *testing.T, path string, c *x509.Certificate) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600))
}

func readPEM(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create the test PKI")
	block, _ := pem.Decode(b)
	require.NotNil(t, block, "%s: no PEM block", path)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}
