package attestapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBindReportData(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	nonce := [32]byte{1, 2, 3, 31: 0xff}

	rd := BindReportData(spki, nonce)
	h := sha256.Sum256(spki)
	assert.Equal(t, h[:], rd[:32])
	assert.Equal(t, nonce[:], rd[32:])

	// The CSR's RawSubjectPublicKeyInfo is the same DER.
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	require.NoError(t, err)
	csr, err := x509.ParseCertificateRequest(csrDER)
	require.NoError(t, err)
	assert.Equal(t, rd, BindReportData(csr.RawSubjectPublicKeyInfo, nonce))

	otherKey := append([]byte{}, spki...)
	otherKey[len(otherKey)-1] ^= 1
	otherNonce := nonce
	otherNonce[0] ^= 1
	tests := []struct {
		name    string
		rd      []byte
		wantErr string
	}{
		{"bound", rd[:], ""},
		{"other key", func() []byte { r := BindReportData(otherKey, nonce); return r[:] }(), "does not bind the CSR's public key"},
		{"other nonce", func() []byte { r := BindReportData(spki, otherNonce); return r[:] }(), "does not carry the nonce"},
		{"neither", func() []byte { r := BindReportData(otherKey, otherNonce); return r[:] }(), "binds neither"},
		{"short", rd[:63], "REPORTDATA is 63 bytes, want 64"},
		{"nil", nil, "REPORTDATA is 0 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckReportData(tt.rd, spki, nonce)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			assert.ErrorContains(t, err, "attestapi: ")
		})
	}
}
