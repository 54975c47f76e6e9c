package controlplane_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
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

	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

// With --mgmt-client-ca, only client certificates from that CA are identities: a self-made
// one (free to make, so worthless against quotas and rate limits) is refused in the handshake,
// anonymous callers still read the public endpoints, and a CA-issued client works.
func TestMgmtClientCA(t *testing.T) {
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "team CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	caFile := filepath.Join(dir, "clients-ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))

	_, err = store.GenerateKeyFile(filepath.Join(dir, "store.key"))
	require.NoError(t, err)
	r := startWith(t, controlplane.Config{
		DataDir: filepath.Join(dir, "data"), StoreKeyFile: filepath.Join(dir, "store.key"), TrustDomain: "attestmesh.local",
		MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		Simulation: true, LASAddr: "127.0.0.1:0", MgmtClientCAFile: caFile,
	})
	pool := mustPool(t, r.addrs.BundlePEM)
	client := func(id tls.Certificate) *mgmtapi.Client {
		c, err := mgmtapi.NewClient(mgmtapi.ClientConfig{URL: "https://" + r.addrs.Mgmt, Roots: pool, Identity: id})
		require.NoError(t, err)
		return c
	}

	selfMade, err := mgmtapi.LoadOrCreateIdentity(filepath.Join(dir, "self"))
	require.NoError(t, err)
	_, err = client(selfMade).Create(t.Context(), []byte("name: mine\nversion: \"0.3\"\n"))
	require.Error(t, err, "a self-made certificate is refused")
	assert.Contains(t, err.Error(), "tls: unknown certificate authority", "refused in the handshake for its issuer")

	anon, err := mgmtapi.NewClient(mgmtapi.ClientConfig{URL: "https://" + r.addrs.Mgmt, Roots: pool})
	require.NoError(t, err)
	_, err = anon.Public(t.Context(), "nothing", "here")
	var ae *mgmtapi.APIError
	require.ErrorAs(t, err, &ae, "anonymous callers still reach the API")

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "alice"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, key.Public(), caKey)
	require.NoError(t, err)
	_, err = client(tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}).Create(t.Context(), []byte("name: mine\nversion: \"0.3\"\n"))
	require.NoError(t, err, "a client certificate from the CA is an identity")
}

func TestMgmtClientCARefusesABadFile(t *testing.T) {
	cfg := controlplane.Config{
		DataDir: t.TempDir(), TrustDomain: "attestmesh.local", MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0",
		XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Simulation: true, LASAddr: "127.0.0.1:0",
		MgmtClientCAFile: filepath.Join(t.TempDir(), "missing.pem"),
	}
	err := cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--mgmt-client-ca ")
	assert.Contains(t, err.Error(), "no such file")
}
