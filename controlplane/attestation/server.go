// Package attestation is the control plane's attestation API (gRPC over TLS, default port
// 18765): a workload asks for a nonce, binds it and its CSR's public key into a quote's
// REPORTDATA, and sends quote and CSR; the control plane verifies the quote against the
// session's policy and answers with an X.509-SVID, the trust bundle and, for the launcher, the
// rendered service configuration with its injected files and a grant for the sidecar beside it.
// A sidecar gets its service's SVID only when the session accepts its measurement and it
// presents such a grant (or, to renew, the SVID it holds). Every refusal is counted by reason
// and logged with every detail; the caller learns the reason and what failed, never what the
// policy allows.
package attestation

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/ratelimit"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// Defaults.
const (
	DefaultNonceTTL = time.Minute
	DefaultSVIDTTL  = time.Hour
	// maxQuoteSize and maxCSRSize bound what a caller can make the control plane parse.
	maxQuoteSize = 64 << 10
	maxCSRSize   = 16 << 10
)

// Config configures the attestation service.
type Config struct {
	CAS       *cas.CAS
	Authority *ca.Authority
	Verifier  *Verifier
	Logger    *slog.Logger
	Metrics   *Metrics
	// MACKey keys the stateless nonces and the sidecar grants (at least 32 bytes; control
	// planes that share it accept each other's). Required.
	MACKey []byte
	// NonceTTL is how long a nonce stays valid; zero means DefaultNonceTTL.
	NonceTTL time.Duration
	// GrantTTL is how long a sidecar grant stays valid; zero means DefaultGrantTTL.
	GrantTTL time.Duration
	// ReplayCapacity bounds the used nonces (and, apart, grants) remembered until they expire;
	// zero means DefaultReplayCapacity.
	ReplayCapacity int
	// PeerRate and PeerBurst bound the Attest calls of each source address (per second;
	// defaults DefaultPeerRate and DefaultPeerBurst; a negative rate disables the limit), and,
	// ratelimit.PrefixFactor times higher, those of each /24 (IPv4) or /64 (IPv6).
	PeerRate  float64
	PeerBurst int
	// SVIDTTL is the lifetime of issued SVIDs; zero means DefaultSVIDTTL.
	SVIDTTL time.Duration
	// XDSAddress is told to sidecars: where to open ADS.
	XDSAddress string
	// SidecarMREnclaves are the sidecar measurements a simulation-mode service accepts when its
	// session names none (services[].sidecar): this control plane's own build. A hardware-mode
	// service accepts only the sidecars its session names.
	SidecarMREnclaves [][32]byte
	// OnSVID, when set, is told about every SVID issued to a sidecar (to publish it over
	// SDS). It must not block.
	OnSVID func(id spiffeid.ID, chain []*x509.Certificate)
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Default per-address rate of Attest calls.
const (
	DefaultPeerRate  = 50
	DefaultPeerBurst = 200
)

// Server implements attestationpb.AttestationServer. Safe for concurrent use.
type Server struct {
	attestationpb.UnimplementedAttestationServer
	cfg    Config
	nonces *Nonces
	grants *Grants
	peers  *ratelimit.Pair
	verify chan struct{} // bounds concurrent quote verifications
	log    *slog.Logger
}

// NewServer returns the attestation service.
func NewServer(cfg Config) (*Server, error) {
	if len(cfg.MACKey) < 32 {
		return nil, fmt.Errorf("attestation: MACKey is %d bytes, want at least 32", len(cfg.MACKey))
	}
	if cfg.NonceTTL == 0 {
		cfg.NonceTTL = DefaultNonceTTL
	}
	if cfg.GrantTTL == 0 {
		cfg.GrantTTL = DefaultGrantTTL
	}
	if cfg.SVIDTTL == 0 {
		cfg.SVIDTTL = DefaultSVIDTTL
	}
	if cfg.PeerRate == 0 {
		cfg.PeerRate = DefaultPeerRate
	}
	if cfg.PeerBurst == 0 {
		cfg.PeerBurst = DefaultPeerBurst
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nonceKey, grantKey := subKey(cfg.MACKey, "nonce"), subKey(cfg.MACKey, "grant")
	return &Server{
		cfg:    cfg,
		nonces: NewNonces(nonceKey, cfg.NonceTTL, cfg.ReplayCapacity, cfg.Now),
		grants: NewGrants(grantKey, cfg.GrantTTL, cfg.ReplayCapacity, cfg.Now),
		peers:  ratelimit.NewPair(ratelimit.Config{Rate: cfg.PeerRate, Burst: cfg.PeerBurst}),
		verify: make(chan struct{}, 4*runtime.GOMAXPROCS(0)),
		log:    log.With("subsystem", "attestation"),
	}, nil
}

// streamWorkers is the number of goroutines that serve calls (see GRPCServerOptions): one per
// stream that one connection may have open (the control plane's MaxConcurrentStreams).
const streamWorkers = 64

// GRPCServerOptions are the gRPC server options that the attestation API needs besides its
// listener's own (credentials, limits): a pool of goroutines that serve the calls, whose stacks
// have grown to what quote verification and signing need, instead of a new goroutine per call
// that grows its stack again (runtime.morestack was 5 % of the server's CPU time).
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.NumStreamWorkers(streamWorkers)}
}

// subKey derives the key of one use from the MAC key.
func subKey(key []byte, use string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("attestmesh attestation " + use))
	return m.Sum(nil)
}

// splitConfigID is attestapi.SplitConfigID with its error as a malformed-request refusal.
func splitConfigID(configID string) (sessionName, service string, err error) {
	sessionName, service, err = attestapi.SplitConfigID(configID)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", refuse(attestapi.ReasonMalformed), err)
	}
	return sessionName, service, nil
}

// GetNonce implements attestationpb.AttestationServer. It stores nothing: nonces are
// stateless (see Nonces), so no number of calls exhausts anything.
func (s *Server) GetNonce(_ context.Context, req *attestationpb.GetNonceRequest) (*attestationpb.GetNonceResponse, error) {
	if _, _, err := splitConfigID(req.GetConfigId()); err != nil {
		return nil, toStatus(err)
	}
	nonce, exp, err := s.nonces.Issue(req.GetConfigId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &attestationpb.GetNonceResponse{Nonce: nonce[:], ExpiresUnixMs: exp.UnixMilli()}, nil
}

// Attest implements attestationpb.AttestationServer.
func (s *Server) Attest(ctx context.Context, req *attestationpb.AttestRequest) (*attestationpb.AttestResponse, error) {
	start := s.cfg.Now()
	resp, tee, err := s.attest(ctx, req)
	reason := ReasonOf(err)
	role := roleLabel(req.GetRole())
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.observe(reason, tee, role, s.cfg.Now().Sub(start))
	}
	if err != nil {
		s.log.WarnContext(ctx, "attestation refused", "config_id", truncate(req.GetConfigId(), attestapi.MaxConfigIDSize), "role", role, "reason", string(reason),
			"tee", string(tee), "peer", peerHost(ctx), "error", err.Error())
		return nil, toStatus(err)
	}
	s.log.InfoContext(ctx, "attestation succeeded", "config_id", req.GetConfigId(), "role", role, "spiffe_id", resp.GetSpiffeId(), "tee", string(tee))
	return resp, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// peerHost is the source address of a call, the key of its rate limit.
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

func roleLabel(r attestationpb.Role) string {
	switch r {
	case attestationpb.Role_ROLE_APP:
		return "app"
	case attestationpb.Role_ROLE_SIDECAR:
		return "sidecar"
	default:
		return "unspecified"
	}
}

func (s *Server) attest(ctx context.Context, req *attestationpb.AttestRequest) (*attestationpb.AttestResponse, attestapi.TEE, error) {
	sidecar := req.GetRole() == attestationpb.Role_ROLE_SIDECAR
	switch {
	case req.GetRole() != attestationpb.Role_ROLE_APP && !sidecar:
		return nil, "", fmt.Errorf("%w: role must be ROLE_APP or ROLE_SIDECAR", refuse(attestapi.ReasonMalformed))
	case len(req.GetQuote()) == 0 || len(req.GetQuote()) > maxQuoteSize:
		return nil, "", fmt.Errorf("%w: quote is %d bytes, want 1..%d", refuse(attestapi.ReasonMalformed), len(req.GetQuote()), maxQuoteSize)
	case len(req.GetCsr()) == 0 || len(req.GetCsr()) > maxCSRSize:
		return nil, "", fmt.Errorf("%w: CSR is %d bytes, want 1..%d", refuse(attestapi.ReasonMalformed), len(req.GetCsr()), maxCSRSize)
	case !sidecar && (len(req.GetSidecarGrant()) > 0 || len(req.GetCurrentSvid()) > 0):
		return nil, "", fmt.Errorf("%w: sidecar_grant and current_svid are for ROLE_SIDECAR only", refuse(attestapi.ReasonMalformed))
	case sidecar && len(req.GetSidecarGrant()) > 0 && len(req.GetCurrentSvid()) > 0:
		return nil, "", fmt.Errorf("%w: give sidecar_grant or current_svid, not both", refuse(attestapi.ReasonMalformed))
	case len(req.GetCurrentSvid()) > 8:
		return nil, "", fmt.Errorf("%w: current_svid holds %d certificates, at most 8", refuse(attestapi.ReasonMalformed), len(req.GetCurrentSvid()))
	}
	sessName, svcName, err := splitConfigID(req.GetConfigId())
	if err != nil {
		return nil, "", err
	}
	if !s.peers.Allow(peerHost(ctx)) {
		return nil, "", fmt.Errorf("%w: too many attestations from this address or its network: at most %g per second (bursts of %d) "+
			"per address, %d times that per network", refuse(attestapi.ReasonRateLimited), s.cfg.PeerRate, s.cfg.PeerBurst, ratelimit.PrefixFactor)
	}
	// The nonce is checked now and consumed only once the evidence has verified: junk costs
	// the replay cache nothing, and evidence that verified can never be used twice.
	if err := s.nonces.Check(req.GetConfigId(), req.GetNonce()); err != nil {
		return nil, "", err
	}
	sess, vals, err := s.cfg.CAS.Lookup(ctx, sessName)
	if err != nil {
		var ie *cas.ImportError
		switch {
		case cas.CodeOf(err) == cas.CodeNotFound:
			return nil, "", unknownConfigID(attestapi.ReasonUnknownSession, req.GetConfigId(), "session %q does not exist", sessName)
		case errors.As(err, &ie):
			return nil, "", deny(attestapi.ReasonImport, "the session imports a secret that its exporter does not grant (any more)", "%s", ie.Error())
		}
		return nil, "", err
	}
	svc, ok := sess.Service(svcName)
	if !ok {
		return nil, "", unknownConfigID(attestapi.ReasonUnknownService, req.GetConfigId(), "session %q has no service %q (services: %s)",
			sessName, svcName, serviceNames(sess))
	}
	csr, err := ca.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", refuse(attestapi.ReasonCSRInvalid), err)
	}

	mode := sess.Security.Attestation.Mode
	id, tee, err := s.verifyQuote(ctx, req.GetQuote(), mode)
	if err != nil {
		return nil, tee, err
	}
	var nonce [attestapi.NonceSize]byte
	copy(nonce[:], req.GetNonce())
	if err := attestapi.CheckReportData(id.ReportData, csr.RawSubjectPublicKeyInfo(), nonce); err != nil {
		return nil, tee, fmt.Errorf("%w: %w", refuse(attestapi.ReasonReportData), err)
	}
	if err := CheckPlatform(id, sess.Security.Attestation); err != nil {
		return nil, tee, err
	}
	spiffeID, err := attestapi.SPIFFEID(s.cfg.Authority.TrustDomain(), req.GetConfigId())
	if err != nil {
		return nil, tee, fmt.Errorf("%w: %w", refuse(attestapi.ReasonMalformed), err)
	}
	var extra []pkix.Extension
	if sidecar {
		if err := s.checkSidecar(id.MREnclave, sess, svc); err != nil {
			return nil, tee, err
		}
		if err := s.nonces.Consume(req.GetConfigId(), req.GetNonce()); err != nil {
			return nil, tee, err
		}
		a, err := s.checkSidecarProof(req, csr, spiffeID, svc)
		if err != nil {
			return nil, tee, err
		}
		ext, err := a.extension()
		if err != nil {
			return nil, tee, err
		}
		extra = append(extra, ext)
	} else {
		if err := CheckService(id, svc); err != nil {
			return nil, tee, err
		}
		if err := s.nonces.Consume(req.GetConfigId(), req.GetNonce()); err != nil {
			return nil, tee, err
		}
	}

	chain, err := s.cfg.Authority.IssueSVIDDER(csr, spiffeID, s.cfg.SVIDTTL, tee, extra...)
	if err != nil {
		return nil, tee, fmt.Errorf("%w: %w", refuse(attestapi.ReasonCSRInvalid), err)
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.certificatesIssued.WithLabelValues(string(tee)).Inc()
	}
	resp := &attestationpb.AttestResponse{
		SpiffeId:   spiffeID.String(),
		Tee:        string(tee),
		XdsAddress: s.cfg.XDSAddress,
		SvidChain:  chain,
	}
	for _, c := range s.cfg.Authority.Bundle() {
		resp.TrustBundle = append(resp.TrustBundle, c.Raw)
	}
	if sidecar {
		if s.cfg.OnSVID != nil {
			certs := make([]*x509.Certificate, len(chain))
			for i, der := range chain {
				if certs[i], err = x509.ParseCertificate(der); err != nil {
					return nil, tee, fmt.Errorf("attestation: parse the SVID issued to %s: %w", spiffeID, err)
				}
			}
			s.cfg.OnSVID(spiffeID, certs)
		}
		return resp, tee, nil
	}
	rs, err := sess.RenderService(svcName, vals)
	if err != nil {
		return nil, tee, fmt.Errorf("attestation: render %s: %w", req.GetConfigId(), err)
	}
	resp.Config = renderedConfig(rs)
	if resp.SidecarGrant, err = s.grants.Issue(req.GetConfigId(), appOf(id)); err != nil {
		return nil, tee, err
	}
	return resp, tee, nil
}

// unknownConfigID refuses a config ID whose session or service does not exist. Callers are told
// the same either way (unknown_service), so that nobody learns which sessions exist; the log
// and the metrics keep the precise reason.
func unknownConfigID(reason attestapi.Reason, configID, format string, args ...any) error {
	return &Denial{
		Refusal: refuse(reason), PublicAs: refuse(attestapi.ReasonUnknownService),
		Public: fmt.Sprintf("config ID %q names no session and service known here", configID), Detail: fmt.Sprintf(format, args...),
	}
}

// verifyQuote verifies a quote, at most a few at a time: the rest wait their turn.
func (s *Server) verifyQuote(ctx context.Context, quote []byte, mode session.Mode) (*dcap.Identity, attestapi.TEE, error) {
	select {
	case s.verify <- struct{}{}:
		defer func() { <-s.verify }()
	case <-ctx.Done():
		return nil, "", fmt.Errorf("%w: %w", refuse(attestapi.ReasonMalformed), ctx.Err())
	}
	return s.cfg.Verifier.Verify(ctx, quote, mode)
}

// checkSidecar checks a sidecar's measurement against what the service accepts: its session's
// services[].sidecar.mrenclaves, or, in a simulation-mode session that names none, this control
// plane's own build. A hardware-mode service that names none accepts no sidecar.
func (s *Server) checkSidecar(mre []byte, sess *session.Session, svc *session.Service) error {
	got := hex.EncodeToString(mre)
	var allowed []string
	switch {
	case svc.Sidecar != nil:
		allowed = svc.Sidecar.MREnclaves
	case sess.Security.Attestation.Mode == session.ModeSimulation:
		for _, m := range s.cfg.SidecarMREnclaves {
			allowed = append(allowed, hex.EncodeToString(m[:]))
		}
	default:
		return deny(attestapi.ReasonSidecarMeasurement, fmt.Sprintf("service %q accepts no sidecar: a hardware-mode session must name its sidecars' "+
			"measurements (services[].sidecar.mrenclaves)", svc.Name),
			"service %q of hardware-mode session %q names no sidecar measurement (services[].sidecar.mrenclaves); got %s", svc.Name, sess.Name, got)
	}
	if slices.Contains(allowed, got) {
		return nil
	}
	return deny(attestapi.ReasonSidecarMeasurement, fmt.Sprintf("sidecar mrenclave %s is not accepted for service %q", got, svc.Name),
		"sidecar mrenclave mismatch: got %s, service %q allows [%s]", got, svc.Name, strings.Join(allowed, ", "))
}

// checkSidecarProof checks that a sidecar speaks for an attested app of its service, and
// returns that app: a grant that the app's launcher handed over (its first SVID), or the sidecar
// SVID it holds, for the same identity and the same key (a renewal), whose app the service must
// still accept.
func (s *Server) checkSidecarProof(req *attestationpb.AttestRequest, csr *ca.CSR, want spiffeid.ID, svc *session.Service) (app, error) {
	if grant := req.GetSidecarGrant(); len(grant) > 0 {
		return s.grants.Redeem(req.GetConfigId(), grant)
	}
	ders := req.GetCurrentSvid()
	if len(ders) == 0 {
		return app{}, fmt.Errorf("%w: a sidecar needs the grant that an attested app of %s handed it, or, to renew, the SVID it holds",
			refuse(attestapi.ReasonSidecarGrant), req.GetConfigId())
	}
	certs := make([]*x509.Certificate, 0, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return app{}, fmt.Errorf("%w: current_svid[%d]: %w", refuse(attestapi.ReasonSidecarGrant), i, err)
		}
		certs = append(certs, c)
	}
	bundle := x509bundle.FromX509Authorities(s.cfg.Authority.TrustDomain(), s.cfg.Authority.Bundle())
	got, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(s.cfg.Now()))
	if err != nil {
		return app{}, fmt.Errorf("%w: current_svid does not verify: %w", refuse(attestapi.ReasonSidecarGrant), err)
	}
	if got != want {
		return app{}, fmt.Errorf("%w: current_svid is for %s, not %s", refuse(attestapi.ReasonSidecarGrant), got, want)
	}
	if !bytes.Equal(certs[0].RawSubjectPublicKeyInfo, csr.RawSubjectPublicKeyInfo()) {
		return app{}, fmt.Errorf("%w: current_svid holds another key than the CSR: a renewal keeps the key", refuse(attestapi.ReasonSidecarGrant))
	}
	a, ok := appOfSVID(certs[0])
	if !ok {
		return app{}, fmt.Errorf("%w: current_svid is not a sidecar SVID that names its app: renew with a grant from the app's launcher",
			refuse(attestapi.ReasonSidecarGrant))
	}
	if err := CheckService(a.identity(), svc); err != nil {
		return app{}, deny(attestapi.ReasonSidecarGrant, "the app this sidecar speaks for is no longer accepted by its service: renew with a grant "+
			"from the app's launcher (which attests the app again)", "renewal refused: %s", err.Error())
	}
	return a, nil
}

func serviceNames(s *session.Session) string {
	names := make([]string, len(s.Services))
	for i, svc := range s.Services {
		names[i] = svc.Name
	}
	return strings.Join(names, ", ")
}

func renderedConfig(rs *session.RenderedService) *attestationpb.ServiceConfig {
	c := &attestationpb.ServiceConfig{Argv: rs.Argv, Env: rs.Env, Dir: rs.Pwd}
	for _, p := range slices.Sorted(maps.Keys(rs.Files)) {
		c.Files = append(c.Files, &attestationpb.File{Path: p, Content: rs.Files[p]})
	}
	if rs.FSPF.Key != "" || rs.FSPF.Path != "" {
		c.Fspf = &attestationpb.FSPF{Path: rs.FSPF.Path, Key: rs.FSPF.Key, Tag: rs.FSPF.Tag}
	}
	return c
}
