package dcap

import (
	"crypto/x509"
	_ "embed"
	"fmt"
	"sync"
)

// intelRootPEM is the Intel SGX Root CA, the trust anchor of every genuine PCK certificate and
// TCB signing certificate (https://certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.pem).
// SHA-256 fingerprint 44:A0:19:6B:2B:99:F8:89:B8:E1:49:E9:5B:80:7A:35:0E:74:24:96:43:99:E8:85:A7:CB:B8:CC:FA:B6:74:D3.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

var intelRoot = sync.OnceValue(func() *x509.Certificate {
	c, err := LoadRoot(intelRootPEM)
	if err != nil {
		// The embedded certificate is fixed at build time and checked by a test.
		panic(err)
	}
	return c
})

// IntelRoot returns the pinned Intel SGX Root CA. Callers must not modify it.
func IntelRoot() *x509.Certificate { return intelRoot() }

// LoadRoot parses a root CA from PEM: exactly one CERTIFICATE block, a CA certificate,
// self-signed.
func LoadRoot(pemBytes []byte) (*x509.Certificate, error) {
	certs, err := parsePEMChain(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("dcap: root CA: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("dcap: root CA: got %d certificates, want 1", len(certs))
	}
	c := certs[0]
	if !c.IsCA {
		return nil, fmt.Errorf("dcap: root CA: %q is not a CA certificate", c.Subject)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		return nil, fmt.Errorf("dcap: root CA: %q is not self-signed: %w", c.Subject, err)
	}
	return c, nil
}
