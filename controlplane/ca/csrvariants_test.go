package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/attestmesh/attestmesh/attest/attestapi"
)

// The OIDs a hand-built CSR uses.
var (
	reviewOIDECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	reviewOIDP256        = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	reviewOIDECDSASHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	reviewOIDEd25519     = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// csrParts are the pieces of a hand-built CSR; each builder may be replaced to make a variant.
type csrParts struct {
	version func(*cryptobyte.Builder)
	subject func(*cryptobyte.Builder)
	spki    func(*cryptobyte.Builder)
	attrs   func(*cryptobyte.Builder)
	alg     func(*cryptobyte.Builder)
	// sign signs the CertificationRequestInfo; wrapSig writes the signature's BIT STRING.
	sign    func(info []byte) []byte
	wrapSig func(*cryptobyte.Builder, []byte)
	trailer []byte // after the outer SEQUENCE
}

func (p csrParts) build(t *testing.T) []byte {
	t.Helper()
	var ib cryptobyte.Builder
	ib.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		p.version(b)
		p.subject(b)
		p.spki(b)
		p.attrs(b)
	})
	info, err := ib.Bytes()
	require.NoError(t, err)
	sig := p.sign(info)
	var ob cryptobyte.Builder
	ob.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(info)
		p.alg(b)
		p.wrapSig(b, sig)
	})
	out, err := ob.Bytes()
	require.NoError(t, err)
	return append(out, p.trailer...)
}

func algID(oid asn1.ObjectIdentifier, params ...func(*cryptobyte.Builder)) func(*cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			for _, p := range params {
				p(b)
			}
		})
	}
}

func addNULL(b *cryptobyte.Builder) { b.AddASN1NULL() }

func addOID(oid asn1.ObjectIdentifier) func(*cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oid) }
}

// spkiOf writes a SubjectPublicKeyInfo of algorithm alg and key bits key.
func spkiOf(alg func(*cryptobyte.Builder), key []byte) func(*cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			alg(b)
			b.AddASN1BitString(key)
		})
	}
}

func p256Parts(t *testing.T, key *ecdsa.PrivateKey) csrParts {
	t.Helper()
	point, err := key.PublicKey.Bytes()
	require.NoError(t, err)
	p := emptyParts()
	p.spki = spkiOf(algID(reviewOIDECPublicKey, addOID(reviewOIDP256)), point)
	p.alg = algID(reviewOIDECDSASHA256)
	p.sign = func(info []byte) []byte {
		d := sha256.Sum256(info)
		sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
		require.NoError(t, err)
		return sig
	}
	return p
}

// emptyParts is version 1, an empty subject, no attributes; no key, algorithm or signer.
func emptyParts() csrParts {
	return csrParts{
		version: func(b *cryptobyte.Builder) { b.AddASN1Int64(0) },
		subject: func(b *cryptobyte.Builder) { b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) },
		attrs: func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(*cryptobyte.Builder) {})
		},
		wrapSig: func(b *cryptobyte.Builder, sig []byte) { b.AddASN1BitString(sig) },
	}
}

func ed25519Parts(t *testing.T, key ed25519.PrivateKey) csrParts {
	t.Helper()
	p := emptyParts()
	p.spki = spkiOf(algID(reviewOIDEd25519), key.Public().(ed25519.PublicKey))
	p.alg = algID(reviewOIDEd25519)
	p.sign = func(info []byte) []byte { return ed25519.Sign(key, info) }
	return p
}

// ParseCSR decides every hand-built variant of the CSR workloads send as crypto/x509 and
// checkCSR decide it (the fast path, where it decides, and the fallback otherwise), with the
// same key and SPKI: non-minimal lengths, parameters on the algorithm identifiers, wrong
// OIDs, compressed and off-curve points, the point at infinity, unused bits in the signature,
// trailing data, non-minimal signature integers, key and algorithm mismatches.
func TestParseCSRAgreesWithX509OnVariants(t *testing.T) {
	p256 := mustKey(t, P256).(*ecdsa.PrivateKey)
	other := mustKey(t, P256).(*ecdsa.PrivateKey)
	ed := mustKey(t, Ed25519).(ed25519.PrivateKey)
	point, err := p256.PublicKey.Bytes()
	require.NoError(t, err)
	compressed := append([]byte{2 | point[64]&1}, point[1:33]...)
	offCurve := bytes.Clone(point)
	offCurve[64] ^= 1
	infinity := make([]byte, 65)
	infinity[0] = 4

	type variant struct {
		name string
		csr  func() []byte
	}
	mod := func(base csrParts, f func(*csrParts)) func() []byte {
		return func() []byte { p := base; f(&p); return p.build(t) }
	}
	pp, ep := p256Parts(t, p256), ed25519Parts(t, ed)
	longForm := func(der []byte) []byte { // outer length as 0x82 0x00 0xNN: non-minimal
		require.Equal(t, byte(0x81), der[1])
		return append([]byte{0x30, 0x82, 0x00, der[2]}, der[3:]...)
	}
	variants := []variant{
		{"P-256 as sent", mod(pp, func(*csrParts) {})},
		{"Ed25519 as sent", mod(ep, func(*csrParts) {})},
		{"P-256 NULL parameters on the signature algorithm", mod(pp, func(p *csrParts) { p.alg = algID(reviewOIDECDSASHA256, addNULL) })},
		{"Ed25519 NULL parameters on the signature algorithm", mod(ep, func(p *csrParts) { p.alg = algID(reviewOIDEd25519, addNULL) })},
		{"Ed25519 NULL parameters on the key algorithm", mod(ep, func(p *csrParts) {
			p.spki = spkiOf(algID(reviewOIDEd25519, addNULL), ed.Public().(ed25519.PublicKey))
		})},
		{"P-256 key without curve", mod(pp, func(p *csrParts) { p.spki = spkiOf(algID(reviewOIDECPublicKey), point) })},
		{"P-256 key with a trailing NULL after the curve", mod(pp, func(p *csrParts) {
			p.spki = spkiOf(algID(reviewOIDECPublicKey, addOID(reviewOIDP256), addNULL), point)
		})},
		{"compressed point", mod(pp, func(p *csrParts) {
			p.spki = spkiOf(algID(reviewOIDECPublicKey, addOID(reviewOIDP256)), compressed)
		})},
		{"point off the curve", mod(pp, func(p *csrParts) {
			p.spki = spkiOf(algID(reviewOIDECPublicKey, addOID(reviewOIDP256)), offCurve)
		})},
		{"point at infinity", mod(pp, func(p *csrParts) {
			p.spki = spkiOf(algID(reviewOIDECPublicKey, addOID(reviewOIDP256)), infinity)
		})},
		{"P-256 key, Ed25519 algorithm", mod(pp, func(p *csrParts) { p.alg = algID(reviewOIDEd25519) })},
		{"Ed25519 key, ECDSA algorithm", mod(ep, func(p *csrParts) { p.alg = algID(reviewOIDECDSASHA256) })},
		{"signed by another key", mod(pp, func(p *csrParts) { p.sign = p256Parts(t, other).sign })},
		{"signature with unused bits", mod(pp, func(p *csrParts) {
			p.wrapSig = func(b *cryptobyte.Builder, sig []byte) {
				b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) { b.AddUint8(1); b.AddBytes(append(sig, 0)) })
			}
		})},
		{"signature with a trailing byte", mod(pp, func(p *csrParts) {
			p.wrapSig = func(b *cryptobyte.Builder, sig []byte) { b.AddASN1BitString(append(sig, 0)) }
		})},
		{"signature r with a needless leading zero", mod(pp, func(p *csrParts) {
			inner := p.sign
			p.sign = func(info []byte) []byte {
				sig := inner(info)
				// SEQUENCE { INTEGER r, INTEGER s }: pad r with one 0x00 (non-minimal).
				s := cryptobyte.String(sig)
				var seq cryptobyte.String
				require.True(t, s.ReadASN1(&seq, cbasn1.SEQUENCE))
				var r, ss cryptobyte.String
				require.True(t, seq.ReadASN1(&r, cbasn1.INTEGER))
				require.True(t, seq.ReadASN1(&ss, cbasn1.INTEGER))
				var b cryptobyte.Builder
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.INTEGER, func(b *cryptobyte.Builder) { b.AddUint8(0); b.AddBytes(r) })
					b.AddASN1(cbasn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(ss) })
				})
				return b.BytesOrPanic()
			}
		})},
		{"version 2", mod(pp, func(p *csrParts) { p.version = func(b *cryptobyte.Builder) { b.AddASN1Int64(1) } })},
		{"attributes as [0] primitive", mod(pp, func(p *csrParts) {
			p.attrs = func(b *cryptobyte.Builder) { b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(*cryptobyte.Builder) {}) }
		})},
		{"no attributes field", mod(pp, func(p *csrParts) { p.attrs = func(*cryptobyte.Builder) {} })},
		{"trailing byte", mod(pp, func(p *csrParts) { p.trailer = []byte{0} })},
		{"outer length in long form", func() []byte { return longForm(pp.build(t)) }},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			csr := v.csr()
			_, _, fast, _ := parseEmptyCSR(csr)
			req, x509Err := checkedByX509(csr)
			got, err := ParseCSR(csr)
			t.Logf("fast path: %t; crypto/x509: %v; ParseCSR: %v", fast, x509Err, err)
			// ParseCSR accepts what crypto/x509 and checkCSR do, with the key in its one encoding.
			accept := x509Err == nil
			if accept {
				canonical, mErr := x509.MarshalPKIXPublicKey(req.PublicKey)
				accept = mErr == nil && bytes.Equal(canonical, req.RawSubjectPublicKeyInfo)
			}
			require.Equal(t, accept, err == nil, "ParseCSR: %v; crypto/x509 and checkCSR: %v", err, x509Err)
			if err == nil {
				assert.Equal(t, req.RawSubjectPublicKeyInfo, got.RawSubjectPublicKeyInfo())
				assert.True(t, req.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(got.PublicKey()))
			}
		})
	}
}

// A CSR that crypto/x509 accepts with a SubjectPublicKeyInfo in a form other than its own
// (here a trailing NULL after the namedCurve in the AlgorithmIdentifier, which crypto/x509's
// parseAI ignores) is refused: the SVID carries the CSR's key bytes, which the quote's report
// data binds, and stricter parsers (OpenSSL, BoringSSL) refuse that form.
func TestParseCSRRefusesNonCanonicalSPKI(t *testing.T) {
	key := mustKey(t, P256).(*ecdsa.PrivateKey)
	point, err := key.PublicKey.Bytes()
	require.NoError(t, err)
	p := p256Parts(t, key)
	p.spki = spkiOf(algID(reviewOIDECPublicKey, addOID(reviewOIDP256), addNULL), point)
	raw := p.build(t)
	_, err = x509.ParseCertificateRequest(raw)
	require.NoError(t, err, "crypto/x509 accepts the CSR")
	_, err = ParseCSR(raw)
	require.ErrorContains(t, err, "not in its canonical encoding")
}

// An extra extension whose OID IssueSVIDDER already writes (here the TEE extension) makes an
// SVID with a duplicate extension, which crypto/x509 (since Go 1.19), and so every Go TLS
// peer, refuses to parse. x509.CreateCertificate would have let ExtraExtensions replace its
// own; package der appends. On main the parse-back in sign turned this into an error;
// IssueSVIDDER now returns the unparseable certificate as issued.
func TestIssueSVIDDERRefusesADuplicateExtension(t *testing.T) {
	a := mustAuthority(t)
	csr, err := ParseCSR(mustCSR(t, mustKey(t, P256)))
	require.NoError(t, err)
	id := spiffeid.RequireFromPath(testTD, "/s/svc")
	for _, extra := range []pkix.Extension{
		{Id: attestapi.OIDTEE, Value: []byte{0x0c, 0x01, 'x'}},
		{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x00}}, // subjectAltName
	} {
		t.Run(extra.Id.String(), func(t *testing.T) {
			ders, issueErr := a.IssueSVIDDER(csr, id, time.Hour, attestapi.TEESGX, extra)
			var parseErr error
			if issueErr == nil {
				_, parseErr = x509.ParseCertificate(ders[0])
				t.Logf("x509.ParseCertificate of the issued SVID: %v", parseErr)
			}
			_, parsedErr := a.IssueSVID(csr, id, time.Hour, attestapi.TEESGX, extra)
			require.Error(t, parsedErr, "IssueSVID (parse-back) refuses it")
			require.Error(t, issueErr, "IssueSVIDDER issued a certificate crypto/x509 cannot parse: %v", parseErr)
			assert.ErrorContains(t, issueErr, "der: SVID: extension "+extra.Id.String()+" is there twice")
		})
	}
}
