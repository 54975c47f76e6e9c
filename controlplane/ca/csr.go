package ca

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
)

// MaxCSRSize bounds the DER CSRs that ParseCSR reads. A P-256 or Ed25519 CSR is a few
// hundred bytes.
const MaxCSRSize = 8 << 10

// ParseCSR parses a DER certificate signing request from a workload (untrusted bytes): at most
// MaxCSRSize bytes, no trailing data, an ECDSA P-256 or Ed25519 key, and a signature that
// verifies under that key. Errors name what is wrong.
//
// A workload that attests again with the same key sends the same CSR (attestapi.Client keeps
// it), so ParseCSR remembers the last CSRs it accepted, by the SHA-256 of their bytes, and
// returns the same parse for the same bytes without checking the signature again: the result
// is a function of the bytes alone. The CSR returned may therefore be shared between calls:
// nobody may modify it.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	switch {
	case len(der) == 0:
		return nil, errors.New("ca: parse CSR: empty")
	case len(der) > MaxCSRSize:
		return nil, fmt.Errorf("ca: parse CSR: %d bytes, at most %d allowed", len(der), MaxCSRSize)
	}
	sum := sha256.Sum256(der)
	if csr := acceptedCSRs.get(sum); csr != nil {
		return csr, nil
	}
	// The parse keeps slices of its input: a copy of its own, since the cache outlives der.
	csr, err := x509.ParseCertificateRequest(bytes.Clone(der))
	if err != nil {
		return nil, fmt.Errorf("ca: parse CSR: %w", err)
	}
	if err := checkCSR(csr); err != nil {
		return nil, fmt.Errorf("ca: parse CSR: %w", err)
	}
	acceptedCSRs.put(sum, csr)
	return csr, nil
}

// acceptedCSRs are the CSRs that ParseCSR accepted, by the SHA-256 of their DER. Failures are
// never remembered. At most maxAcceptedCSRs (about 1 KB each); it starts over when full, so
// that a flood of distinct CSRs costs what it would without it.
var acceptedCSRs = &csrCache{}

const maxAcceptedCSRs = 4096

type csrCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*x509.CertificateRequest
}

func (c *csrCache) get(k [sha256.Size]byte) *x509.CertificateRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// accepted tells whether csr is a parse that ParseCSR returned and still remembers: one whose
// key and signature it checked.
func (c *csrCache) accepted(csr *x509.CertificateRequest) bool {
	return c.get(sha256.Sum256(csr.Raw)) == csr
}

func (c *csrCache) put(k [sha256.Size]byte, csr *x509.CertificateRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxAcceptedCSRs {
		c.m = make(map[[sha256.Size]byte]*x509.CertificateRequest)
	}
	c.m[k] = csr
}
