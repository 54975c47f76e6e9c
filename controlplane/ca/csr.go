package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"weak"
)

// MaxCSRSize bounds the DER CSRs that ParseCSR reads. A P-256 or Ed25519 CSR is a few
// hundred bytes.
const MaxCSRSize = 8 << 10

// ParseCSR parses a DER certificate signing request from a workload (untrusted bytes): at most
// MaxCSRSize bytes, no trailing data, an ECDSA P-256 or Ed25519 key, and a signature that
// verifies under that key. Errors name what is wrong.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	switch {
	case len(der) == 0:
		return nil, errors.New("ca: parse CSR: empty")
	case len(der) > MaxCSRSize:
		return nil, fmt.Errorf("ca: parse CSR: %d bytes, at most %d allowed", len(der), MaxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse CSR: %w", err)
	}
	if err := checkCSR(csr); err != nil {
		return nil, fmt.Errorf("ca: parse CSR: %w", err)
	}
	checkedCSRs.add(csr)
	return csr, nil
}

// checkedCSRs are the last CSRs that ParseCSR checked, so that IssueSVID does not verify
// their signatures again. Weak: it keeps none of them alive.
var checkedCSRs = &csrRing{}

type csrRing struct {
	mu   sync.Mutex
	ring [256]weak.Pointer[x509.CertificateRequest]
	next int
}

func (r *csrRing) add(csr *x509.CertificateRequest) {
	w := weak.Make(csr)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ring[r.next] = w
	r.next = (r.next + 1) % len(r.ring)
}

func (r *csrRing) has(csr *x509.CertificateRequest) bool {
	w := weak.Make(csr)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, have := range r.ring {
		if have == w {
			return true
		}
	}
	return false
}
