// Package identity holds the sidecar's workload identity: the attestation
// contract (Attestor), and Source, the atomically swapped X.509-SVID and trust
// bundles that every TLS handshake of the sidecar reads.
package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Identity is what a successful attestation yields.
type Identity struct {
	// SVID is the X.509-SVID chain: the leaf first, then intermediates. The
	// leaf's public key is the public half of the key given to Attest.
	SVID []*x509.Certificate
	// Bundle holds the trust domain's CA certificates.
	Bundle []*x509.Certificate
	// XDSAddr optionally names the control plane's xDS address (host:port);
	// when set it overrides the configured one.
	XDSAddr string
}

// Attestor proves the workload to the control plane and returns its identity
// for the public half of key. The key never leaves the process: an Attestor
// uses it only to sign a CSR (or to bind it into the evidence).
// Implementations must be safe for concurrent use: the sidecar calls Attest at
// start and again, with the same key, to renew the SVID before it expires.
type Attestor interface {
	Attest(ctx context.Context, key crypto.Signer) (*Identity, error)
}

// ErrNoSVID is returned before the first SVID has been set.
var ErrNoSVID = errors.New("identity: no SVID yet")

// svidState is one immutable X.509-SVID with its ready-made tls.Certificate.
type svidState struct {
	svid *x509svid.SVID
	cert *tls.Certificate
	// sessionPrefix keys TLS client sessions by the certificate that
	// established them, so a rotated SVID never resumes an old session.
	sessionPrefix string
}

// Source holds the sidecar's credentials. It implements x509svid.Source (the
// freshest SVID for the sidecar's own key) and x509bundle.Source (the mesh
// trust bundle pushed over SDS); AttestedBundle gives the bundle from
// attestation, which authenticates the control plane. All methods are safe
// for concurrent use; readers never block writers.
type Source struct {
	key crypto.Signer
	pub []byte // PKIX DER of key.Public()

	mu sync.Mutex // serializes writers
	id spiffeid.ID

	attested  atomic.Pointer[svidState]
	pushed    atomic.Pointer[svidState]
	current   atomic.Pointer[svidState]
	meshTD    atomic.Pointer[x509bundle.Bundle]
	attestTD  atomic.Pointer[x509bundle.Bundle]
	listeners []func()
}

// NewSource returns an empty Source for key.
func NewSource(key crypto.Signer) (*Source, error) {
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("identity: marshal public key: %w", err)
	}
	return &Source{key: key, pub: pub}, nil
}

// Key returns the workload's private key (for attestation and signing; it
// is never serialized).
func (s *Source) Key() crypto.Signer { return s.key }

// OnChange registers fn to run (synchronously, after the swap) whenever the
// current SVID or a bundle changes. Call it before the first Set.
func (s *Source) OnChange(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, fn)
}

// SetAttested installs the result of an attestation. The leaf must be an
// X.509-SVID for the Source's key; after the first call the SPIFFE ID may not
// change.
func (s *Source) SetAttested(id *Identity) error {
	if id == nil {
		return errors.New("identity: nil identity")
	}
	st, err := s.newState(id.SVID)
	if err != nil {
		return err
	}
	if len(id.Bundle) == 0 {
		return errors.New("identity: attestation returned an empty trust bundle")
	}
	s.mu.Lock()
	if !s.id.IsZero() && s.id != st.svid.ID {
		s.mu.Unlock()
		return fmt.Errorf("identity: attestation returned %s, want %s", st.svid.ID, s.id)
	}
	s.id = st.svid.ID
	s.attested.Store(st)
	s.attestTD.Store(x509bundle.FromX509Authorities(st.svid.ID.TrustDomain(), id.Bundle))
	s.pickLocked()
	fns := s.listeners
	s.mu.Unlock()
	notify(fns)
	return nil
}

// ErrForeignKey is returned by SetPushed when the pushed certificate is not
// for the sidecar's own key.
var ErrForeignKey = errors.New("identity: pushed SVID is not for this workload's key")

// SetPushed installs an SVID pushed by the control plane over SDS. A chain
// whose leaf is for another key returns ErrForeignKey and changes nothing: the
// sidecar keeps the SVID from its own attestation.
func (s *Source) SetPushed(chain []*x509.Certificate) error {
	st, err := s.newState(chain)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if !s.id.IsZero() && s.id != st.svid.ID {
		s.mu.Unlock()
		return fmt.Errorf("identity: pushed SVID is for %s, want %s", st.svid.ID, s.id)
	}
	s.pushed.Store(st)
	s.pickLocked()
	fns := s.listeners
	s.mu.Unlock()
	notify(fns)
	return nil
}

// SetTrustBundle installs the mesh trust bundle (SDS trust_bundle) used to
// verify peers on the data plane.
func (s *Source) SetTrustBundle(td spiffeid.TrustDomain, cas []*x509.Certificate) error {
	if len(cas) == 0 {
		return errors.New("identity: empty trust bundle")
	}
	s.mu.Lock()
	s.meshTD.Store(x509bundle.FromX509Authorities(td, cas))
	fns := s.listeners
	s.mu.Unlock()
	notify(fns)
	return nil
}

func notify(fns []func()) {
	for _, fn := range fns {
		fn()
	}
}

// pickLocked makes the SVID with the later expiry current.
func (s *Source) pickLocked() {
	a, p := s.attested.Load(), s.pushed.Load()
	switch {
	case p == nil:
		s.current.Store(a)
	case a == nil:
		s.current.Store(p)
	case p.svid.Certificates[0].NotAfter.After(a.svid.Certificates[0].NotAfter):
		s.current.Store(p)
	default:
		s.current.Store(a)
	}
}

func (s *Source) newState(chain []*x509.Certificate) (*svidState, error) {
	if len(chain) == 0 {
		return nil, errors.New("identity: empty certificate chain")
	}
	leaf := chain[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("identity: leaf is not an X.509-SVID: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("identity: leaf public key: %w", err)
	}
	if !bytes.Equal(pub, s.pub) {
		return nil, ErrForeignKey
	}
	cert := &tls.Certificate{PrivateKey: s.key, Leaf: leaf}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &svidState{
		svid:          &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: s.key},
		cert:          cert,
		sessionPrefix: leaf.SerialNumber.Text(16) + "|",
	}, nil
}

// GetX509SVID implements x509svid.Source: the current SVID.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	st := s.current.Load()
	if st == nil {
		return nil, ErrNoSVID
	}
	return st.svid, nil
}

// Certificate returns the current SVID as a tls.Certificate; it does not
// allocate, so it suits GetCertificate and GetClientCertificate.
func (s *Source) Certificate() (*tls.Certificate, error) {
	st := s.current.Load()
	if st == nil {
		return nil, ErrNoSVID
	}
	return st.cert, nil
}

// SessionPrefix returns a string that changes whenever the current SVID does;
// client session caches prefix their keys with it.
func (s *Source) SessionPrefix() string {
	if st := s.current.Load(); st != nil {
		return st.sessionPrefix
	}
	return ""
}

// ID returns the workload's SPIFFE ID (zero before the first attestation).
func (s *Source) ID() spiffeid.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// NotAfter returns the expiry of the current SVID.
func (s *Source) NotAfter() time.Time {
	if st := s.current.Load(); st != nil {
		return st.svid.Certificates[0].NotAfter
	}
	return time.Time{}
}

// AttestedSVID returns the SVID from the last attestation, or nil.
func (s *Source) AttestedSVID() *x509svid.SVID {
	if st := s.attested.Load(); st != nil {
		return st.svid
	}
	return nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source with the mesh
// trust bundle pushed over SDS.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return getBundle(s.meshTD.Load(), td)
}

// HasTrustBundle reports whether the mesh trust bundle has been pushed.
func (s *Source) HasTrustBundle() bool { return s.meshTD.Load() != nil }

// AttestedBundle returns the bundle from attestation as an x509bundle.Source;
// it authenticates the control plane.
func (s *Source) AttestedBundle() x509bundle.Source { return attestedBundle{s} }

type attestedBundle struct{ s *Source }

func (a attestedBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return getBundle(a.s.attestTD.Load(), td)
}

func getBundle(b *x509bundle.Bundle, td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if b == nil {
		return nil, errors.New("identity: no trust bundle yet")
	}
	if b.TrustDomain() != td {
		return nil, fmt.Errorf("identity: no trust bundle for trust domain %q", td)
	}
	return b, nil
}

// Describe summarizes a certificate without its key material, for logs and
// the admin endpoint.
type Describe struct {
	Subject  string    `json:"subject"`
	SPIFFEID string    `json:"spiffe_id,omitempty"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// DescribeCert returns the public summary of c.
func DescribeCert(c *x509.Certificate) Describe {
	d := Describe{Subject: c.Subject.String(), Serial: c.SerialNumber.Text(16), NotAfter: c.NotAfter.UTC()}
	if id, err := x509svid.IDFromCert(c); err == nil {
		d.SPIFFEID = id.String()
	}
	return d
}

// Current summarizes the current SVID leaf, or returns false before the first.
func (s *Source) Current() (Describe, bool) {
	st := s.current.Load()
	if st == nil {
		return Describe{}, false
	}
	return DescribeCert(st.svid.Certificates[0]), true
}

// TrustBundle summarizes the mesh trust bundle's CAs.
func (s *Source) TrustBundle() []Describe {
	b := s.meshTD.Load()
	if b == nil {
		return nil
	}
	out := make([]Describe, 0, len(b.X509Authorities()))
	for _, c := range b.X509Authorities() {
		out = append(out, DescribeCert(c))
	}
	return out
}
