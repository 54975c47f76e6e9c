package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
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
	return csr, nil
}
