package der_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/attestmesh/attestmesh/attest/der"
)

// reviewCert is an SVID-like certificate with one extension of valueLen zero bytes.
func reviewCert(t *testing.T, key ed25519.PrivateKey, valueLen int, notAfter time.Time) *der.Certificate {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	require.NoError(t, err)
	name, err := asn1.Marshal(pkix.Name{Organization: []string{"attestmesh"}}.ToRDNSequence())
	require.NoError(t, err)
	var exts []pkix.Extension
	if valueLen > 0 {
		exts = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 59999, 9}, Value: make([]byte, valueLen)}}
	}
	return &der.Certificate{
		SerialNumber: big.NewInt(7), Issuer: name, Subject: name,
		NotBefore: time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC), NotAfter: notAfter,
		PublicKey: spki, Extensions: exts,
	}
}

// CreateCertificate bounds the TBSCertificate's content by maxLen (2^24-1, the most that
// appendHeader's three length bytes hold), but not the Certificate around it: signed adds the
// TBSCertificate's header, the AlgorithmIdentifier and the signature, and appendHeader then
// writes only the low three bytes of a length of 2^24 or more. The result is malformed DER
// (an outer length 2^24 too short), returned without an error; IssueSVIDDER no longer parses
// it back. Not reachable with the attestation API's extensions (a few hundred bytes), but the
// bound is in the wrong place.
func TestCreateCertificateOuterLengthBounded(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	const maxLen = 1<<24 - 1
	// A first certificate measures the TBSCertificate's content without the extension value.
	v0 := maxLen - 4096
	first, err := der.CreateCertificate(rand.Reader, reviewCert(t, key, v0, time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)), key)
	require.NoError(t, err)
	in := cryptobyte.String(first)
	var outer, tbs cryptobyte.String
	require.True(t, in.ReadASN1(&outer, cbasn1.SEQUENCE))
	require.True(t, outer.ReadASN1(&tbs, cbasn1.SEQUENCE))
	// The TBSCertificate's content exactly maxLen bytes long: accepted by the bound.
	v := v0 + maxLen - len(tbs)
	got, err := der.CreateCertificate(rand.Reader, reviewCert(t, key, v, time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)), key)
	if err != nil {
		return // refused: what the fix does
	}
	t.Logf("certificate of %d bytes, header % x", len(got), got[:5])
	_, parseErr := x509.ParseCertificate(got)
	require.NoError(t, parseErr, "CreateCertificate returned malformed DER without an error")
}

// appendTime writes a GeneralizedTime's length as 15, but a year after 9999 formats to five
// digits: the element is one byte longer than its header says and than CreateCertificate
// counted. crypto/x509 (encoding/asn1) refuses such a time; package der returns malformed DER
// without an error. Not reachable through ca (NotAfter is clamped to the issuer's, which a
// parsed certificate holds to four digits); it is the package's API that accepts it.
func TestCreateCertificateYearAfter9999(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	got, err := der.CreateCertificate(rand.Reader, reviewCert(t, key, 0, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)), key)
	if err != nil {
		return // refused, as crypto/x509 refuses it: what the fix does
	}
	_, parseErr := x509.ParseCertificate(got)
	require.NoError(t, parseErr, "CreateCertificate returned malformed DER without an error")
}
