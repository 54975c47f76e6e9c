package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/attestmesh/attestmesh/attest/capped"
)

// MaxCSRSize bounds the DER CSRs that ParseCSR reads. A P-256 or Ed25519 CSR is a few
// hundred bytes.
const MaxCSRSize = 8 << 10

// CSR is a workload's certificate signing request as ParseCSR checked it: what IssueSVID
// uses of it, the public key, and nothing else. Only ParseCSR makes one, so an SVID is never
// issued for a key whose CSR was not checked; it cannot be modified, so ParseCSR may hand the
// same one to several callers. Safe for concurrent use.
type CSR struct {
	pub  crypto.PublicKey // *ecdsa.PublicKey (P-256) or ed25519.PublicKey, of its own bytes
	spki []byte           // the DER SubjectPublicKeyInfo, of its own bytes
	sum  [sha256.Size]byte
}

// RawSubjectPublicKeyInfo returns a copy of the DER SubjectPublicKeyInfo of the CSR's key: what
// an attestation's report data binds.
func (c *CSR) RawSubjectPublicKeyInfo() []byte { return bytes.Clone(c.spki) }

// PublicKey returns the CSR's public key: a copy, *ecdsa.PublicKey or ed25519.PublicKey.
func (c *CSR) PublicKey() crypto.PublicKey {
	pub, err := x509.ParsePKIXPublicKey(c.spki)
	if err != nil { // ParseCSR parsed these bytes
		panic("ca: CSR: " + err.Error())
	}
	return pub
}

// ParseCSR parses a DER certificate signing request from a workload (untrusted bytes): at most
// MaxCSRSize bytes, no trailing data, an ECDSA P-256 or Ed25519 key, and a signature that
// verifies under that key. Errors name what is wrong.
//
// A workload that attests again with the same key sends the same CSR (attestapi.Client keeps
// it). IssueSVID remembers the CSRs it issued SVIDs for, by the SHA-256 of their bytes, and
// ParseCSR returns the same CSR for the same bytes without checking its signature again: the
// result is a function of the bytes alone. Only CSRs of workloads that passed attestation are
// remembered, and only their keys.
func ParseCSR(der []byte) (*CSR, error) {
	switch {
	case len(der) == 0:
		return nil, errors.New("ca: parse CSR: empty")
	case len(der) > MaxCSRSize:
		return nil, fmt.Errorf("ca: parse CSR: %d bytes, at most %d allowed", len(der), MaxCSRSize)
	}
	sum := sha256.Sum256(der)
	if csr, ok := issuedCSRs.Get(sum); ok {
		return csr, nil
	}
	if pub, spki, ok, err := parseEmptyCSR(der); ok {
		if k, isEd := pub.(ed25519.PublicKey); isEd {
			pub = ed25519.PublicKey(bytes.Clone(k))
		}
		if err != nil {
			return nil, fmt.Errorf("ca: parse CSR: %w", err)
		}
		return &CSR{pub: pub, spki: bytes.Clone(spki), sum: sum}, nil
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse CSR: %w", err)
	}
	if err := checkCSR(req); err != nil {
		return nil, fmt.Errorf("ca: parse CSR: %w", err)
	}
	// The SVID carries the CSR's public key bytes, which the quote's report data binds: they
	// must be the key's one encoding (crypto/x509 tolerates, say, parameters after the curve,
	// which OpenSSL refuses).
	if canonical, err := x509.MarshalPKIXPublicKey(req.PublicKey); err != nil || !bytes.Equal(canonical, req.RawSubjectPublicKeyInfo) {
		return nil, errors.New("ca: parse CSR: the public key is not in its canonical encoding (RFC 5480, RFC 8410)")
	}
	// The parse points into der: the key and its SPKI get bytes of their own.
	pub := req.PublicKey
	if k, ok := pub.(ed25519.PublicKey); ok {
		pub = ed25519.PublicKey(bytes.Clone(k))
	}
	return &CSR{pub: pub, spki: bytes.Clone(req.RawSubjectPublicKeyInfo), sum: sum}, nil
}

// The AlgorithmIdentifiers of ECDSA with SHA-256 and of Ed25519, without parameters (RFC 5758,
// RFC 8410), in DER.
var (
	algECDSAWithSHA256 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	algEd25519         = []byte{0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70}
)

// parseEmptyCSR parses the one shape of CSR that workloads send (attestapi makes it with
// package der, as crypto/x509 makes it of an empty template): version 1, an empty subject, no
// attributes, a P-256 key signing with ECDSA-with-SHA256 or an Ed25519 key, nothing else and
// nothing after. ok is false for any other bytes, which ParseCSR hands to crypto/x509 as
// before; for this shape it checks what x509.ParseCertificateRequest and checkCSR check (the
// DER, the key, the signature over the request info), without encoding/asn1's reflection, which
// took 4 % of the control plane's CPU time per attestation. err is set when ok and the
// signature does not verify. pub and spki point into der.
func parseEmptyCSR(der []byte) (pub crypto.PublicKey, spki []byte, ok bool, err error) {
	in := cryptobyte.String(der)
	var req, info, body, spkiElem, alg, sig cryptobyte.String
	if !in.ReadASN1(&req, cbasn1.SEQUENCE) || !in.Empty() ||
		!req.ReadASN1Element(&info, cbasn1.SEQUENCE) ||
		!req.ReadASN1Element(&alg, cbasn1.SEQUENCE) ||
		!req.ReadASN1(&sig, cbasn1.BIT_STRING) || !req.Empty() {
		return nil, nil, false, nil
	}
	if infoElem := info; !infoElem.ReadASN1(&body, cbasn1.SEQUENCE) ||
		!bytes.HasPrefix(body, []byte{0x02, 0x01, 0x00, 0x30, 0x00}) { // version 1, empty subject
		return nil, nil, false, nil
	}
	body = body[5:]
	if !body.ReadASN1Element(&spkiElem, cbasn1.SEQUENCE) || !bytes.Equal(body, []byte{0xa0, 0x00}) { // no attributes
		return nil, nil, false, nil
	}
	if len(sig) == 0 || sig[0] != 0 { // the signature's unused bits: none
		return nil, nil, false, nil
	}
	sig = sig[1:]
	key, isKey := spkiKey(spkiElem)
	if !isKey {
		return nil, nil, false, nil
	}
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() || !bytes.Equal(alg, algECDSAWithSHA256) {
			return nil, nil, false, nil
		}
		digest := sha256.Sum256(info)
		if !ecdsa.VerifyASN1(k, digest[:], sig) {
			return nil, nil, true, errors.New("CSR signature does not verify: x509: ECDSA verification failure")
		}
	case ed25519.PublicKey:
		if !bytes.Equal(alg, algEd25519) {
			return nil, nil, false, nil
		}
		if !ed25519.Verify(k, info, sig) {
			return nil, nil, true, errors.New("CSR signature does not verify: x509: Ed25519 verification failure")
		}
	default:
		return nil, nil, false, nil
	}
	return key, spkiElem, true, nil
}

// The SubjectPublicKeyInfos of a P-256 key (an uncompressed point) and of an Ed25519 key, in
// DER, up to the key's bytes.
var (
	spkiP256Prefix    = []byte{0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00}
	spkiEd25519Prefix = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}
)

// spkiKey returns the key of a P-256 or Ed25519 SubjectPublicKeyInfo in the form that
// crypto/x509 writes and that workloads send (as x509.ParsePKIXPublicKey would, without its
// encoding/asn1); false for any other bytes. A P-256 point must be on the curve.
func spkiKey(spki []byte) (crypto.PublicKey, bool) {
	switch {
	case len(spki) == len(spkiP256Prefix)+65 && bytes.HasPrefix(spki, spkiP256Prefix):
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), spki[len(spkiP256Prefix):])
		return k, err == nil
	case len(spki) == len(spkiEd25519Prefix)+ed25519.PublicKeySize && bytes.HasPrefix(spki, spkiEd25519Prefix):
		return ed25519.PublicKey(spki[len(spkiEd25519Prefix):]), true
	}
	return nil, false
}

// issuedCSRs are the CSRs that IssueSVID issued SVIDs for, by the SHA-256 of their DER: at
// most maxIssuedCSRs of a few hundred bytes each (a key and its SPKI); it starts over when
// full. Filling it takes passing attestation.
var issuedCSRs = capped.New[[sha256.Size]byte, *CSR](maxIssuedCSRs)

const maxIssuedCSRs = 4096
