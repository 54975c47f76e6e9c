package attestapi

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParseCertsPEM decodes one or more "CERTIFICATE" PEM blocks, such as the control plane's CA
// bundle that a workload pins; any other block or trailing non-whitespace is refused.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for i := 0; ; i++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("parse certificates: PEM block %d has type %q, want \"CERTIFICATE\"", i, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificates: block %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(data)) != 0 {
		return nil, errors.New("parse certificates: data that is not a PEM block")
	}
	if len(certs) == 0 {
		return nil, errors.New("parse certificates: no CERTIFICATE PEM block found")
	}
	return certs, nil
}
