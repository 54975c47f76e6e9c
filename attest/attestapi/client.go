package attestapi

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/der"
)

// QuoteProvider produces quotes for a workload: the simulated platform's LAS (sim.Client), or,
// on SGX hardware, the enclave's quoting path. Implementations must be safe for concurrent use.
type QuoteProvider interface {
	Quote(ctx context.Context, r Report) ([]byte, error)
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Addr is the attestation API: host:port, several host:port separated by commas (replicas),
	// or dns:///name:port (see Target).
	Addr string
	// Bundle holds the control plane's CA certificates (the pinned trust anchor, distributed
	// out of band: a file, a Kubernetes ConfigMap).
	Bundle []*x509.Certificate
	// Quotes produces the quotes.
	Quotes QuoteProvider
}

// Client attests a workload to the control plane. Safe for concurrent use.
type Client struct {
	conn   *grpc.ClientConn
	api    attestationpb.AttestationClient
	quotes QuoteProvider

	// bundle is the trust bundle of the last response, parsed: it rarely changes, and every
	// response carries it.
	bundleMu sync.Mutex
	bundle   parsedCerts

	// csrs holds the CSR made for each key, by its SPKI. A CSR names nothing but its key, so
	// a workload that attests again with the same key (renewals, grants) sends the same bytes:
	// they cost it no signature, nor the control plane, which remembers the CSRs it issued
	// SVIDs for (see ca.ParseCSR), another check. A CSR refused as invalid or as not the key
	// the quote binds is forgotten. At most maxCSRs; it starts over when full.
	csrMu sync.Mutex
	csrs  map[string][]byte
}

// maxCSRs bounds Client.csrs: a workload has one key, a launcher and its sidecar two.
const maxCSRs = 64

// parsedCerts are certificates and the DER they were parsed from.
type parsedCerts struct {
	der   [][]byte
	certs []*x509.Certificate
}

// Evidence describes the enclave that asks to be attested. In simulation every field is the
// workload's claim; MREnclave is the launcher's measurement of the binary.
type Evidence struct {
	MREnclave [32]byte
	MRSigner  [32]byte
	ISVProdID uint16
	ISVSVN    uint16
	Debug     bool
}

// Request is one attestation: who asks (config ID and role), the key that the evidence binds
// (the CSR is made from it; it never leaves the workload) and what the enclave claims. A sidecar
// adds its proof: the grant that its app's launcher handed it (first SVID) or the SVID it holds
// (renewal).
type Request struct {
	ConfigID     string
	Role         attestationpb.Role
	Key          crypto.Signer
	Evidence     Evidence
	SidecarGrant []byte
	CurrentSVID  []*x509.Certificate
}

// Result is what a successful attestation returns.
type Result struct {
	SVID    []*x509.Certificate
	Bundle  []*x509.Certificate
	ID      spiffeid.ID
	TEE     string
	XDSAddr string
	Config  *attestationpb.ServiceConfig // ROLE_APP only
	// SidecarGrant (ROLE_APP only) is for the sidecar beside the app (see proxy/grant).
	SidecarGrant []byte
	Response     *attestationpb.AttestResponse
}

// Dial connects to the attestation API over TLS, authorizing the server as the control plane
// of the bundle's trust domain (the URI SAN spiffe://<td>/controlplane). It does not block.
func Dial(cfg ClientConfig) (*Client, error) {
	if len(cfg.Bundle) == 0 {
		return nil, errors.New("attestapi: client: no CA bundle to verify the control plane")
	}
	if cfg.Quotes == nil {
		return nil, errors.New("attestapi: client: no quote provider")
	}
	td, err := bundleTrustDomain(cfg.Bundle)
	if err != nil {
		return nil, err
	}
	serverID := ControlPlaneID(td)
	tlsCfg := tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(td, cfg.Bundle), tlsconfig.AuthorizeID(serverID))
	tlsCfg.MinVersion = tls.VersionTLS13
	target, opts, err := Target(cfg.Addr)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))...)
	if err != nil {
		return nil, fmt.Errorf("attestapi: client: dial %s: %w", cfg.Addr, err)
	}
	return &Client{conn: conn, api: attestationpb.NewAttestationClient(conn), quotes: cfg.Quotes}, nil
}

// bundleTrustDomain reads the trust domain from the CA certificate's URI SAN.
func bundleTrustDomain(bundle []*x509.Certificate) (spiffeid.TrustDomain, error) {
	for _, c := range bundle {
		for _, u := range c.URIs {
			if id, err := spiffeid.FromURI(u); err == nil {
				return id.TrustDomain(), nil
			}
		}
	}
	return spiffeid.TrustDomain{}, errors.New("attestapi: client: the CA bundle names no SPIFFE trust domain (URI SAN)")
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Attest runs the whole exchange for r.Key: nonce, CSR, quote over SHA-256(SPKI) || nonce, and
// the Attest call. The returned error carries the control plane's reason verbatim (see
// RefusalReason).
func (c *Client) Attest(ctx context.Context, r Request) (*Result, error) {
	res, err := c.attest(ctx, r)
	var re *RefusedError
	if errors.As(err, &re) && (strings.Contains(re.Status.Message(), OtherReplicaNonce) || re.Status.Code() == codes.Unavailable) {
		// The connection moved to another replica between the nonce and the evidence, or the
		// replica went away during the call: once more from a fresh nonce, on whichever
		// replica the connection reaches now (a nonce the lost call left is never used).
		res, err = c.attest(ctx, r)
	}
	return res, err
}

func (c *Client) attest(ctx context.Context, r Request) (*Result, error) {
	configID, key, ev := r.ConfigID, r.Key, r.Evidence
	nr, err := c.api.GetNonce(ctx, &attestationpb.GetNonceRequest{ConfigId: configID})
	if err != nil {
		return nil, fmt.Errorf("attestapi: get nonce: %s", describe(err))
	}
	if len(nr.GetNonce()) != NonceSize {
		return nil, fmt.Errorf("attestapi: control plane sent a %d-byte nonce, want %d", len(nr.GetNonce()), NonceSize)
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("attestapi: public key: %w", err)
	}
	csrDER, err := c.csr(key, spki)
	if err != nil {
		return nil, fmt.Errorf("attestapi: create CSR: %w", err)
	}
	var nonce [NonceSize]byte
	copy(nonce[:], nr.GetNonce())
	quote, err := c.quotes.Quote(ctx, Report{
		MREnclave: ev.MREnclave, MRSigner: ev.MRSigner, ISVProdID: ev.ISVProdID, ISVSVN: ev.ISVSVN,
		Debug: ev.Debug, ReportData: BindReportData(spki, nonce),
	})
	if err != nil {
		return nil, fmt.Errorf("attestapi: get quote: %w", err)
	}
	req := &attestationpb.AttestRequest{
		ConfigId: configID, Role: r.Role, Nonce: nr.GetNonce(), Quote: quote, Csr: csrDER, SidecarGrant: r.SidecarGrant,
	}
	for _, cert := range r.CurrentSVID {
		req.CurrentSvid = append(req.CurrentSvid, cert.Raw)
	}
	resp, err := c.api.Attest(ctx, req)
	if err != nil {
		err := &RefusedError{Status: status.Convert(err)}
		if r := RefusalReason(err); r == ReasonCSRInvalid || r == ReasonReportData {
			c.forgetCSR(spki) // the next attempt makes a new one
		}
		return nil, err
	}
	return c.decodeResult(resp)
}

// RefusedError is the control plane's answer to an Attest call that did not succeed.
type RefusedError struct{ Status *status.Status }

func (e *RefusedError) Error() string {
	return "attestapi: " + e.Status.Code().String() + ": " + e.Status.Message()
}

// RefusalReason returns the reason code of a refusal ("sidecar_grant", "mrenclave_mismatch",
// ...) from an error of Client.Attest, "" when err is no refusal.
func RefusalReason(err error) Reason {
	var re *RefusedError
	if !errors.As(err, &re) {
		return ReasonNone
	}
	msg := re.Status.Message()
	const prefix = "attestation refused ("
	i := strings.Index(msg, prefix)
	if i < 0 {
		return ReasonNone
	}
	rest := msg[i+len(prefix):]
	j := strings.IndexByte(rest, ')')
	if j < 0 {
		return ReasonNone
	}
	return Reason(rest[:j])
}

func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String() + ": " + s.Message()
	}
	return err.Error()
}

func (c *Client) decodeResult(resp *attestationpb.AttestResponse) (*Result, error) {
	parse := func(what string, ders [][]byte) ([]*x509.Certificate, error) {
		out := make([]*x509.Certificate, 0, len(ders))
		for i, der := range ders {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("attestapi: response %s[%d]: %w", what, i, err)
			}
			out = append(out, c)
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("attestapi: response has no %s", what)
		}
		return out, nil
	}
	svid, err := parse("svid_chain", resp.GetSvidChain())
	if err != nil {
		return nil, err
	}
	c.bundleMu.Lock()
	last := c.bundle
	c.bundleMu.Unlock()
	if len(last.der) == 0 || !slices.EqualFunc(last.der, resp.GetTrustBundle(), bytes.Equal) {
		// Parsed from a copy: a certificate's Raw is the bytes it was parsed from, and the
		// caller gets the response, which is its to change.
		der := make([][]byte, len(resp.GetTrustBundle()))
		for i, d := range resp.GetTrustBundle() {
			der[i] = bytes.Clone(d)
		}
		certs, err := parse("trust_bundle", der)
		if err != nil {
			return nil, err
		}
		last = parsedCerts{der: der, certs: certs}
		c.bundleMu.Lock()
		c.bundle = last
		c.bundleMu.Unlock()
	}
	bundle := slices.Clone(last.certs)
	id, err := spiffeid.FromString(resp.GetSpiffeId())
	if err != nil {
		return nil, fmt.Errorf("attestapi: response spiffe_id: %w", err)
	}
	return &Result{SVID: svid, Bundle: bundle, ID: id, TEE: resp.GetTee(), XDSAddr: resp.GetXdsAddress(), Config: resp.GetConfig(),
		SidecarGrant: resp.GetSidecarGrant(), Response: resp}, nil
}

// csr returns the CSR for key, whose SPKI is spki: the one made before for the same SPKI, or a
// new one. The bytes are shared: nobody may modify them.
func (c *Client) csr(key crypto.Signer, spki []byte) ([]byte, error) {
	c.csrMu.Lock()
	der, ok := c.csrs[string(spki)]
	c.csrMu.Unlock()
	if ok {
		return der, nil
	}
	der, err := newCSR(key)
	if err != nil {
		return nil, err
	}
	// A signer whose public key changed between the two calls (a rotating KMS key) must not
	// leave another key's CSR under this one.
	if csr, err := x509.ParseCertificateRequest(der); err != nil || !bytes.Equal(csr.RawSubjectPublicKeyInfo, spki) {
		return nil, errors.New("the CSR's key is not the signer's public key: did the signer's key change?")
	}
	c.csrMu.Lock()
	defer c.csrMu.Unlock()
	if c.csrs == nil || len(c.csrs) >= maxCSRs {
		c.csrs = make(map[string][]byte)
	}
	c.csrs[string(spki)] = der
	return der, nil
}

func (c *Client) forgetCSR(spki []byte) {
	c.csrMu.Lock()
	defer c.csrMu.Unlock()
	delete(c.csrs, string(spki))
}

// newCSR returns the CSR for key: empty, as crypto/x509 makes it, by package der where it
// signs with key (signed once, without x509's check of its own signature: see package der).
func newCSR(key crypto.Signer) ([]byte, error) {
	csr, err := der.CertificateRequest(rand.Reader, key)
	if errors.Is(err, der.ErrUnsupported) {
		return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	}
	return csr, err
}
