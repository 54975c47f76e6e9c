package ca

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"

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
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse CSR: %w", err)
	}
	if err := checkCSR(req); err != nil {
		return nil, fmt.Errorf("ca: parse CSR: %w", err)
	}
	// The parse points into der: the key and its SPKI get bytes of their own.
	pub := req.PublicKey
	if k, ok := pub.(ed25519.PublicKey); ok {
		pub = ed25519.PublicKey(bytes.Clone(k))
	}
	return &CSR{pub: pub, spki: bytes.Clone(req.RawSubjectPublicKeyInfo), sum: sum}, nil
}

// issuedCSRs are the CSRs that IssueSVID issued SVIDs for, by the SHA-256 of their DER: at
// most maxIssuedCSRs of a few hundred bytes each (a key and its SPKI); it starts over when
// full. Filling it takes passing attestation.
var issuedCSRs = capped.New[[sha256.Size]byte, *CSR](maxIssuedCSRs)

const maxIssuedCSRs = 4096
