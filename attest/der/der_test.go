package der_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/der"
)

func keys(t *testing.T) map[string]crypto.Signer {
	t.Helper()
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return map[string]crypto.Signer{"P-256": p256, "P-384": p384, "Ed25519": ed}
}

// TestCertificateRequestIsX509s checks that a request is crypto/x509's for an empty template,
// byte for byte before the signature (all of it for Ed25519, whose signatures are
// deterministic), and that crypto/x509 parses it and verifies its signature.
func TestCertificateRequestIsX509s(t *testing.T) {
	for name, key := range keys(t) {
		t.Run(name, func(t *testing.T) {
			got, err := der.CertificateRequest(rand.Reader, key)
			require.NoError(t, err)
			want, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			require.NoError(t, err)
			if _, ok := key.(ed25519.PrivateKey); ok {
				require.Equal(t, want, got)
			}
			gotCSR, err := x509.ParseCertificateRequest(got)
			require.NoError(t, err)
			wantCSR, err := x509.ParseCertificateRequest(want)
			require.NoError(t, err)
			require.Equal(t, wantCSR.RawTBSCertificateRequest, gotCSR.RawTBSCertificateRequest)
			require.Equal(t, wantCSR.SignatureAlgorithm, gotCSR.SignatureAlgorithm)
			require.NoError(t, gotCSR.CheckSignature())
			require.True(t, key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(gotCSR.PublicKey))
		})
	}
}

// TestCreateCertificateIsX509s checks that an SVID is crypto/x509's for the same template,
// byte for byte before the signature (all of it when the issuer's key is Ed25519), that its
// signature verifies with the issuer's key, and that crypto/x509 reads every field back.
func TestCreateCertificateIsX509s(t *testing.T) {
	subjectKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	spki, err := x509.MarshalPKIXPublicKey(subjectKey.Public())
	require.NoError(t, err)
	uri, err := url.Parse("spiffe://example.org/ns/team-a/sa/flask")
	require.NoError(t, err)
	tee := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: []byte{0x0c, 0x03, 's', 'g', 'x'}}
	critical := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}, Critical: true, Value: []byte{0x05, 0x00}}
	tests := []struct {
		name      string
		subject   pkix.Name
		notBefore time.Time
		notAfter  time.Time
		serial    *big.Int
		issuerSKI []byte
		extra     []pkix.Extension
	}{
		{
			name:      "SVID",
			subject:   pkix.Name{Organization: []string{"attestmesh"}},
			notBefore: time.Date(2026, 11, 27, 20, 0, 0, 123456789, time.UTC),
			notAfter:  time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC),
			serial:    new(big.Int).SetBytes([]byte{0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}), // high bit: a leading zero byte
			issuerSKI: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20},
			extra:     []pkix.Extension{tee},
		},
		{
			name:      "simulation SVID with a critical extra extension",
			subject:   pkix.Name{Organization: []string{"attestmesh"}, OrganizationalUnit: []string{"simulated TEE, not hardware-attested"}},
			notBefore: time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC),
			notAfter:  time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC), // GeneralizedTime from 2050
			serial:    big.NewInt(1),
			issuerSKI: []byte{9, 9, 9},
			extra:     []pkix.Extension{tee, critical},
		},
		{
			name:      "empty subject, issuer without a key identifier, no extra",
			notBefore: time.Date(1999, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600)),
			notAfter:  time.Date(2100, 1, 2, 3, 4, 5, 0, time.UTC),
			serial:    big.NewInt(1 << 62),
		},
	}
	for issuerName, issuerKey := range keys(t) {
		for _, tt := range tests {
			t.Run(issuerName+"/"+tt.name, func(t *testing.T) {
				issuer := &x509.Certificate{
					Subject:   pkix.Name{CommonName: "attestmesh CA example.org"},
					PublicKey: issuerKey.Public(), SubjectKeyId: tt.issuerSKI,
				}
				issuer.RawSubject, err = asn1.Marshal(issuer.Subject.ToRDNSequence())
				require.NoError(t, err)
				subject, err := asn1.Marshal(tt.subject.ToRDNSequence())
				require.NoError(t, err)
				ski := []byte{20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}
				tmpl := &x509.Certificate{
					SerialNumber: tt.serial, RawSubject: subject,
					NotBefore: tt.notBefore, NotAfter: tt.notAfter,
					URIs: []*url.URL{uri}, BasicConstraintsValid: true,
					KeyUsage:        x509.KeyUsageDigitalSignature,
					ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
					SubjectKeyId:    ski,
					AuthorityKeyId:  tt.issuerSKI,
					ExtraExtensions: tt.extra,
				}
				want, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, subjectKey.Public(), issuerKey)
				require.NoError(t, err)

				exts, err := der.SVIDExtensions(ski, tt.issuerSKI, uri.String(), len(subject) == 2, tt.extra...)
				require.NoError(t, err)
				got, err := der.CreateCertificate(rand.Reader, &der.Certificate{
					SerialNumber: tt.serial, Issuer: issuer.RawSubject, Subject: subject,
					NotBefore: tt.notBefore, NotAfter: tt.notAfter, PublicKey: spki, Extensions: exts,
				}, issuerKey)
				require.NoError(t, err)

				if _, ok := issuerKey.(ed25519.PrivateKey); ok {
					require.Equal(t, want, got)
				}
				wantCert, err := x509.ParseCertificate(want)
				require.NoError(t, err)
				gotCert, err := x509.ParseCertificate(got)
				require.NoError(t, err)
				require.Equal(t, wantCert.RawTBSCertificate, gotCert.RawTBSCertificate)
				require.Equal(t, wantCert.SignatureAlgorithm, gotCert.SignatureAlgorithm)
				require.NoError(t, gotCert.CheckSignatureFrom(&x509.Certificate{
					PublicKey: issuerKey.Public(), PublicKeyAlgorithm: wantCert.PublicKeyAlgorithm,
					BasicConstraintsValid: true, IsCA: true, Version: 3,
				}), "the issuer's key verifies the signature")
				assert.Equal(t, []*url.URL{uri}, gotCert.URIs)
				assert.Equal(t, tt.notBefore.Truncate(time.Second).UTC(), gotCert.NotBefore)
				assert.Equal(t, 0, tt.serial.Cmp(gotCert.SerialNumber))
			})
		}
	}
}

// signerOnly hides the key's type, as an HSM's or a KMS's signer would.
type signerOnly struct{ crypto.Signer }

func TestUnsupportedKeys(t *testing.T) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // G403: a test key, never used to protect anything
	require.NoError(t, err)
	for name, key := range map[string]crypto.Signer{
		"RSA":                        rsaKey,
		"P-521":                      p521,
		"a signer that is not a key": signerOnly{p256},
	} {
		t.Run(name, func(t *testing.T) {
			require.False(t, der.Supported(key))
			_, err := der.CertificateRequest(rand.Reader, key)
			require.ErrorIs(t, err, der.ErrUnsupported)
			_, err = der.CreateCertificate(rand.Reader, &der.Certificate{SerialNumber: big.NewInt(1)}, key)
			require.ErrorIs(t, err, der.ErrUnsupported)
		})
	}
	require.True(t, der.Supported(p256))
}

func TestCreateCertificateRefuses(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	for _, serial := range []*big.Int{nil, big.NewInt(0), big.NewInt(-5)} {
		_, err := der.CreateCertificate(rand.Reader, &der.Certificate{SerialNumber: serial}, key)
		require.ErrorContains(t, err, "der: certificate: the serial number must be positive")
	}
	_, err = der.SVIDExtensions(nil, nil, "spiffe://example.org/caf\u00e9", false)
	require.ErrorContains(t, err, `URI SAN "spiffe://example.org/café" is not ASCII`)
}

// An Ed25519 signature is checked (deterministic: a faulty one beside a correct one of the same
// message gives the key away). A key whose public half does not match its seed signs what does
// not verify, as a fault would: refused, nothing returned.
func TestEd25519SignatureIsChecked(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	faulty := slices.Clone(key)
	faulty[ed25519.PrivateKeySize-1] ^= 1
	csr, err := der.CertificateRequest(rand.Reader, faulty)
	require.ErrorContains(t, err, "der: sign: the Ed25519 signature does not verify with the key's public half")
	require.Nil(t, csr)
	_, err = der.CreateCertificate(rand.Reader, &der.Certificate{SerialNumber: big.NewInt(1)}, faulty)
	require.ErrorContains(t, err, "does not verify")
	_, err = der.CertificateRequest(rand.Reader, key)
	require.NoError(t, err)
}

// Every length form of DER (one byte, 0x81, 0x82, 0x83) in the URI SAN, an extension and the
// TBSCertificate around them, byte for byte as crypto/x509 writes it.
func TestCreateCertificateLengthForms(t *testing.T) {
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	subjectKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	spki, err := x509.MarshalPKIXPublicKey(subjectKey.Public())
	require.NoError(t, err)
	issuer := &x509.Certificate{Subject: pkix.Name{CommonName: "CA"}, PublicKey: issuerKey.Public(), SubjectKeyId: []byte{1, 2, 3}}
	issuer.RawSubject, err = asn1.Marshal(issuer.Subject.ToRDNSequence())
	require.NoError(t, err)
	subject, err := asn1.Marshal(pkix.Name{Organization: []string{"attestmesh"}}.ToRDNSequence())
	require.NoError(t, err)
	for _, tt := range []struct{ uriLen, valueLen int }{
		{20, 1}, {100, 100}, {130, 200}, {300, 300}, {1000, 70_000},
	} {
		t.Run(fmt.Sprintf("uri=%d,value=%d", tt.uriLen, tt.valueLen), func(t *testing.T) {
			uri, err := url.Parse("spiffe://example.org/" + strings.Repeat("a", tt.uriLen))
			require.NoError(t, err)
			value := append([]byte{0x04, 0x83, byte(tt.valueLen >> 16), byte(tt.valueLen >> 8), byte(tt.valueLen)}, make([]byte, tt.valueLen)...)
			extra := []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 999, 1 << 30, 0}, Value: value}}
			ski := []byte{20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}
			serial := big.NewInt(42)
			notBefore, notAfter := time.Date(2026, 11, 28, 1, 2, 3, 0, time.UTC), time.Date(2026, 11, 28, 2, 2, 3, 0, time.UTC)
			want, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
				SerialNumber: serial, RawSubject: subject, NotBefore: notBefore, NotAfter: notAfter,
				URIs: []*url.URL{uri}, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature,
				ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				SubjectKeyId: ski, AuthorityKeyId: issuer.SubjectKeyId, ExtraExtensions: extra,
			}, issuer, subjectKey.Public(), issuerKey)
			require.NoError(t, err)
			exts, err := der.SVIDExtensions(ski, issuer.SubjectKeyId, uri.String(), false, extra...)
			require.NoError(t, err)
			got, err := der.CreateCertificate(rand.Reader, &der.Certificate{
				SerialNumber: serial, Issuer: issuer.RawSubject, Subject: subject,
				NotBefore: notBefore, NotAfter: notAfter, PublicKey: spki, Extensions: exts,
			}, issuerKey)
			require.NoError(t, err)
			wantCert, err := x509.ParseCertificate(want)
			require.NoError(t, err)
			gotCert, err := x509.ParseCertificate(got)
			require.NoError(t, err)
			require.Equal(t, wantCert.RawTBSCertificate, gotCert.RawTBSCertificate)
			require.NoError(t, gotCert.CheckSignatureFrom(&x509.Certificate{PublicKey: issuerKey.Public(), PublicKeyAlgorithm: x509.ECDSA, BasicConstraintsValid: true, IsCA: true, Version: 3}))
		})
	}
}

// An extension's object identifier is refused where cryptobyte refused it (as encoding/asn1
// does, and also negative arcs).
func TestCreateCertificateRefusesBadOIDs(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	for _, oid := range []asn1.ObjectIdentifier{nil, {1}, {3, 1}, {1, 40}, {0, 40, 1}, {1, 2, -1}, {-1, 2}, {1, -2}} {
		_, err := der.CreateCertificate(rand.Reader, &der.Certificate{
			SerialNumber: big.NewInt(1), Extensions: []pkix.Extension{{Id: oid, Value: []byte{0x05, 0x00}}},
		}, key)
		require.ErrorContains(t, err, "invalid object identifier", "%v", oid)
	}
}
