package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSessionChainsOpenSSL issues a CA and a leaf for DNS "api" with every algorithm and lets
// the real openssl verify them for hostname, TLS server and TLS client use.
func TestSessionChainsOpenSSL(t *testing.T) {
	for _, alg := range Algorithms() {
		t.Run(string(alg), func(t *testing.T) {
			caCert, caKey := mustRoot(t, alg, 0)
			leafKey := mustKey(t, alg)
			leaf, err := IssueLeaf(LeafRequest{
				PublicKey: leafKey.Public(), Issuer: caCert, IssuerKey: caKey,
				CommonName: "api", DNSNames: []string{"api"}, ValidFor: time.Hour,
			})
			require.NoError(t, err)

			requireOpenSSLOK(t, caCert, leaf, nil, "-verify_hostname", "api")
			requireOpenSSLOK(t, caCert, leaf, nil, "-purpose", "sslserver")
			requireOpenSSLOK(t, caCert, leaf, nil, "-purpose", "sslclient")

			out, ok := opensslVerify(t, caCert, leaf, nil, "-verify_hostname", "redis")
			assert.False(t, ok)
			assert.Contains(t, out, "hostname mismatch")
		})
	}
}

func TestIntermediateChainOpenSSL(t *testing.T) {
	root, rootKey := mustRoot(t, P256, 1)
	interKey := mustKey(t, P384)
	inter, err := IssueCA(CARequest{
		PublicKey: interKey.Public(), Issuer: root, IssuerKey: rootKey,
		CommonName: "intermediate", ValidFor: time.Hour, MaxPathLen: -1,
	})
	require.NoError(t, err)
	assert.Equal(t, 0, inter.MaxPathLen, "the issuer's path length 1 leaves 0 for the intermediate")
	assert.True(t, inter.MaxPathLenZero)

	leafKey := mustKey(t, Ed25519)
	leaf, err := IssueLeaf(LeafRequest{
		PublicKey: leafKey.Public(), Issuer: inter, IssuerKey: interKey,
		DNSNames: []string{"redis"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ValidFor: time.Hour,
	})
	require.NoError(t, err)
	requireOpenSSLOK(t, root, leaf, []*x509.Certificate{inter}, "-verify_hostname", "redis", "-purpose", "sslserver")
	requireOpenSSLOK(t, root, leaf, []*x509.Certificate{inter}, "-verify_ip", "127.0.0.1", "-purpose", "sslclient")

	// The intermediate may not sign another CA.
	_, err = IssueCA(CARequest{
		PublicKey: mustKey(t, P256).Public(), Issuer: inter, IssuerKey: interKey,
		CommonName: "too deep", ValidFor: time.Hour,
	})
	require.EqualError(t, err, `ca: issue CA: issuer "intermediate" may sign leaf certificates only (path length 0)`)
}

func TestSelfSignedLeafOpenSSL(t *testing.T) {
	key := mustKey(t, P256)
	leaf, err := IssueLeaf(LeafRequest{
		PublicKey: key.Public(), IssuerKey: key, CommonName: "standalone", DNSNames: []string{"standalone"}, ValidFor: time.Hour,
	})
	require.NoError(t, err)
	assert.False(t, leaf.IsCA)
	requireOpenSSLOK(t, leaf, leaf, nil, "-verify_hostname", "standalone", "-purpose", "sslserver")
}

func TestCertificateFields(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	caKey := mustKey(t, P256)
	ca, err := IssueCA(CARequest{
		PublicKey: caKey.Public(), IssuerKey: caKey, CommonName: "fields CA", ValidFor: 365 * 24 * time.Hour, Now: now,
	})
	require.NoError(t, err)

	tests := []struct {
		name      string
		key       crypto.Signer
		validFor  time.Duration
		wantUsage x509.KeyUsage
		wantAfter time.Time
	}{
		{name: "ECDSA", key: mustKey(t, P256), validFor: time.Hour, wantUsage: x509.KeyUsageDigitalSignature, wantAfter: now.Add(time.Hour)},
		{name: "Ed25519", key: mustKey(t, Ed25519), validFor: time.Hour, wantUsage: x509.KeyUsageDigitalSignature, wantAfter: now.Add(time.Hour)},
		{name: "RSA", key: mustKey(t, RSA2048), validFor: time.Hour, wantUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, wantAfter: now.Add(time.Hour)},
		{name: "clamped to issuer", key: mustKey(t, P256), validFor: 10 * 365 * 24 * time.Hour, wantUsage: x509.KeyUsageDigitalSignature, wantAfter: ca.NotAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := IssueLeaf(LeafRequest{
				PublicKey: tt.key.Public(), Issuer: ca, IssuerKey: caKey, CommonName: "svc",
				DNSNames: []string{"svc", "svc.example"}, ValidFor: tt.validFor, Now: now,
			})
			require.NoError(t, err)
			assert.Equal(t, "svc", leaf.Subject.CommonName)
			assert.Equal(t, []string{"svc", "svc.example"}, leaf.DNSNames)
			assert.False(t, leaf.IsCA)
			assert.True(t, leaf.BasicConstraintsValid)
			assert.Equal(t, tt.wantUsage, leaf.KeyUsage)
			assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, leaf.ExtKeyUsage)
			assert.Equal(t, now.Add(-ClockSkew), leaf.NotBefore)
			assert.Equal(t, tt.wantAfter, leaf.NotAfter)
			assert.LessOrEqual(t, leaf.SerialNumber.BitLen(), 128)
			assert.Equal(t, 1, leaf.SerialNumber.Sign())
			ski := sha256.Sum256(leaf.RawSubjectPublicKeyInfo) // RFC 7093 section 2 method 4
			assert.Equal(t, ski[:20], leaf.SubjectKeyId)
			assert.Equal(t, ca.SubjectKeyId, leaf.AuthorityKeyId)
			require.NoError(t, leaf.CheckSignatureFrom(ca))
		})
	}

	assert.True(t, ca.IsCA)
	assert.Equal(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, ca.KeyUsage)
	assert.True(t, ca.MaxPathLenZero)
	assert.Equal(t, ca.Subject.String(), ca.Issuer.String())
}

func TestSerialFromRand(t *testing.T) {
	key := mustKey(t, P256)
	seed := bytes.Repeat([]byte{0xab}, 64)
	cert, err := IssueCA(CARequest{
		PublicKey: key.Public(), IssuerKey: key, CommonName: "det", ValidFor: time.Hour,
		Rand: bytes.NewReader(seed),
	})
	require.NoError(t, err)
	assert.Equal(t, new(big.Int).SetBytes(seed[:16]), cert.SerialNumber)

	_, err = IssueCA(CARequest{
		PublicKey: key.Public(), IssuerKey: key, CommonName: "zeros", ValidFor: time.Hour,
		Rand: bytes.NewReader(make([]byte, 1024)),
	})
	require.EqualError(t, err, "ca: issue CA: serial number: random source returned only zeros")

	_, err = IssueCA(CARequest{
		PublicKey: key.Public(), IssuerKey: key, CommonName: "short", ValidFor: time.Hour,
		Rand: bytes.NewReader([]byte{1, 2, 3}),
	})
	require.ErrorContains(t, err, "ca: issue CA: serial number: unexpected EOF")
}

func TestIssueErrors(t *testing.T) {
	root, rootKey := mustRoot(t, P256, -1)
	leafKey := mustKey(t, P256)
	otherKey := mustKey(t, P256)
	leaf, err := IssueLeaf(LeafRequest{PublicKey: leafKey.Public(), Issuer: root, IssuerKey: rootKey, CommonName: "l", ValidFor: time.Hour})
	require.NoError(t, err)
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	require.NoError(t, err)

	tests := []struct {
		name    string
		ca      *CARequest
		leaf    *LeafRequest
		wantErr string
	}{
		{name: "CA without name", ca: &CARequest{PublicKey: leafKey.Public(), IssuerKey: leafKey, ValidFor: time.Hour},
			wantErr: "ca: issue CA: common name is empty"},
		{name: "leaf without names", leaf: &LeafRequest{PublicKey: leafKey.Public(), IssuerKey: leafKey, ValidFor: time.Hour},
			wantErr: "ca: issue leaf: no common name, DNS name or IP address"},
		{name: "no issuer key", leaf: &LeafRequest{PublicKey: leafKey.Public(), Issuer: root, CommonName: "x", ValidFor: time.Hour},
			wantErr: "ca: issue leaf: no issuer key"},
		{name: "zero validity", leaf: &LeafRequest{PublicKey: leafKey.Public(), Issuer: root, IssuerKey: rootKey, CommonName: "x"},
			wantErr: "ca: issue leaf: validity 0s is not positive"},
		{name: "self-signed with another key", ca: &CARequest{PublicKey: leafKey.Public(), IssuerKey: otherKey, CommonName: "x", ValidFor: time.Hour},
			wantErr: "ca: issue CA: self-signed, but the signing key does not match the subject's public key"},
		{name: "issuer not a CA", leaf: &LeafRequest{PublicKey: otherKey.Public(), Issuer: leaf, IssuerKey: leafKey, CommonName: "x", ValidFor: time.Hour},
			wantErr: `ca: issue leaf: issuer "l" is not a CA`},
		{name: "issuer key mismatch", leaf: &LeafRequest{PublicKey: otherKey.Public(), Issuer: root, IssuerKey: otherKey, CommonName: "x", ValidFor: time.Hour},
			wantErr: `ca: issue leaf: issuer key does not match the public key of issuer "root P-256"`},
		{name: "issuer expired", leaf: &LeafRequest{PublicKey: otherKey.Public(), Issuer: root, IssuerKey: rootKey, CommonName: "x", ValidFor: time.Hour, Now: root.NotAfter},
			wantErr: `ca: issue leaf: issuer "root P-256" expired at`},
		{name: "unsupported subject key", leaf: &LeafRequest{PublicKey: p521.Public(), Issuer: root, IssuerKey: rootKey, CommonName: "x", ValidFor: time.Hour},
			wantErr: "ca: issue leaf: subject key: unsupported public key: ECDSA P-521"},
		{name: "bad DNS name", leaf: &LeafRequest{PublicKey: otherKey.Public(), Issuer: root, IssuerKey: rootKey, DNSNames: []string{"a b"}, ValidFor: time.Hour},
			wantErr: `ca: DNS name "a b" contains whitespace`},
		{name: "empty DNS name", leaf: &LeafRequest{PublicKey: otherKey.Public(), Issuer: root, IssuerKey: rootKey, DNSNames: []string{"a", ""}, ValidFor: time.Hour},
			wantErr: "ca: DNS name 1 is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.ca != nil {
				_, err = IssueCA(*tt.ca)
			} else {
				_, err = IssueLeaf(*tt.leaf)
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

// TestReissue checks the session-update rule: same key, new serial and validity.
func TestReissue(t *testing.T) {
	caKey := mustKey(t, P256)
	t0 := time.Now().Add(-time.Hour)
	ca, err := IssueCA(CARequest{PublicKey: caKey.Public(), IssuerKey: caKey, CommonName: "redis_ca_cert", ValidFor: 48 * time.Hour, Now: t0})
	require.NoError(t, err)
	leafKey := mustKey(t, RSA2048)
	leaf, err := IssueLeaf(LeafRequest{
		PublicKey: leafKey.Public(), Issuer: ca, IssuerKey: caKey, CommonName: "redis",
		DNSNames: []string{"redis"}, ValidFor: time.Hour, Now: t0,
	})
	require.NoError(t, err)

	ca2, err := Reissue(ca, nil, caKey, 48*time.Hour)
	require.NoError(t, err)
	leaf2, err := Reissue(leaf, ca2, caKey, 2*time.Hour)
	require.NoError(t, err)

	for _, pair := range [][2]*x509.Certificate{{ca, ca2}, {leaf, leaf2}} {
		old, renewed := pair[0], pair[1]
		assert.True(t, publicKeysEqual(old.PublicKey, renewed.PublicKey), "key kept")
		assert.NotEqual(t, old.SerialNumber, renewed.SerialNumber)
		assert.True(t, renewed.NotBefore.After(old.NotBefore))
		assert.Equal(t, old.Subject.CommonName, renewed.Subject.CommonName)
		assert.Equal(t, old.DNSNames, renewed.DNSNames)
		assert.Equal(t, old.IsCA, renewed.IsCA)
		assert.Equal(t, old.MaxPathLenZero, renewed.MaxPathLenZero)
	}
	// The old CA still verifies the new leaf: same key, same subject.
	requireOpenSSLOK(t, ca, leaf2, nil, "-verify_hostname", "redis", "-purpose", "sslserver")
	requireOpenSSLOK(t, ca2, leaf2, nil, "-verify_hostname", "redis", "-purpose", "sslclient")

	_, err = Reissue(nil, ca, caKey, time.Hour)
	require.EqualError(t, err, "ca: reissue: no certificate")
}

func TestCertsPEM(t *testing.T) {
	a, _ := mustRoot(t, P256, 0)
	b, _ := mustRoot(t, Ed25519, 0)
	got, err := ParseCertsPEM(MarshalCertsPEM(a, b))
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, a.Raw, got[0].Raw)
	assert.Equal(t, b.Raw, got[1].Raw)

	keyPEM, err := MarshalKeyPEM(mustKey(t, P256))
	require.NoError(t, err)
	tests := []struct {
		name, in, wantErr string
	}{
		{name: "empty", in: "", wantErr: "ca: parse certificates: no CERTIFICATE PEM block found"},
		{name: "key block", in: string(keyPEM), wantErr: `PEM block 0 has type "PRIVATE KEY"`},
		{name: "trailing", in: string(MarshalCertsPEM(a)) + "x", wantErr: "data that is not a PEM block"},
		{name: "bad DER", in: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", wantErr: "ca: parse certificates: block 0:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCertsPEM([]byte(tt.in))
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}
