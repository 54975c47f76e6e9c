package ca

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseAlgorithm(t *testing.T) {
	tests := []struct {
		in      string
		want    Algorithm
		wantErr string
	}{
		{in: "", want: P256},
		{in: "P-256", want: P256},
		{in: "P-384", want: P384},
		{in: "Ed25519", want: Ed25519},
		{in: "RSA-2048", want: RSA2048},
		{in: "RSA-3072", want: RSA3072},
		{in: "p-256", wantErr: `ca: unknown key algorithm "p-256" (known: P-256, P-384, Ed25519, RSA-2048, RSA-3072)`},
		{in: "RSA-1024", wantErr: `unknown key algorithm "RSA-1024"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAlgorithm(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestGenerateKeyRoundTrip(t *testing.T) {
	for _, alg := range append(Algorithms(), "") {
		t.Run(string(alg), func(t *testing.T) {
			key, err := GenerateKey(alg)
			require.NoError(t, err)
			want := alg
			if want == "" {
				want = DefaultAlgorithm
			}
			got, err := AlgorithmOf(key.Public())
			require.NoError(t, err)
			assert.Equal(t, want, got)

			pemBytes, err := MarshalKeyPEM(key)
			require.NoError(t, err)
			block, _ := pem.Decode(pemBytes)
			require.NotNil(t, block)
			assert.Equal(t, "PRIVATE KEY", block.Type)

			back, err := ParseKeyPEM(pemBytes)
			require.NoError(t, err)
			assert.True(t, publicKeysEqual(key.Public(), back.Public()), "parsed key differs")
		})
	}
}

func TestGenerateKeyUnknown(t *testing.T) {
	_, err := GenerateKey("P-521")
	require.ErrorContains(t, err, `ca: unknown key algorithm "P-521"`)
}

func TestAlgorithmOfUnsupported(t *testing.T) {
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	require.NoError(t, err)
	_, err = AlgorithmOf(p521.Public())
	require.EqualError(t, err, "ca: unsupported public key: ECDSA P-521 (supported: P-256, P-384, Ed25519, RSA-2048, RSA-3072)")
	_, err = AlgorithmOf("not a key")
	require.ErrorContains(t, err, "ca: unsupported public key type string")
}

func TestParseKeyPEMErrors(t *testing.T) {
	key := mustKey(t, P256)
	good, err := MarshalKeyPEM(key)
	require.NoError(t, err)
	body := strings.Split(string(good), "\n")[1] // first base64 line of the key

	ecDER, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	require.NoError(t, err)
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	require.NoError(t, err)
	xDER, err := x509.MarshalPKCS8PrivateKey(x25519)
	require.NoError(t, err)
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	require.NoError(t, err)
	p521DER, err := x509.MarshalPKCS8PrivateKey(p521)
	require.NoError(t, err)
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{name: "empty", in: nil, wantErr: "ca: parse private key: no PEM block found"},
		{name: "SEC1 block", in: block("EC PRIVATE KEY", ecDER), wantErr: `PEM block type "EC PRIVATE KEY", want "PRIVATE KEY" (PKCS#8)`},
		{name: "trailing data", in: append(append([]byte{}, good...), "junk"...), wantErr: "data after the PEM block"},
		{name: "not PKCS#8", in: block("PRIVATE KEY", ecDER), wantErr: "ca: parse private key: x509:"},
		{name: "cannot sign", in: block("PRIVATE KEY", xDER), wantErr: "*ecdh.PrivateKey cannot sign"},
		{name: "unsupported curve", in: block("PRIVATE KEY", p521DER), wantErr: "unsupported public key: ECDSA P-521"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeyPEM(tt.in)
			require.ErrorContains(t, err, tt.wantErr)
			assert.NotContains(t, err.Error(), body, "error leaks key material")
		})
	}
}

func TestPublicKeyHash(t *testing.T) {
	key := mustKey(t, P256)
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	require.NoError(t, err)
	want := sha256.Sum256(spki)

	got, err := PublicKeyHash(key.Public())
	require.NoError(t, err)
	assert.Equal(t, want, got)

	_, err = PublicKeyHash(42)
	require.ErrorContains(t, err, "ca: public key hash:")
}
