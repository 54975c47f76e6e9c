package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/attestmesh/attestmesh/attest/attestapi"
)

// Defaults of the control plane's CA.
const (
	// DefaultRootValidity is the lifetime of a new root CA.
	DefaultRootValidity = 10 * 365 * 24 * time.Hour
	// DefaultSVIDTTL is an SVID's lifetime when IssueSVID is given none.
	DefaultSVIDTTL = time.Hour
	// DefaultServerTTL is a server certificate's lifetime when IssueServerCert is given none.
	DefaultServerTTL = 24 * time.Hour
	// ControlPlanePath is the path of the control plane's own SPIFFE ID. It has one segment,
	// so it cannot collide with a workload's spiffe://<td>/<session>/<service>.
	ControlPlanePath = "/controlplane"
)

const organization = "attestmesh"

// AuthorityConfig configures NewAuthority and LoadAuthority.
type AuthorityConfig struct {
	// TrustDomain is the CA's trust domain; required by NewAuthority. LoadAuthority reads it
	// from the certificate and, when it is set here too, checks that both agree.
	TrustDomain spiffeid.TrustDomain
	// Rand supplies serial numbers; nil means crypto/rand. It must be safe for concurrent
	// use when the Authority is.
	Rand io.Reader
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// RootValidity is a new root's lifetime; zero means DefaultRootValidity.
	RootValidity time.Duration
}

// Authority is the control plane's CA for one trust domain: an ECDSA P-256 root that issues
// X.509-SVIDs directly. It is immutable and safe for concurrent use.
type Authority struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  crypto.Signer
	rand io.Reader
	now  func() time.Time
}

// NewAuthority generates a new root CA "attestmesh CA <trust domain>" with a fresh ECDSA
// P-256 key. The root carries the trust domain's SPIFFE ID as its URI SAN.
func NewAuthority(cfg AuthorityConfig) (*Authority, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: new authority: trust domain is empty")
	}
	validFor := cfg.RootValidity
	if validFor == 0 {
		validFor = DefaultRootValidity
	}
	a := newAuthority(cfg)
	a.td = cfg.TrustDomain
	key, err := GenerateKey(P256)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			Organization: []string{organization},
			CommonName:   "attestmesh CA " + cfg.TrustDomain.Name(),
		},
		URIs:                  []*url.URL{cfg.TrustDomain.ID().URL()},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		MaxPathLen:            -1,
	}
	cert, err := signer{
		pub: key.Public(), issuerKey: key, validFor: validFor, now: a.now(), rand: a.rand,
	}.sign("new authority", tmpl)
	if err != nil {
		return nil, err
	}
	a.cert, a.key = cert, key
	return a, nil
}

func newAuthority(cfg AuthorityConfig) *Authority {
	a := &Authority{rand: cfg.Rand, now: cfg.Now}
	if a.rand == nil {
		a.rand = rand.Reader
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a
}

// MarshalPEM returns the root certificate and its PKCS#8 private key as two PEM blocks. The
// output holds the CA's private key: the caller encrypts it at rest.
func (a *Authority) MarshalPEM() ([]byte, error) {
	keyPEM, err := MarshalKeyPEM(a.key)
	if err != nil {
		return nil, err
	}
	return append(MarshalCertsPEM(a.cert), keyPEM...), nil
}

// LoadAuthority restores an Authority from MarshalPEM's output. It refuses a certificate that
// is not a CA, a key that does not match it, and a trust domain other than cfg.TrustDomain
// when that is set. Only cfg's Rand and Now are used otherwise.
func LoadAuthority(data []byte, cfg AuthorityConfig) (*Authority, error) {
	var certDER, keyDER []byte
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE" && certDER == nil:
			certDER = block.Bytes
		case block.Type == pemPrivateKey && keyDER == nil:
			keyDER = block.Bytes
		default:
			return nil, fmt.Errorf("ca: load authority: unexpected PEM block %q (want one CERTIFICATE and one PRIVATE KEY)", block.Type)
		}
	}
	if certDER == nil || keyDER == nil {
		return nil, errors.New("ca: load authority: want one CERTIFICATE and one PRIVATE KEY PEM block")
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("ca: load authority: certificate: %w", err)
	}
	key, err := ParseKeyPEM(pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: keyDER}))
	if err != nil {
		return nil, fmt.Errorf("ca: load authority: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("ca: load authority: the certificate is not a CA with keyCertSign")
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("ca: load authority: the private key does not match the certificate")
	}
	if len(cert.URIs) != 1 {
		return nil, fmt.Errorf("ca: load authority: the certificate has %d URI SANs, want 1 (the trust domain)", len(cert.URIs))
	}
	id, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("ca: load authority: trust domain URI SAN: %w", err)
	}
	if !cfg.TrustDomain.IsZero() && id.TrustDomain() != cfg.TrustDomain {
		return nil, fmt.Errorf("ca: load authority: the CA is for trust domain %q, configured %q", id.TrustDomain(), cfg.TrustDomain)
	}
	a := newAuthority(cfg)
	a.td, a.cert, a.key = id.TrustDomain(), cert, key
	return a, nil
}

// TrustDomain is the CA's trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// ControlPlaneID is the control plane's own SPIFFE ID, spiffe://<td>/controlplane, carried by
// its server certificates.
func (a *Authority) ControlPlaneID() spiffeid.ID {
	id, err := spiffeid.FromPath(a.td, ControlPlanePath)
	if err != nil {
		// ControlPlanePath is a valid constant path and td is valid.
		panic(err)
	}
	return id
}

// Bundle returns the trust bundle: the root certificate.
func (a *Authority) Bundle() []*x509.Certificate { return []*x509.Certificate{a.cert} }

// BundlePEM returns the trust bundle as PEM.
func (a *Authority) BundlePEM() []byte { return MarshalCertsPEM(a.cert) }

// IssueSVID issues an X.509-SVID for id to the public key of csr, which ParseCSR checked
// (ECDSA P-256 or Ed25519, with a valid signature). Nothing else of the CSR is used. The SVID has exactly one URI SAN (id), is not a CA, has KeyUsage
// digitalSignature and ExtKeyUsage serverAuth and clientAuth, lives ttl (DefaultSVIDTTL when
// zero) but never past the root, and records tee (see attestapi.OIDTEE) and the extra
// (non-critical) extensions the caller adds. The chain returned is the
// SVID alone: the root is in the bundle.
func (a *Authority) IssueSVID(csr *CSR, id spiffeid.ID, ttl time.Duration, tee attestapi.TEE, extra ...pkix.Extension) ([]*x509.Certificate, error) {
	ders, err := a.IssueSVIDDER(csr, id, ttl, tee, extra...)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, fmt.Errorf("ca: issue SVID: parse the new certificate: %w", err)
	}
	return []*x509.Certificate{cert}, nil
}

// IssueSVIDDER is IssueSVID for a caller that sends the chain on as it is: its DER, not parsed
// back (an attestation answers with the DER; parsing it back took 4 % of the control plane's
// CPU time per attestation). Package der's tests check its encoding against crypto/x509's.
func (a *Authority) IssueSVIDDER(csr *CSR, id spiffeid.ID, ttl time.Duration, tee attestapi.TEE, extra ...pkix.Extension) ([][]byte, error) {
	if csr == nil || csr.pub == nil {
		return nil, errors.New("ca: issue SVID: no CSR (ParseCSR makes one)")
	}
	switch {
	case id.IsZero():
		return nil, errors.New("ca: issue SVID: empty SPIFFE ID")
	case id.TrustDomain() != a.td:
		return nil, fmt.Errorf("ca: issue SVID: %s is not in trust domain %q", id, a.td)
	case id.Path() == "":
		return nil, fmt.Errorf("ca: issue SVID: %s has no path (a trust domain ID cannot be an SVID)", id)
	case ttl < 0:
		return nil, fmt.Errorf("ca: issue SVID: negative ttl %s", ttl)
	}
	if ttl == 0 {
		ttl = DefaultSVIDTTL
	}
	tmpl, err := svidTemplate(id, tee, extra...)
	if err != nil {
		return nil, err
	}
	s := a.signer(csr.pub, ttl)
	s.svid = true
	s.spki = csr.spki
	raw, err := s.signDER("issue SVID", tmpl)
	if err != nil {
		return nil, err
	}
	issuedCSRs.Put(csr.sum, csr)
	return [][]byte{raw}, nil
}

// IssueServerCert issues a certificate for the control plane's own TLS listeners
// (management API, attestation API, xDS, webhook): the given DNS names and IP addresses plus
// the URI SAN ControlPlaneID, so that sidecars can authorize it as an SVID. It lives ttl
// (DefaultServerTTL when zero), never past the root. pub may be any supported key type.
func (a *Authority) IssueServerCert(pub crypto.PublicKey, dns []string, ips []net.IP, ttl time.Duration) (*x509.Certificate, error) {
	if ttl < 0 {
		return nil, fmt.Errorf("ca: issue server certificate: negative ttl %s", ttl)
	}
	if ttl == 0 {
		ttl = DefaultServerTTL
	}
	if err := checkDNSNames(dns); err != nil {
		return nil, fmt.Errorf("ca: issue server certificate: %w", err)
	}
	cn := "attestmesh control plane"
	if len(dns) > 0 {
		cn = dns[0]
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{organization}, CommonName: cn},
		DNSNames:              dns,
		IPAddresses:           ips,
		URIs:                  []*url.URL{a.ControlPlaneID().URL()},
		BasicConstraintsValid: true,
		KeyUsage:              leafKeyUsage(pub),
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return a.signer(pub, ttl).sign("issue server certificate", tmpl)
}

// svidTemplate is an SVID's template before signer.sign completes it (serial, validity, key
// identifiers): the subject for tee, id as the one URI SAN, the SVID's usages, tee's extension,
// then extra.
func svidTemplate(id spiffeid.ID, tee attestapi.TEE, extra ...pkix.Extension) (*x509.Certificate, error) {
	subject, ok := svidSubjects[tee]
	if !ok {
		return nil, fmt.Errorf("ca: issue SVID: unknown attestapi.TEE %q (want %q or %q)", tee, attestapi.TEESGX, attestapi.TEESimulation)
	}
	ext := teeExtensions[tee]
	return &x509.Certificate{
		RawSubject:            subject,
		URIs:                  []*url.URL{id.URL()},
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		ExtraExtensions:       append([]pkix.Extension{ext}, extra...),
	}, nil
}

// svidSubjects are the SVIDs' subject names, DER, by TEE: organization "attestmesh", and the
// organizational unit attestapi.SimulatedTEEUnit for a simulated one.
var svidSubjects = map[attestapi.TEE][]byte{
	attestapi.TEESGX:        marshalName(pkix.Name{Organization: []string{organization}}),
	attestapi.TEESimulation: marshalName(pkix.Name{Organization: []string{organization}, OrganizationalUnit: []string{attestapi.SimulatedTEEUnit}}),
}

// teeExtensions are the SVIDs' attestapi.TEEExtension, by TEE (nothing modifies them: they are
// encoded into each SVID).
var teeExtensions = map[attestapi.TEE]pkix.Extension{
	attestapi.TEESGX:        mustTEEExtension(attestapi.TEESGX),
	attestapi.TEESimulation: mustTEEExtension(attestapi.TEESimulation),
}

func mustTEEExtension(tee attestapi.TEE) pkix.Extension {
	ext, err := attestapi.TEEExtension(tee)
	if err != nil {
		panic(fmt.Sprintf("ca: the TEE extension of %q: %v", tee, err)) // constant UTF-8 strings
	}
	return ext
}

func marshalName(n pkix.Name) []byte {
	b, err := asn1.Marshal(n.ToRDNSequence())
	if err != nil {
		panic(fmt.Sprintf("ca: marshal the name %q: %v", n, err)) // constant names of printable strings
	}
	return b
}

func (a *Authority) signer(pub crypto.PublicKey, ttl time.Duration) signer {
	return signer{pub: pub, issuer: a.cert, issuerKey: a.key, validFor: ttl, now: a.now(), rand: a.rand}
}

// checkCSR checks what an SVID's CSR must satisfy: a supported key type and a valid
// signature. Errors carry no package prefix.
func checkCSR(csr *x509.CertificateRequest) error {
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve != elliptic.P256() {
			name := "unknown curve"
			if k != nil && k.Curve != nil {
				name = k.Curve.Params().Name
			}
			return fmt.Errorf("CSR key is ECDSA %s, only ECDSA P-256 and Ed25519 are accepted for SVIDs", name)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("CSR key is %s, only ECDSA P-256 and Ed25519 are accepted for SVIDs", keyTypeName(csr))
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("CSR signature does not verify: %w", err)
	}
	return nil
}

func keyTypeName(csr *x509.CertificateRequest) string {
	if alg, err := keyAlgorithm(csr.PublicKey); err == nil {
		return string(alg)
	}
	if csr.PublicKeyAlgorithm != x509.UnknownPublicKeyAlgorithm {
		return csr.PublicKeyAlgorithm.String()
	}
	return fmt.Sprintf("%T", csr.PublicKey)
}
