package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// parsePEMChain parses concatenated PEM certificates strictly: nothing but whitespace and
// NUL bytes (quotes commonly end the PCK chain with a NUL) may stand before, between or after
// the blocks, so a damaged block is an error rather than silently skipped.
func parsePEMChain(b []byte) ([]*x509.Certificate, error) {
	const begin = "-----BEGIN "
	var certs []*x509.Certificate
	rest := b
	if i := bytes.Index(rest, []byte(begin)); i >= 0 {
		if junk := trimPEMSpace(rest[:i]); len(junk) != 0 {
			return nil, fmt.Errorf("%d bytes of non-PEM data before the first certificate", len(junk))
		}
		rest = rest[i:]
	}
	for len(trimPEMSpace(rest)) != 0 {
		seg := rest
		if next := bytes.Index(rest[1:], []byte(begin)); next >= 0 {
			seg, rest = rest[:next+1], rest[next+1:]
		} else {
			rest = nil
		}
		block, tail := pem.Decode(seg)
		if block == nil || len(trimPEMSpace(tail)) != 0 {
			return nil, fmt.Errorf("certificate %d: malformed PEM block", len(certs))
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("certificate %d: PEM type %q, want CERTIFICATE", len(certs), block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

func trimPEMSpace(b []byte) []byte { return bytes.Trim(b, " \t\r\n\x00") }

// chainSpec names the certificates of a chain in errors and says which Reason a broken
// chain gets.
type chainSpec struct {
	name   string   // "PCK certificate chain"
	roles  []string // role of certificate i; the last one repeats for longer chains
	reason Reason   // for a chain that does not verify or ends in another root
}

func (s chainSpec) role(i int) string {
	if i < len(s.roles) {
		return s.roles[i]
	}
	return s.roles[len(s.roles)-1]
}

// verifyChain checks that certs (leaf first, root last) ends in exactly root, that every
// certificate is valid at now, and that the signatures chain. It returns the leaf.
func verifyChain(certs []*x509.Certificate, root *x509.Certificate, now time.Time, spec chainSpec) (*x509.Certificate, error) {
	if len(certs) < 2 {
		return nil, fail(spec.reason, "%s: got %d certificates, want the leaf, any intermediates and the root", spec.name, len(certs))
	}
	last := certs[len(certs)-1]
	if !last.Equal(root) {
		return nil, fail(spec.reason, "%s: root certificate %q (serial %x) is not the pinned root %q (serial %x)",
			spec.name, last.Subject, last.SerialNumber, root.Subject, root.SerialNumber)
	}
	for i, c := range certs {
		if now.Before(c.NotBefore) {
			return nil, fail(ReasonCertNotYetValid, "%s: %s %q is not yet valid: valid from %s, verification time %s",
				spec.name, spec.role(i), c.Subject, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if now.After(c.NotAfter) {
			return nil, fail(ReasonCertExpired, "%s: %s %q expired at %s, verification time %s",
				spec.name, spec.role(i), c.Subject, c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	// The rest depends on the bytes only (the validity periods were checked above).
	key := chainKey(certs, root)
	if _, ok := verified.get(key); ok {
		return certs[0], nil
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range certs[1 : len(certs)-1] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, &Error{Reason: spec.reason, Err: fmt.Errorf("dcap: %s: %s %q does not chain to the pinned root: %w", spec.name, spec.role(0), leaf.Subject, err)}
	}
	// Every certificate in the chain must take part: an unused extra certificate would mean
	// the chain is not what it claims to be.
	for i := 1; i < len(certs); i++ {
		if err := certs[i-1].CheckSignatureFrom(certs[i]); err != nil {
			return nil, &Error{Reason: spec.reason, Err: fmt.Errorf("dcap: %s: %s %q is not signed by the next certificate %q: %w",
				spec.name, spec.role(i-1), certs[i-1].Subject, certs[i].Subject, err)}
		}
	}
	verified.put(key, struct{}{})
	return leaf, nil
}

// p256Key returns the certificate's public key if it is an ECDSA P-256 key.
func p256Key(c *x509.Certificate) (*ecdsa.PublicKey, bool) {
	k, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, false
	}
	return k, true
}
