package attestapi

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
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
	// AttemptTimeout bounds each attempt of Client.Attest: GetNonce, the quote and the Attest
	// call, over one connection to one replica (DefaultAttemptTimeout when zero). An attempt
	// that runs out of it is made again, on another replica when there are several: a replica
	// that stopped answering holds a caller for AttemptTimeout, not until its own deadline.
	AttemptTimeout time.Duration
	// Attempts bounds the attempts of one Client.Attest (DefaultAttempts when zero, or one
	// per replica when a comma-separated Addr names more).
	Attempts int
	// Logger gets a warning for each attempt that failed and is made again; none when nil.
	Logger *slog.Logger
}

const (
	// DefaultAttemptTimeout is ClientConfig.AttemptTimeout's default: an attestation takes
	// milliseconds, tens of them on a loaded control plane, and a second or two while its
	// etcd elects a leader.
	DefaultAttemptTimeout = 5 * time.Second
	// DefaultAttempts is ClientConfig.Attempts' default.
	DefaultAttempts = 3
)

// Client attests a workload to the control plane. Safe for concurrent use.
type Client struct {
	conns          *conns
	addr           string
	quotes         QuoteProvider
	attempts       int
	attemptTimeout time.Duration
	log            *slog.Logger

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
	if cfg.AttemptTimeout < 0 || cfg.Attempts < 0 {
		return nil, fmt.Errorf("attestapi: client: AttemptTimeout %s and Attempts %d: want zero (the defaults) or more", cfg.AttemptTimeout, cfg.Attempts)
	}
	td, err := bundleTrustDomain(cfg.Bundle)
	if err != nil {
		return nil, err
	}
	serverID := ControlPlaneID(td)
	tlsCfg := tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(td, cfg.Bundle), tlsconfig.AuthorizeID(serverID))
	tlsCfg.MinVersion = tls.VersionTLS13
	creds := grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg))
	list, err := replicaList(cfg.Addr)
	if err != nil {
		return nil, err
	}
	conns, err := newConns(list, func(order []string) (*grpc.ClientConn, error) {
		if order == nil {
			target, opts, err := Target(cfg.Addr)
			if err != nil {
				return nil, err
			}
			return grpc.NewClient(target, append(opts, creds)...)
		}
		target, resolver := listTarget(order)
		return grpc.NewClient(target, grpc.WithDefaultServiceConfig(pickFirstInOrder), resolver, creds)
	})
	if err != nil {
		return nil, fmt.Errorf("attestapi: client: dial %s: %w", cfg.Addr, err)
	}
	c := &Client{
		conns: conns, addr: cfg.Addr, quotes: cfg.Quotes,
		attempts:       cmp.Or(cfg.Attempts, max(DefaultAttempts, len(list))),
		attemptTimeout: cmp.Or(cfg.AttemptTimeout, DefaultAttemptTimeout),
		log:            cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)).With("subsystem", "attestapi"),
	}
	return c, nil
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

// Close closes the connection; attempts in flight end.
func (c *Client) Close() error { return c.conns.close() }

// Attest runs the whole exchange for r.Key: nonce, CSR, quote over SHA-256(SPKI) || nonce, and
// the Attest call. The returned error carries the control plane's reason verbatim (see
// RefusalReason).
//
// Each attempt has its own deadline (ClientConfig.AttemptTimeout). An attempt that runs out of
// it, or whose replica is unavailable or went away during the call, or that met a nonce of
// another replica, is made again from a fresh nonce, up to ClientConfig.Attempts: after a
// timeout on a new connection that tries the other replicas first (see conns). A refusal is
// final, and so is the end of ctx, whose error the returned one wraps.
func (c *Client) Attest(ctx context.Context, r Request) (*Result, error) {
	for n := 1; ; n++ {
		res, f := c.attempt(ctx, r)
		if f == nil {
			return res, nil
		}
		where := cmp.Or(f.replica, c.addr)
		if f.callerDone != nil {
			return nil, fmt.Errorf("attestapi: attempt %d of %d to %s: %w", n, c.attempts, where, f.callerDone)
		}
		err := f.err
		switch {
		case f.timedOut:
			if f.replica == "" {
				where += " (no connection to a replica completed)"
			}
			err = fmt.Errorf("attestapi: attempt %d of %d to %s timed out after %s in %s: %w", n, c.attempts, where, c.attemptTimeout, f.step, context.DeadlineExceeded)
		case f.retry:
			err = &attemptError{prefix: fmt.Sprintf("attestapi: attempt %d of %d to %s: ", n, c.attempts, where), err: err}
		default:
			return nil, err
		}
		if n >= c.attempts {
			return nil, err
		}
		c.log.Warn("attestation attempt failed; retrying", "error", err.Error())
	}
}

// attemptError is the error of an attempt that was to be made again, with its number.
type attemptError struct {
	prefix string
	err    error
}

func (e *attemptError) Error() string {
	return e.prefix + strings.TrimPrefix(e.err.Error(), "attestapi: ")
}
func (e *attemptError) Unwrap() error { return e.err }

// failure is an attempt that did not succeed.
type failure struct {
	err        error
	step       string     // GetNonce, quote, Attest; "" for what takes no context
	code       codes.Code // of a failed call
	replica    string     // the address the attempt reached, "" when none
	callerDone error      // the caller's context ended it: the caller's error
	timedOut   bool       // the attempt's own deadline ended it
	retry      bool       // another attempt may succeed
}

func (c *Client) attempt(ctx context.Context, r Request) (*Result, *failure) {
	cn, err := c.conns.get()
	if err != nil {
		return nil, &failure{err: err}
	}
	defer c.conns.put(cn)
	actx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
	defer cancel()
	var p peer.Peer
	res, f := c.exchange(actx, cn.api, r, grpc.Peer(&p))
	var replica string
	if p.Addr != nil {
		replica = p.Addr.String()
	}
	if f == nil {
		c.conns.answered(ctx, replica)
		return res, nil
	}
	f.replica = replica
	// The server runs out of the deadline it was sent a moment before the client does: a
	// call's DeadlineExceeded is the end of whichever deadline binds, the attempt's or the
	// caller's.
	deadline := f.step != "" && (actx.Err() != nil || f.code == codes.DeadlineExceeded)
	callerDeadline, ok := ctx.Deadline()
	attemptDeadline, _ := actx.Deadline()
	switch {
	case ctx.Err() != nil:
		f.callerDone = ctx.Err()
	case deadline && ok && !callerDeadline.After(attemptDeadline):
		f.callerDone = context.DeadlineExceeded
	case deadline:
		f.timedOut, f.retry = true, true
		c.conns.timedOut(ctx, cn, replica)
	}
	return nil, f
}

func (c *Client) exchange(ctx context.Context, api attestationpb.AttestationClient, r Request, peer grpc.CallOption) (*Result, *failure) {
	configID, key, ev := r.ConfigID, r.Key, r.Evidence
	nr, err := api.GetNonce(ctx, &attestationpb.GetNonceRequest{ConfigId: configID}, peer)
	if err != nil {
		code := status.Code(err)
		return nil, &failure{err: fmt.Errorf("attestapi: get nonce: %s", describe(err)), step: "GetNonce", code: code, retry: code == codes.Unavailable}
	}
	if len(nr.GetNonce()) != NonceSize {
		return nil, &failure{err: fmt.Errorf("attestapi: control plane sent a %d-byte nonce, want %d", len(nr.GetNonce()), NonceSize)}
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, &failure{err: fmt.Errorf("attestapi: public key: %w", err)}
	}
	csrDER, err := c.csr(key, spki)
	if err != nil {
		return nil, &failure{err: fmt.Errorf("attestapi: create CSR: %w", err)}
	}
	var nonce [NonceSize]byte
	copy(nonce[:], nr.GetNonce())
	quote, err := c.quotes.Quote(ctx, Report{
		MREnclave: ev.MREnclave, MRSigner: ev.MRSigner, ISVProdID: ev.ISVProdID, ISVSVN: ev.ISVSVN,
		Debug: ev.Debug, ReportData: BindReportData(spki, nonce),
	})
	if err != nil {
		return nil, &failure{err: fmt.Errorf("attestapi: get quote: %w", err), step: "quote"}
	}
	req := &attestationpb.AttestRequest{
		ConfigId: configID, Role: r.Role, Nonce: nr.GetNonce(), Quote: quote, Csr: csrDER, SidecarGrant: r.SidecarGrant,
	}
	for _, cert := range r.CurrentSVID {
		req.CurrentSvid = append(req.CurrentSvid, cert.Raw)
	}
	resp, err := api.Attest(ctx, req, peer)
	if err != nil {
		re := &RefusedError{Status: status.Convert(err)}
		if r := RefusalReason(re); r == ReasonCSRInvalid || r == ReasonReportData {
			c.forgetCSR(spki) // the next attempt makes a new one
		}
		// The replica went away during the call, or the connection moved to another replica
		// between the nonce and the evidence: once more from a fresh nonce (a nonce the lost
		// call left is never used).
		retry := re.Status.Code() == codes.Unavailable || strings.Contains(re.Status.Message(), OtherReplicaNonce)
		return nil, &failure{err: re, step: "Attest", code: re.Status.Code(), retry: retry}
	}
	res, err := c.decodeResult(resp)
	if err != nil {
		return nil, &failure{err: err}
	}
	return res, nil
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
	if got, ok := csrSPKI(der); !ok || !bytes.Equal(got, spki) {
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

// csrSPKI returns the DER SubjectPublicKeyInfo that the DER CSR der names: as
// x509.ParseCertificateRequest's RawSubjectPublicKeyInfo, without parsing the rest (the CSR is
// this client's own; the control plane checks all of it).
func csrSPKI(der []byte) ([]byte, bool) {
	in := cryptobyte.String(der)
	var csr, info, spki cryptobyte.String
	if !in.ReadASN1(&csr, cbasn1.SEQUENCE) || !in.Empty() ||
		!csr.ReadASN1(&info, cbasn1.SEQUENCE) ||
		!info.SkipASN1(cbasn1.INTEGER) || // version
		!info.SkipASN1(cbasn1.SEQUENCE) || // subject
		!info.ReadASN1Element(&spki, cbasn1.SEQUENCE) {
		return nil, false
	}
	return spki, true
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
