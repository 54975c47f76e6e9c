package dcap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParsePCKExtensionsReal(t *testing.T) {
	v := loadVectors(t)
	q, err := ParseQuote(v.quote)
	require.NoError(t, err)
	certs, err := parsePEMChain(q.Signature.Certification.Data)
	require.NoError(t, err)
	require.Len(t, certs, 3)
	ext, err := ParsePCKExtensions(certs[0])
	require.NoError(t, err)
	assert.Equal(t, [6]byte{0x00, 0x60, 0x6a, 0, 0, 0}, ext.FMSPC)
	assert.Equal(t, [2]byte{0, 0}, ext.PCEID)
	assert.Equal(t, 13, ext.PCESVN)
	assert.Equal(t, [16]int{7, 9, 3, 3, 255, 255, 1}, ext.TCBComponents)
	assert.Equal(t, [16]byte{7, 9, 3, 3, 255, 255, 1}, ext.CPUSVN)
	assert.Len(t, ext.PPID, 16)

	_, err = ParsePCKExtensions(certs[1])
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dcap: PCK certificate: SGX extension 1.2.840.113741.1.13.1 not present")
}

// certWithExtension issues a throwaway certificate carrying value as the SGX extension.
func certWithExtension(t *testing.T, values ...[]byte) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "test PCK"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Unix(1<<32, 0),
	}
	for _, v := range values {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: OIDSGXExtensions(), Value: v})
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}

func TestPCKExtensionsRoundTrip(t *testing.T) {
	want := &PCKExtensions{
		PPID:          make([]byte, 16),
		CPUSVN:        [16]byte{1, 2, 3},
		TCBComponents: [16]int{1, 2, 3, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9},
		PCESVN:        65535,
		PCEID:         [2]byte{0, 1},
		FMSPC:         [6]byte{1, 2, 3, 4, 5, 6},
	}
	der, err := want.Marshal()
	require.NoError(t, err)
	got, err := ParsePCKExtensions(certWithExtension(t, der))
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

func TestParsePCKExtensionsErrors(t *testing.T) {
	entry := func(oid asn1.ObjectIdentifier, v any) asn1Entry {
		der, err := asn1.Marshal(v)
		require.NoError(t, err)
		return asn1Entry{ID: oid, Value: asn1.RawValue{FullBytes: der}}
	}
	seq := func(entries ...asn1Entry) []byte {
		der, err := asn1.Marshal(entries)
		require.NoError(t, err)
		return der
	}
	tests := []struct {
		name   string
		values [][]byte
		msg    string
	}{
		{"duplicate field", [][]byte{seq(entry(oidFMSPC, []byte{1, 2, 3, 4, 5, 6}), entry(oidFMSPC, []byte{1, 2, 3, 4, 5, 6}))}, "1.2.840.113741.1.13.1.4 appears twice"},
		{"not a sequence", [][]byte{{0x04, 0x01, 0x00}}, "dcap: PCK certificate: SGX extension:"},
		{"no TCB", [][]byte{seq(entry(oidFMSPC, []byte{1, 2, 3, 4, 5, 6}), entry(oidPCEID, []byte{0, 0}))}, "TCB (1.2.840.113741.1.13.1.2) not present"},
		{"short FMSPC", [][]byte{seq(entry(oidFMSPC, []byte{1, 2, 3}))}, "FMSPC: got 3 bytes, want 6"},
		{"FMSPC as integer", [][]byte{seq(entry(oidFMSPC, 5))}, "FMSPC: ASN.1 tag 2, want OCTET STRING"},
		{"TCB not a sequence", [][]byte{seq(entry(oidTCB, 5))}, "TCB: ASN.1 tag 2, want SEQUENCE"},
		{"component SVN 256", [][]byte{seq(entry(oidTCB, []asn1Entry{entry(append(append(asn1.ObjectIdentifier{}, oidTCB...), 1), 256)}))}, "value 256 outside 0..255"},
		{"TCB incomplete", [][]byte{seq(entry(oidTCB, []asn1Entry{entry(append(append(asn1.ObjectIdentifier{}, oidTCB...), 1), 1)}))}, "TCB: 1.2.840.113741.1.13.1.2.2 not present"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ext, err := ParsePCKExtensions(certWithExtension(t, tt.values...))
			require.Error(t, err)
			assert.Nil(t, ext)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}
