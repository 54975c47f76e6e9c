// Package der encodes and signs the two X.509 structures that every attestation makes: the
// workload's certificate signing request and the SVID that the control plane issues for it.
//
// crypto/x509 builds both with encoding/asn1's reflection, and then verifies the signature it
// has just made, to catch a crypto.Signer that misbehaves (a faulty HSM, or a fault during an
// RSA-CRT signature, which leaks the key). On the attestation path that check was the
// control plane's second-largest cost, an ECDSA verification per SVID. This package builds the
// same bytes by hand and signs once. It signs only with the standard library's own
// in-memory keys, ECDSA P-256 and P-384 and Ed25519; anything else is ErrUnsupported and the
// caller uses crypto/x509. An ECDSA signature is not checked: its nonce is hedged (random and
// derived from the key and message), so a fault in one signature does not combine with another
// into the key. An Ed25519 signature is deterministic, and a workload signs the same CSR again
// at every attestation: a faulty signature beside a correct one of the same message gives the
// key away, so Ed25519 signatures are checked as crypto/x509 does (a verification costs less
// than an ECDSA one). Its tests compare every structure, byte for byte, with crypto/x509's.
package der

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"time"
)

// ErrUnsupported is returned for a signing key this package does not sign with: the caller
// uses crypto/x509 instead.
var ErrUnsupported = errors.New("der: unsupported signing key")

// Object identifiers, as crypto/x509 uses them.
var (
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}

	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}

	oidServerAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// algorithm is how a key signs: the AlgorithmIdentifier's OID and the hash of the signed
// bytes (0: the bytes themselves, Ed25519).
type algorithm struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}

// algorithmOf returns the signature algorithm crypto/x509 would choose for key, for the key
// types this package signs with.
func algorithmOf(key crypto.Signer) (algorithm, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return algorithm{oidECDSAWithSHA256, crypto.SHA256}, nil
		case elliptic.P384():
			return algorithm{oidECDSAWithSHA384, crypto.SHA384}, nil
		}
	case ed25519.PrivateKey:
		return algorithm{oidEd25519, 0}, nil
	}
	return algorithm{}, fmt.Errorf("%w: %T", ErrUnsupported, key)
}

// Supported reports whether this package signs with key.
func Supported(key crypto.Signer) bool {
	_, err := algorithmOf(key)
	return err == nil
}

// signed returns the SEQUENCE of tbs, the algorithm's identifier and key's signature of tbs:
// a Certificate or a CertificationRequest.
func signed(rand io.Reader, key crypto.Signer, alg algorithm, tbs []byte) ([]byte, error) {
	msg := tbs
	if alg.hash != 0 {
		h := alg.hash.New()
		h.Write(tbs)
		msg = h.Sum(nil)
	}
	sig, err := key.Sign(rand, msg, alg.hash)
	if err != nil {
		return nil, fmt.Errorf("der: sign: %w", err)
	}
	if k, ok := key.(ed25519.PrivateKey); ok && !ed25519.Verify(k.Public().(ed25519.PublicKey), msg, sig) {
		return nil, errors.New("der: sign: the Ed25519 signature does not verify with the key's public half (a faulty key or signature)")
	}
	n := len(tbs) + algorithmLen(alg) + tlvLen(1+len(sig))
	if n > maxLen {
		return nil, fmt.Errorf("der: signed: %d bytes, at most %d", n, maxLen)
	}
	out := make([]byte, 0, tlvLen(n))
	out = appendHeader(out, tagSequence, n)
	out = append(out, tbs...)
	out = appendAlgorithm(out, alg)
	out = appendHeader(out, tagBitString, 1+len(sig))
	out = append(out, 0) // no unused bits
	return append(out, sig...), nil
}

// CertificateRequest returns a PKCS #10 certificate signing request for key's public key,
// signed by key, with an empty subject and no attributes: what
// x509.CreateCertificateRequest makes of an empty template.
func CertificateRequest(rand io.Reader, key crypto.Signer) ([]byte, error) {
	alg, err := algorithmOf(key)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("der: certificate request: %w", err)
	}
	n := 3 + 2 + len(spki) + 2
	tbs := make([]byte, 0, tlvLen(n))
	tbs = appendHeader(tbs, tagSequence, n)
	tbs = append(tbs, tagInteger, 1, 0) // version 1
	tbs = append(tbs, tagSequence, 0)   // subject: empty RDNSequence
	tbs = append(tbs, spki...)
	tbs = append(tbs, 0xa0, 0) // attributes ([0] IMPLICIT SET): none
	return signed(rand, key, alg, tbs)
}

// Certificate is what an X.509 v3 certificate holds besides its issuer's signature.
type Certificate struct {
	SerialNumber *big.Int // positive
	Issuer       []byte   // the issuer's Name, DER (its RawSubject)
	Subject      []byte   // Name, DER
	NotBefore    time.Time
	NotAfter     time.Time
	PublicKey    []byte // SubjectPublicKeyInfo, DER (x509.MarshalPKIXPublicKey)
	Extensions   []pkix.Extension
}

// CreateCertificate returns c signed by key, in DER.
func CreateCertificate(rand io.Reader, c *Certificate, key crypto.Signer) ([]byte, error) {
	alg, err := algorithmOf(key)
	if err != nil {
		return nil, err
	}
	if c.SerialNumber == nil || c.SerialNumber.Sign() <= 0 {
		return nil, errors.New("der: certificate: the serial number must be positive")
	}
	for _, t := range []time.Time{c.NotBefore, c.NotAfter} {
		if y := t.UTC().Year(); y < 0 || y > 9999 {
			return nil, fmt.Errorf("der: certificate: year %d: a certificate's times have four digits", y)
		}
	}
	// Encoded by hand, each length known before its element is written: cryptobyte's builder
	// allocates a child for every element and moves bytes when a length needs more than one
	// byte (5 KB and 150 allocations per SVID).
	var exts []byte
	if len(c.Extensions) > 0 {
		exts = make([]byte, 0, 512)
		for _, e := range c.Extensions {
			if exts, err = appendExtension(exts, e); err != nil {
				return nil, err
			}
		}
	}
	serial := c.SerialNumber.Bytes()
	serialLen := len(serial)
	if serial[0]&0x80 != 0 {
		serialLen++ // a leading zero keeps it positive
	}
	validity := timeLen(c.NotBefore) + timeLen(c.NotAfter)
	n := len(version3) + tlvLen(serialLen) + algorithmLen(alg) + len(c.Issuer) + tlvLen(validity) + len(c.Subject) + len(c.PublicKey)
	if len(exts) > 0 {
		n += tlvLen(tlvLen(len(exts)))
	}
	if n > maxLen {
		return nil, fmt.Errorf("der: certificate: %d bytes, at most %d", n, maxLen)
	}
	tbs := make([]byte, 0, tlvLen(n))
	tbs = appendHeader(tbs, tagSequence, n)
	tbs = append(tbs, version3...)
	tbs = appendHeader(tbs, tagInteger, serialLen)
	if serialLen > len(serial) {
		tbs = append(tbs, 0)
	}
	tbs = append(tbs, serial...)
	tbs = appendAlgorithm(tbs, alg)
	tbs = append(tbs, c.Issuer...)
	tbs = appendHeader(tbs, tagSequence, validity)
	tbs = appendTime(tbs, c.NotBefore)
	tbs = appendTime(tbs, c.NotAfter)
	tbs = append(tbs, c.Subject...)
	tbs = append(tbs, c.PublicKey...)
	if len(exts) > 0 {
		tbs = appendHeader(tbs, tagExtensions, tlvLen(len(exts)))
		tbs = appendHeader(tbs, tagSequence, len(exts))
		tbs = append(tbs, exts...)
	}
	return signed(rand, key, alg, tbs)
}

// DER tags and encodings that CreateCertificate writes.
const (
	tagBoolean     = 0x01
	tagInteger     = 0x02
	tagBitString   = 0x03
	tagOctetString = 0x04
	tagOID         = 0x06
	tagUTCTime     = 0x17
	tagGeneralTime = 0x18
	tagSequence    = 0x30
	tagExtensions  = 0xa3 // [3] EXPLICIT
	tagKeyID       = 0x80 // [0] IMPLICIT, in AuthorityKeyIdentifier
	tagURI         = 0x86 // [6] IMPLICIT, in GeneralName

	// maxLen bounds an element's length: appendHeader writes up to three length bytes.
	maxLen = 1<<24 - 1
	// maxURILen bounds an SVID's URI SAN (a SPIFFE ID is at most 2,048 bytes).
	maxURILen = 1 << 16
)

var version3 = []byte{0xa0, 0x03, tagInteger, 0x01, 0x02} // [0] EXPLICIT INTEGER 2

// appendHeader appends an element's tag and its length n in DER's shortest form (n <= maxLen).
func appendHeader(b []byte, tag byte, n int) []byte {
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(n)) //nolint:gosec // G115: 0 <= n <= maxLen
	switch {
	case n < 0x80:
		return append(b, tag, l[3])
	case n <= 0xff:
		return append(b, tag, 0x81, l[3])
	case n <= 0xffff:
		return append(b, tag, 0x82, l[2], l[3])
	default:
		return append(b, tag, 0x83, l[1], l[2], l[3])
	}
}

// tlvLen is the length of an element with n bytes of content (one-byte tag).
func tlvLen(n int) int {
	switch {
	case n < 0x80:
		return 2 + n
	case n <= 0xff:
		return 3 + n
	case n <= 0xffff:
		return 4 + n
	default:
		return 5 + n
	}
}

// appendOID appends oid's content octets (the tag and length are the caller's). It refuses
// what cryptobyte refuses: fewer than two arcs, a negative arc, a first arc above 2, a second
// arc of 40 or more under a first of 0 or 1.
func appendOID(b []byte, oid asn1.ObjectIdentifier) ([]byte, bool) {
	if len(oid) < 2 || oid[0] < 0 || oid[0] > 2 || oid[1] < 0 || (oid[0] < 2 && oid[1] >= 40) {
		return b, false
	}
	b = appendBase128(b, oid[0]*40+oid[1])
	for _, v := range oid[2:] {
		if v < 0 {
			return b, false
		}
		b = appendBase128(b, v)
	}
	return b, true
}

// appendBase128 appends v in base 128, most significant group first, each but the last with
// its high bit set.
func appendBase128(b []byte, v int) []byte {
	n := 1
	for i := v; i >= 0x80; i >>= 7 {
		n++
	}
	for i := n - 1; i >= 0; i-- {
		o := byte(v >> (uint(i) * 7) & 0x7f) //nolint:gosec // G115: masked to 7 bits
		if i != 0 {
			o |= 0x80
		}
		b = append(b, o)
	}
	return b
}

// appendAlgorithm appends alg's AlgorithmIdentifier: no parameters, for ECDSA (RFC 5758) and
// Ed25519 (RFC 8410) alike.
func appendAlgorithm(b []byte, alg algorithm) []byte {
	var scratch [16]byte
	oid, _ := appendOID(scratch[:0], alg.oid) // the package's own, valid
	b = appendHeader(b, tagSequence, tlvLen(len(oid)))
	b = appendHeader(b, tagOID, len(oid))
	return append(b, oid...)
}

func algorithmLen(alg algorithm) int {
	var scratch [16]byte
	oid, _ := appendOID(scratch[:0], alg.oid)
	return tlvLen(tlvLen(len(oid)))
}

// appendTime appends t as RFC 5280 section 4.1.2.5 has it, as encoding/asn1 does: UTCTime for
// the years 1950 to 2049, GeneralizedTime otherwise; whole seconds, UTC.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	if utcTime(t) {
		return t.AppendFormat(append(b, tagUTCTime, 13), "060102150405Z")
	}
	return t.AppendFormat(append(b, tagGeneralTime, 15), "20060102150405Z")
}

func timeLen(t time.Time) int {
	if utcTime(t.UTC()) {
		return 2 + 13
	}
	return 2 + 15
}

func utcTime(t time.Time) bool { y := t.Year(); return y >= 1950 && y < 2050 }

// appendExtension appends e; criticality is encoded only when true (DER omits a DEFAULT value).
func appendExtension(b []byte, e pkix.Extension) ([]byte, error) {
	var scratch [64]byte
	oid, ok := appendOID(scratch[:0], e.Id)
	if !ok {
		return nil, fmt.Errorf("der: certificate: extension %v: invalid object identifier", e.Id)
	}
	n := tlvLen(len(oid)) + tlvLen(len(e.Value))
	if e.Critical {
		n += 3
	}
	if n > maxLen {
		return nil, fmt.Errorf("der: certificate: extension %v: %d bytes, at most %d", e.Id, n, maxLen)
	}
	b = appendHeader(b, tagSequence, n)
	b = appendHeader(b, tagOID, len(oid))
	b = append(b, oid...)
	if e.Critical {
		b = append(b, tagBoolean, 1, 0xff)
	}
	b = appendHeader(b, tagOctetString, len(e.Value))
	return append(b, e.Value...), nil
}

// SVIDExtensions returns an X.509-SVID's extensions, in crypto/x509's order: key usage
// digitalSignature (critical), extended key usage serverAuth and clientAuth, basic
// constraints "not a CA" (critical), the subject and authority key identifiers (the latter
// omitted when empty), the URI SAN uri (critical when the subject is empty, RFC 5280 section
// 4.2.1.6), then extra.
func SVIDExtensions(ski, aki []byte, uri string, subjectEmpty bool, extra ...pkix.Extension) ([]pkix.Extension, error) {
	if !isIA5(uri) {
		return nil, fmt.Errorf("der: SVID: URI SAN %q is not ASCII", uri)
	}
	if len(uri) > maxURILen {
		return nil, fmt.Errorf("der: SVID: URI SAN of %d bytes, at most %d", len(uri), maxURILen)
	}
	exts := make([]pkix.Extension, 0, 6+len(extra))
	exts = append(exts,
		// BIT STRING with one bit, digitalSignature (bit 0): seven unused bits, then 0x80.
		pkix.Extension{Id: oidKeyUsage, Critical: true, Value: []byte{0x03, 0x02, 0x07, 0x80}},
		pkix.Extension{Id: oidExtKeyUsage, Value: slices.Clone(svidExtKeyUsage)},
		// BasicConstraints: cA FALSE and no pathLenConstraint are both defaults, so omitted.
		pkix.Extension{Id: oidBasicConstraints, Critical: true, Value: []byte{0x30, 0x00}},
		pkix.Extension{Id: oidSubjectKeyID, Value: append(appendHeader(nil, tagOctetString, len(ski)), ski...)},
	)
	if len(aki) > 0 {
		exts = append(exts, pkix.Extension{Id: oidAuthorityKeyID, Value: sequenceOf(tagKeyID, []byte(aki))})
	}
	exts = append(exts, pkix.Extension{Id: oidSubjectAltName, Critical: subjectEmpty, Value: sequenceOf(tagURI, []byte(uri))})
	for _, e := range extra {
		// crypto/x509 refuses to parse a certificate with two extensions of one OID.
		if slices.ContainsFunc(exts, func(x pkix.Extension) bool { return x.Id.Equal(e.Id) }) {
			return nil, fmt.Errorf("der: SVID: extension %s is there twice", e.Id)
		}
		exts = append(exts, e)
	}
	return exts, nil
}

// svidExtKeyUsage is the SVIDs' ExtKeyUsage: a SEQUENCE of serverAuth and clientAuth.
var svidExtKeyUsage = func() []byte {
	var b []byte
	for _, oid := range []asn1.ObjectIdentifier{oidServerAuth, oidClientAuth} {
		enc, _ := appendOID(nil, oid) // valid constants
		b = append(appendHeader(b, tagOID, len(enc)), enc...)
	}
	return append(appendHeader(nil, tagSequence, len(b)), b...)
}()

// sequenceOf returns a SEQUENCE of one element: tag and v.
func sequenceOf(tag byte, v []byte) []byte {
	b := make([]byte, 0, tlvLen(tlvLen(len(v))))
	b = appendHeader(b, tagSequence, tlvLen(len(v)))
	b = appendHeader(b, tag, len(v))
	return append(b, v...)
}

func isIA5(s string) bool {
	for i := range len(s) {
		if s[i] > 0x7f {
			return false
		}
	}
	return true
}
