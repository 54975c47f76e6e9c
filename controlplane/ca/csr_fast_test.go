package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/der"
)

// emptyCSR makes the CSR that workloads send: package der's, empty.
func emptyCSR(tb testing.TB, key crypto.Signer) []byte {
	tb.Helper()
	csr, err := der.CertificateRequest(rand.Reader, key)
	require.NoError(tb, err)
	return csr
}

// checkedByX509 is what ParseCSR made of every CSR before parseEmptyCSR: crypto/x509's parse
// and checkCSR.
func checkedByX509(csr []byte) (*x509.CertificateRequest, error) {
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return nil, err
	}
	return req, checkCSR(req)
}

// parseEmptyCSR takes the CSRs of workloads, and decides as crypto/x509 and checkCSR do; every
// other shape is left to them.
func TestParseEmptyCSR(t *testing.T) {
	p256, ed, p384 := mustKey(t, P256), mustKey(t, Ed25519), mustKey(t, P384)
	flipLast := func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-1] ^= 1; return b }
	x509CSR := func(tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
		csr, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		require.NoError(t, err)
		return csr
	}
	for _, tt := range []struct {
		name     string
		csr      []byte
		fast     bool // parseEmptyCSR decides
		accepted bool
	}{
		{"P-256, package der", emptyCSR(t, p256), true, true},
		{"Ed25519, package der", emptyCSR(t, ed), true, true},
		{"P-256, crypto/x509, empty", x509CSR(&x509.CertificateRequest{}, p256), true, true},
		{"P-256, bad signature", flipLast(emptyCSR(t, p256)), true, false},
		{"Ed25519, bad signature", flipLast(emptyCSR(t, ed)), true, false},
		{"a subject", x509CSR(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "w"}}, p256), false, true},
		{"an extension request", x509CSR(&x509.CertificateRequest{DNSNames: []string{"a.example"}}, p256), false, true},
		{"P-256 signing with SHA-384", x509CSR(&x509.CertificateRequest{SignatureAlgorithm: x509.ECDSAWithSHA384}, p256), false, true},
		{"P-384", emptyCSR(t, p384), false, false},
		{"trailing byte", append(emptyCSR(t, p256), 0), false, false},
		{"truncated", emptyCSR(t, p256)[:100], false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pub, spki, fast, err := parseEmptyCSR(tt.csr)
			require.Equal(t, tt.fast, fast)
			req, x509Err := checkedByX509(tt.csr)
			require.Equal(t, tt.accepted, x509Err == nil, "crypto/x509: %v", x509Err)
			if fast {
				require.Equal(t, tt.accepted, err == nil, "parseEmptyCSR: %v", err)
				if tt.accepted {
					assert.Equal(t, req.RawSubjectPublicKeyInfo, spki)
					assert.True(t, req.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub))
				}
			}
			csr, err := ParseCSR(tt.csr)
			require.Equal(t, tt.accepted, err == nil, "ParseCSR: %v", err)
			if tt.accepted {
				assert.Equal(t, req.RawSubjectPublicKeyInfo, csr.RawSubjectPublicKeyInfo())
			}
		})
	}
}

// FuzzParseEmptyCSR checks that wherever parseEmptyCSR decides, crypto/x509 and checkCSR decide
// the same, with the same key.
func FuzzParseEmptyCSR(f *testing.F) {
	for _, alg := range []Algorithm{P256, Ed25519, P384} {
		f.Add(emptyCSR(f, mustKey(f, alg)))
	}
	f.Add(mustCSR(f, mustKey(f, P256)))
	f.Fuzz(func(t *testing.T, csr []byte) {
		pub, spki, fast, err := parseEmptyCSR(csr)
		if !fast {
			return
		}
		req, x509Err := checkedByX509(csr)
		require.Equal(t, x509Err == nil, err == nil, "parseEmptyCSR: %v; crypto/x509: %v", err, x509Err)
		if err == nil {
			require.Equal(t, req.RawSubjectPublicKeyInfo, spki)
			require.True(t, req.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub))
		}
	})
}

// spkiKey reads the keys that crypto/x509 marshals as x509.ParsePKIXPublicKey does, and nothing
// else.
func TestSPKIKey(t *testing.T) {
	for _, alg := range []Algorithm{P256, Ed25519, P384, RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			spki, err := x509.MarshalPKIXPublicKey(mustKey(t, alg).Public())
			require.NoError(t, err)
			want, err := x509.ParsePKIXPublicKey(spki)
			require.NoError(t, err)
			got, ok := spkiKey(spki)
			require.Equal(t, alg == P256 || alg == Ed25519, ok)
			if ok {
				assert.True(t, want.(interface{ Equal(crypto.PublicKey) bool }).Equal(got))
			}
		})
	}
	spki, err := x509.MarshalPKIXPublicKey(mustKey(t, P256).Public())
	require.NoError(t, err)
	off := bytes.Clone(spki)
	off[len(off)-1] ^= 1 // a point off the curve
	_, ok := spkiKey(off)
	assert.False(t, ok)
	_, err = x509.ParsePKIXPublicKey(off)
	require.Error(t, err)
}

// FuzzSPKIKey checks that wherever spkiKey reads a key, x509.ParsePKIXPublicKey reads the same.
func FuzzSPKIKey(f *testing.F) {
	for _, alg := range []Algorithm{P256, Ed25519} {
		spki, err := x509.MarshalPKIXPublicKey(mustKey(f, alg).Public())
		require.NoError(f, err)
		f.Add(spki)
	}
	f.Fuzz(func(t *testing.T, spki []byte) {
		got, ok := spkiKey(spki)
		if !ok {
			return
		}
		want, err := x509.ParsePKIXPublicKey(spki)
		require.NoError(t, err)
		require.True(t, want.(interface{ Equal(crypto.PublicKey) bool }).Equal(got))
	})
}
