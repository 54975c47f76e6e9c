package attestapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNewCSR checks the CSR of every key type a workload may hold: package der's for the keys
// it signs with, crypto/x509's for the others (RSA, or a signer that hides its key), each an
// empty request for the key, with a valid signature.
func TestNewCSR(t *testing.T) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	for name, key := range map[string]crypto.Signer{
		"P-256": p256, "Ed25519": ed, "RSA": rsaKey, "opaque signer": struct{ crypto.Signer }{p256},
	} {
		t.Run(name, func(t *testing.T) {
			raw, err := newCSR(key)
			require.NoError(t, err)
			csr, err := x509.ParseCertificateRequest(raw)
			require.NoError(t, err)
			require.NoError(t, csr.CheckSignature())
			require.True(t, key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey))
			require.Empty(t, csr.Subject.Names)
			require.Empty(t, csr.Extensions)
			spki, ok := csrSPKI(raw)
			require.True(t, ok)
			require.Equal(t, csr.RawSubjectPublicKeyInfo, spki)
			for _, bad := range [][]byte{nil, raw[:len(raw)-1], append(append([]byte{}, raw...), 0), raw[4:]} {
				_, ok := csrSPKI(bad)
				require.False(t, ok, "%x", bad)
			}
		})
	}
}

// TestClientKeepsItsCSRs checks that a client sends the same CSR for the same key (whoever holds
// it: the CSR names the key only), another for another key, and keeps at most maxCSRs.
func TestClientKeepsItsCSRs(t *testing.T) {
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	csrOf := func(c *Client, key crypto.Signer) []byte {
		spki, err := x509.MarshalPKIXPublicKey(key.Public())
		require.NoError(t, err)
		der, err := c.csr(key, spki)
		require.NoError(t, err)
		csr, err := x509.ParseCertificateRequest(der)
		require.NoError(t, err)
		require.NoError(t, csr.CheckSignature())
		require.True(t, key.Public().(*ecdsa.PublicKey).Equal(csr.PublicKey))
		return der
	}
	var c Client
	a, b := newKey(), newKey()
	first := csrOf(&c, a)
	require.Equal(t, first, csrOf(&c, a), "the same key: the same CSR")
	require.Equal(t, first, csrOf(&c, struct{ crypto.Signer }{a}), "the same key behind another signer")
	require.NotEqual(t, first, csrOf(&c, b))

	for range maxCSRs {
		csrOf(&c, newKey())
		require.LessOrEqual(t, len(c.csrs), maxCSRs)
	}
	require.NotEqual(t, first, csrOf(&c, a), "forgotten once full: a new CSR (ECDSA signatures differ)")
}
