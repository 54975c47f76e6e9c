// Package proxytest provides real test peers for the sidecar: a test CA that
// issues X.509-SVIDs, an Attestor backed by it, a go-control-plane ADS server
// over mTLS, resources built per docs/xds-conventions.md, and a TCP echo
// server. Everything listens on loopback.
package proxytest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/attestmesh/attestmesh/proxy/identity"
)

// CA is an in-memory certificate authority for one trust domain.
type CA struct {
	TD   spiffeid.TrustDomain
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey

	mu     sync.Mutex
	serial int64
}

// NewCA creates a self-signed ECDSA P-256 CA for trust domain td.
func NewCA(td string) (*CA, error) {
	trust, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return nil, fmt.Errorf("proxytest: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxytest: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"attestmesh test"}, CommonName: "test CA " + td},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{trust.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("proxytest: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("proxytest: %w", err)
	}
	return &CA{TD: trust, Cert: cert, key: key, serial: 1}, nil
}

// Issue signs an X.509-SVID for id and pub, valid from a second ago for ttl.
func (ca *CA) Issue(id spiffeid.ID, pub crypto.PublicKey, ttl time.Duration) (*x509.Certificate, error) {
	return ca.IssueAt(id, pub, time.Now().Add(-time.Second), ttl)
}

// IssueAt signs an X.509-SVID valid from nb for ttl (a past nb and short ttl
// give an expired certificate).
func (ca *CA) IssueAt(id spiffeid.ID, pub crypto.PublicKey, nb time.Time, ttl time.Duration) (*x509.Certificate, error) {
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{Organization: []string{"attestmesh test"}},
		NotBefore:    nb,
		NotAfter:     nb.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("proxytest: issue %s: %w", id, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("proxytest: %w", err)
	}
	return c, nil
}

// TLSCertificate issues an SVID for id with a fresh key, as a tls.Certificate.
func (ca *CA) TLSCertificate(id spiffeid.ID, ttl time.Duration) (tls.Certificate, error) {
	return ca.TLSCertificateAt(id, time.Now().Add(-time.Second), ttl)
}

// TLSCertificateAt is TLSCertificate with an explicit NotBefore.
func (ca *CA) TLSCertificateAt(id spiffeid.ID, nb time.Time, ttl time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("proxytest: %w", err)
	}
	c, err := ca.IssueAt(id, key.Public(), nb, ttl)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}, nil
}

// Bundle returns the trust bundle: the CA certificate.
func (ca *CA) Bundle() []*x509.Certificate { return []*x509.Certificate{ca.Cert} }

// PEM returns the CA certificate in PEM.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// ID returns spiffe://<td>/<path...>.
func (ca *CA) ID(path string) spiffeid.ID {
	id, err := spiffeid.FromPath(ca.TD, path)
	if err != nil {
		panic(fmt.Sprintf("proxytest: bad path %q: %v", path, err))
	}
	return id
}

// Attestor is an identity.Attestor that issues SVIDs from a CA without
// evidence. It is safe for concurrent use.
type Attestor struct {
	CA      *CA
	ID      spiffeid.ID
	TTL     time.Duration
	XDSAddr string

	mu     sync.Mutex
	calls  int
	issued []*x509.Certificate
	fail   error
}

var _ identity.Attestor = (*Attestor)(nil)

// Attest issues an SVID for key.
func (a *Attestor) Attest(ctx context.Context, key crypto.Signer) (*identity.Identity, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("proxytest: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.fail != nil {
		return nil, a.fail
	}
	if key == nil {
		return nil, errors.New("proxytest: nil key")
	}
	c, err := a.CA.Issue(a.ID, key.Public(), a.TTL)
	if err != nil {
		return nil, err
	}
	a.issued = append(a.issued, c)
	return &identity.Identity{SVID: []*x509.Certificate{c}, Bundle: []*x509.Certificate{a.CA.Cert}, XDSAddr: a.XDSAddr}, nil
}

// Issued returns every SVID issued so far, oldest first.
func (a *Attestor) Issued() []*x509.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*x509.Certificate(nil), a.issued...)
}

// SetFailure makes Attest fail with err (nil restores success).
func (a *Attestor) SetFailure(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fail = err
}
