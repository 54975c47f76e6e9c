package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/der"
)

// ClockSkew is how far before "now" a new certificate's NotBefore is set, so that peers whose
// clocks run a little behind accept it.
const ClockSkew = 5 * time.Minute

// serialBits is the size of a random serial number.
const serialBits = 128

// CARequest describes an x509-ca secret.
type CARequest struct {
	// PublicKey is the new CA's public key.
	PublicKey crypto.PublicKey
	// Issuer signs the new CA; nil makes it self-signed (a root).
	Issuer *x509.Certificate
	// IssuerKey is Issuer's private key or, when Issuer is nil, the new CA's own private key
	// (it must match PublicKey).
	IssuerKey crypto.Signer
	// CommonName is the Subject's common name; required.
	CommonName string
	// ValidFor is how long the certificate is valid from now; NotAfter never passes the
	// issuer's NotAfter.
	ValidFor time.Duration
	// MaxPathLen limits how many intermediate CAs may follow this one in a chain: 0 (the
	// zero value) lets it sign leaf certificates only, n > 0 allows n intermediates below it,
	// and a negative value sets no limit of its own. The issuer decides: under an issuer with
	// a limit the new CA's limit is at most the issuer's minus one, and an issuer whose limit
	// is 0 cannot sign a CA at all.
	MaxPathLen int
	// Now is the issuance time; zero means time.Now().
	Now time.Time
	// Rand supplies the serial number; nil means crypto/rand.
	Rand io.Reader
}

// LeafRequest describes an x509 secret: one kind serves both servers and clients, so every
// leaf carries ExtKeyUsage serverAuth and clientAuth.
type LeafRequest struct {
	// PublicKey is the subject's public key.
	PublicKey crypto.PublicKey
	// Issuer signs the certificate; nil makes it self-signed.
	Issuer *x509.Certificate
	// IssuerKey is Issuer's private key or, when Issuer is nil, the subject's own private
	// key (it must match PublicKey).
	IssuerKey crypto.Signer
	// CommonName is the Subject's common name; it may be empty when DNSNames or IPAddresses
	// are given.
	CommonName string
	// DNSNames and IPAddresses become subjectAltName entries, exactly as given.
	DNSNames    []string
	IPAddresses []net.IP
	// ValidFor is how long the certificate is valid from now; NotAfter never passes the
	// issuer's NotAfter.
	ValidFor time.Duration
	// Now is the issuance time; zero means time.Now().
	Now time.Time
	// Rand supplies the serial number; nil means crypto/rand.
	Rand io.Reader
}

// IssueCA issues a CA certificate: BasicConstraints CA:true, KeyUsage keyCertSign and
// cRLSign, a path length constraint as CARequest.MaxPathLen describes.
func IssueCA(req CARequest) (*x509.Certificate, error) {
	if req.CommonName == "" {
		return nil, errors.New("ca: issue CA: common name is empty")
	}
	maxPathLen, err := constrainPathLen(req.Issuer, req.MaxPathLen)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: req.CommonName},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
	return signer{
		pub: req.PublicKey, issuer: req.Issuer, issuerKey: req.IssuerKey,
		validFor: req.ValidFor, now: req.Now, rand: req.Rand,
	}.sign("issue CA", tmpl)
}

// constrainPathLen applies the issuer's path length constraint to a requested one; -1 means
// no constraint.
func constrainPathLen(issuer *x509.Certificate, want int) (int, error) {
	if want < 0 {
		want = -1
	}
	if issuer == nil || !issuerHasPathLen(issuer) {
		return want, nil
	}
	if issuer.MaxPathLen == 0 {
		return 0, fmt.Errorf("ca: issue CA: issuer %q may sign leaf certificates only (path length 0)", issuer.Subject.CommonName)
	}
	limit := issuer.MaxPathLen - 1
	if want < 0 || want > limit {
		return limit, nil
	}
	return want, nil
}

func issuerHasPathLen(c *x509.Certificate) bool {
	return c.MaxPathLen > 0 || (c.MaxPathLen == 0 && c.MaxPathLenZero)
}

// IssueLeaf issues an end-entity certificate: BasicConstraints CA:false, KeyUsage
// digitalSignature (plus keyEncipherment for RSA keys), ExtKeyUsage serverAuth and clientAuth.
func IssueLeaf(req LeafRequest) (*x509.Certificate, error) {
	if req.CommonName == "" && len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 {
		return nil, errors.New("ca: issue leaf: no common name, DNS name or IP address")
	}
	if err := checkDNSNames(req.DNSNames); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: req.CommonName},
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPAddresses,
		BasicConstraintsValid: true,
		KeyUsage:              leafKeyUsage(req.PublicKey),
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return signer{
		pub: req.PublicKey, issuer: req.Issuer, issuerKey: req.IssuerKey,
		validFor: req.ValidFor, now: req.Now, rand: req.Rand,
	}.sign("issue leaf", tmpl)
}

// Reissue issues old again for a session update: the same public key, subject names, kind
// (CA or leaf) and path length constraint, with a new serial number and a validity of
// validFor from now. issuerKey is the issuer's key or, for a self-signed old, its own key.
func Reissue(old, issuer *x509.Certificate, issuerKey crypto.Signer, validFor time.Duration) (*x509.Certificate, error) {
	if old == nil {
		return nil, errors.New("ca: reissue: no certificate")
	}
	if old.IsCA {
		maxPathLen := -1
		if issuerHasPathLen(old) {
			maxPathLen = old.MaxPathLen
		}
		return IssueCA(CARequest{
			PublicKey: old.PublicKey, Issuer: issuer, IssuerKey: issuerKey,
			CommonName: old.Subject.CommonName, ValidFor: validFor, MaxPathLen: maxPathLen,
		})
	}
	return IssueLeaf(LeafRequest{
		PublicKey: old.PublicKey, Issuer: issuer, IssuerKey: issuerKey,
		CommonName: old.Subject.CommonName, DNSNames: old.DNSNames, IPAddresses: old.IPAddresses,
		ValidFor: validFor,
	})
}

func leafKeyUsage(pub crypto.PublicKey) x509.KeyUsage {
	if _, ok := pub.(*rsa.PublicKey); ok {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}

func checkDNSNames(names []string) error {
	for i, n := range names {
		switch {
		case n == "":
			return fmt.Errorf("ca: DNS name %d is empty", i)
		case len(n) > 253:
			return fmt.Errorf("ca: DNS name %d is %d characters long, at most 253 allowed", i, len(n))
		case strings.ContainsFunc(n, func(r rune) bool { return r <= ' ' || r > '~' }):
			return fmt.Errorf("ca: DNS name %q contains whitespace, control or non-ASCII characters", n)
		}
	}
	return nil
}

// signer holds what every issuance shares: keys, validity and randomness.
type signer struct {
	pub       crypto.PublicKey
	issuer    *x509.Certificate // nil: self-signed
	issuerKey crypto.Signer
	validFor  time.Duration
	now       time.Time
	rand      io.Reader
	// svid: the template is IssueSVID's, which package der encodes as crypto/x509 does,
	// signing once (see package der) when the issuer's key is one der signs with.
	svid bool
	// spki is the DER SubjectPublicKeyInfo of pub, when the caller has it (a CSR's).
	spki []byte
}

// sign completes tmpl (serial, validity, key identifiers), signs it and parses the result.
func (s signer) sign(op string, tmpl *x509.Certificate) (*x509.Certificate, error) {
	raw, err := s.signDER(op, tmpl)
	if err != nil {
		return nil, err
	}
	// Parsed back, which also checks what package der encoded.
	cert, err := x509.ParseCertificate(raw)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: parse the new certificate: %w", op, err)
	}
	return cert, nil
}

// signDER is sign without the parse: the certificate's DER.
func (s signer) signDER(op string, tmpl *x509.Certificate) ([]byte, error) {
	if _, err := keyAlgorithm(s.pub); err != nil {
		return nil, fmt.Errorf("ca: %s: subject key: %w", op, err)
	}
	if s.issuerKey == nil {
		return nil, fmt.Errorf("ca: %s: no issuer key", op)
	}
	if s.validFor <= 0 {
		return nil, fmt.Errorf("ca: %s: validity %s is not positive", op, s.validFor)
	}
	now := s.now
	if now.IsZero() {
		now = time.Now()
	}
	tmpl.NotBefore = now.Add(-ClockSkew).UTC()
	tmpl.NotAfter = now.Add(s.validFor).UTC()

	parent := tmpl
	if s.issuer == nil {
		if !publicKeysEqual(s.issuerKey.Public(), s.pub) {
			return nil, fmt.Errorf("ca: %s: self-signed, but the signing key does not match the subject's public key", op)
		}
	} else {
		if err := checkIssuer(s.issuer, s.issuerKey, now); err != nil {
			return nil, fmt.Errorf("ca: %s: %w", op, err)
		}
		parent = s.issuer
		if tmpl.NotAfter.After(s.issuer.NotAfter) {
			tmpl.NotAfter = s.issuer.NotAfter
		}
		if tmpl.NotBefore.Before(s.issuer.NotBefore) {
			tmpl.NotBefore = s.issuer.NotBefore
		}
	}

	serial, err := randomSerial(s.rand)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", op, err)
	}
	tmpl.SerialNumber = serial
	spki := s.spki
	if spki == nil {
		if spki, err = x509.MarshalPKIXPublicKey(s.pub); err != nil {
			return nil, fmt.Errorf("ca: %s: subject key identifier: %w", op, err)
		}
	}
	tmpl.SubjectKeyId = subjectKeyID(spki)
	if s.issuer != nil {
		tmpl.AuthorityKeyId = s.issuer.SubjectKeyId
	}

	r := s.rand
	if r == nil {
		r = rand.Reader
	}
	var raw []byte
	if s.svid && s.issuer != nil && der.Supported(s.issuerKey) {
		raw, err = s.createSVID(r, tmpl, spki)
	} else {
		raw, err = x509.CreateCertificate(r, tmpl, parent, s.pub, s.issuerKey)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", op, err)
	}
	return raw, nil
}

// createSVID is x509.CreateCertificate for IssueSVID's template (a RawSubject, one URI, the
// SVID's key usages and basic constraints, key identifiers and extra extensions), by package
// der: the same bytes, signed once.
// spki is the DER SubjectPublicKeyInfo of s.pub.
func (s signer) createSVID(r io.Reader, tmpl *x509.Certificate, spki []byte) ([]byte, error) {
	if len(tmpl.URIs) != 1 || len(tmpl.RawSubject) == 0 {
		return nil, fmt.Errorf("an SVID template has one URI and a raw subject, not %d and %d bytes", len(tmpl.URIs), len(tmpl.RawSubject))
	}
	exts, err := der.SVIDExtensions(tmpl.SubjectKeyId, tmpl.AuthorityKeyId, tmpl.URIs[0].String(), len(tmpl.RawSubject) == 2, tmpl.ExtraExtensions...)
	if err != nil {
		return nil, err
	}
	return der.CreateCertificate(r, &der.Certificate{
		SerialNumber: tmpl.SerialNumber, Issuer: s.issuer.RawSubject, Subject: tmpl.RawSubject,
		NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter, PublicKey: spki, Extensions: exts,
	}, s.issuerKey)
}

func checkIssuer(issuer *x509.Certificate, key crypto.Signer, now time.Time) error {
	switch {
	case !issuer.IsCA || !issuer.BasicConstraintsValid:
		return fmt.Errorf("issuer %q is not a CA", issuer.Subject.CommonName)
	case issuer.KeyUsage != 0 && issuer.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("issuer %q lacks the keyCertSign key usage", issuer.Subject.CommonName)
	case !now.Before(issuer.NotAfter):
		return fmt.Errorf("issuer %q expired at %s", issuer.Subject.CommonName, issuer.NotAfter.Format(time.RFC3339))
	case !publicKeysEqual(key.Public(), issuer.PublicKey):
		return fmt.Errorf("issuer key does not match the public key of issuer %q", issuer.Subject.CommonName)
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// randomSerial returns a positive random serial number of serialBits bits.
func randomSerial(r io.Reader) (*big.Int, error) {
	if r == nil {
		r = rand.Reader
	}
	buf := make([]byte, serialBits/8)
	for range 8 {
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(buf); n.Sign() > 0 {
			return n, nil
		}
	}
	return nil, errors.New("serial number: random source returned only zeros")
}

// subjectKeyID is RFC 7093 section 2 method 4: the leftmost 160 bits of SHA-256 over the
// DER SubjectPublicKeyInfo.
func subjectKeyID(spki []byte) []byte {
	h := sha256.Sum256(spki)
	return h[:20]
}

// MarshalCertsPEM encodes certificates as consecutive "CERTIFICATE" PEM blocks, in order
// (a chain: leaf first).
func MarshalCertsPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// CertPool returns a pool holding certs.
func CertPool(certs []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}

// PoolFromPEM parses a PEM bundle of CA certificates into a pool.
func PoolFromPEM(data []byte) (*x509.CertPool, error) {
	certs, err := ParseCertsPEM(data)
	if err != nil {
		return nil, err
	}
	return CertPool(certs), nil
}

// ParseCertsPEM decodes one or more "CERTIFICATE" PEM blocks; any other block or trailing
// non-whitespace is refused. It is attestapi.ParseCertsPEM, which workloads use to read the
// bundle they pin, with this package's error prefix.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	certs, err := attestapi.ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return certs, nil
}
