package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeCert(t *testing.T, certFile, keyFile, cn string, mod time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	require.NoError(t, os.Chtimes(certFile, mod, mod))
}

func subject(t *testing.T, f *fileCert) string {
	t.Helper()
	c, err := f.get(nil)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	require.NoError(t, err)
	return leaf.Subject.CommonName
}

func TestFileCertReloads(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeCert(t, crt, key, "first", time.Unix(1000, 0))
	f, err := newFileCert(crt, key)
	require.NoError(t, err)
	assert.Equal(t, "first", subject(t, f))

	writeCert(t, crt, key, "second", time.Unix(2000, 0))
	f.checked = time.Time{}
	assert.Equal(t, "second", subject(t, f), "a changed Secret is picked up")

	require.NoError(t, os.WriteFile(crt, []byte("garbage"), 0o600))
	require.NoError(t, os.Chtimes(crt, time.Unix(3000, 0), time.Unix(3000, 0)))
	f.checked = time.Time{}
	assert.Equal(t, "second", subject(t, f), "a broken file keeps the last good certificate")

	_, err = newFileCert(filepath.Join(dir, "missing.crt"), key)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "webhook certificate")
}
