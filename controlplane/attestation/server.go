// Package attestation is the control plane's attestation API (gRPC over TLS, default port
// 18765): a workload asks for a nonce, binds it and its CSR's public key into a quote's
// REPORTDATA, and sends quote and CSR; the control plane verifies the quote against the
// session's policy and answers with an X.509-SVID, the trust bundle and, for the launcher, the
// rendered service configuration with its injected files. Every refusal says precisely why, to
// the caller and in the log, and is counted by reason.
package attestation

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/attestation/attestationpb"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// Defaults.
const (
	DefaultNonceTTL = time.Minute
	DefaultSVIDTTL  = time.Hour
	// maxQuoteSize and maxCSRSize bound what a caller can make the control plane parse.
	maxQuoteSize = 64 << 10
	maxCSRSize   = 16 << 10
	// maxConfigIDSize bounds a config ID (kept with every outstanding nonce): a session name
	// of at most 200 bytes, '/', a service name of at most 200 bytes.
	maxConfigIDSize = 401
)

// Config configures the attestation service.
type Config struct {
	CAS       *cas.CAS
	Authority *ca.Authority
	Verifier  *Verifier
	Logger    *slog.Logger
	Metrics   *Metrics
	// NonceTTL is how long a nonce stays valid; zero means DefaultNonceTTL.
	NonceTTL time.Duration
	// SVIDTTL is the lifetime of issued SVIDs; zero means DefaultSVIDTTL.
	SVIDTTL time.Duration
	// XDSAddress is told to sidecars: where to open ADS.
	XDSAddress string
	// SidecarMREnclaves are the measurements accepted for ROLE_SIDECAR (the attestmesh binary
	// that runs as sidecar). Empty refuses every sidecar.
	SidecarMREnclaves [][32]byte
	// OnSVID, when set, is told about every SVID issued to a sidecar (to publish it over
	// SDS). It must not block.
	OnSVID func(id spiffeid.ID, chain []*x509.Certificate)
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Server implements attestationpb.AttestationServer. Safe for concurrent use.
type Server struct {
	attestationpb.UnimplementedAttestationServer
	cfg    Config
	nonces *Nonces
	log    *slog.Logger
}

// NewServer returns the attestation service.
func NewServer(cfg Config) *Server {
	if cfg.NonceTTL == 0 {
		cfg.NonceTTL = DefaultNonceTTL
	}
	if cfg.SVIDTTL == 0 {
		cfg.SVIDTTL = DefaultSVIDTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, nonces: NewNonces(cfg.NonceTTL, cfg.Now), log: log.With("subsystem", "attestation")}
}

// SplitConfigID splits "session/service" at its last '/'; a session name may itself hold '/'.
func SplitConfigID(configID string) (sessionName, service string, err error) {
	if len(configID) > maxConfigIDSize {
		return "", "", fmt.Errorf("%w: config ID is %d bytes, at most %d", refuse(ReasonMalformed), len(configID), maxConfigIDSize)
	}
	i := strings.LastIndexByte(configID, '/')
	if i <= 0 || i == len(configID)-1 {
		return "", "", fmt.Errorf("%w: config ID %q: want SESSION/SERVICE", refuse(ReasonMalformed), configID)
	}
	return configID[:i], configID[i+1:], nil
}

// GetNonce implements attestationpb.AttestationServer.
func (s *Server) GetNonce(_ context.Context, req *attestationpb.GetNonceRequest) (*attestationpb.GetNonceResponse, error) {
	if _, _, err := SplitConfigID(req.GetConfigId()); err != nil {
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
		s.log.WarnContext(ctx, "attestation refused", "config_id", req.GetConfigId(), "role", role, "reason", string(reason), "tee", string(tee), "error", err.Error())
		return nil, toStatus(err)
	}
	s.log.InfoContext(ctx, "attestation succeeded", "config_id", req.GetConfigId(), "role", role, "spiffe_id", resp.GetSpiffeId(), "tee", string(tee))
	return resp, nil
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

func (s *Server) attest(ctx context.Context, req *attestationpb.AttestRequest) (*attestationpb.AttestResponse, ca.TEE, error) {
	switch {
	case req.GetRole() != attestationpb.Role_ROLE_APP && req.GetRole() != attestationpb.Role_ROLE_SIDECAR:
		return nil, "", fmt.Errorf("%w: role must be ROLE_APP or ROLE_SIDECAR", refuse(ReasonMalformed))
	case len(req.GetQuote()) == 0 || len(req.GetQuote()) > maxQuoteSize:
		return nil, "", fmt.Errorf("%w: quote is %d bytes, want 1..%d", refuse(ReasonMalformed), len(req.GetQuote()), maxQuoteSize)
	case len(req.GetCsr()) == 0 || len(req.GetCsr()) > maxCSRSize:
		return nil, "", fmt.Errorf("%w: CSR is %d bytes, want 1..%d", refuse(ReasonMalformed), len(req.GetCsr()), maxCSRSize)
	}
	sessName, svcName, err := SplitConfigID(req.GetConfigId())
	if err != nil {
		return nil, "", err
	}
	// The nonce is consumed first: whatever happens next, this evidence cannot be replayed.
	if err := s.nonces.Consume(req.GetConfigId(), req.GetNonce()); err != nil {
		return nil, "", err
	}
	sess, vals, err := s.cfg.CAS.Lookup(ctx, sessName)
	if err != nil {
		if cas.CodeOf(err) == cas.CodeNotFound {
			return nil, "", fmt.Errorf("%w: %w", refuse(ReasonUnknownSession), err)
		}
		return nil, "", err
	}
	svc, ok := sess.Service(svcName)
	if !ok {
		return nil, "", fmt.Errorf("%w: session %q has no service %q (services: %s)", refuse(ReasonUnknownService), sessName, svcName, serviceNames(sess))
	}
	csr, err := ca.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", refuse(ReasonCSRInvalid), err)
	}

	mode := sess.Security.Attestation.Mode
	id, tee, err := s.cfg.Verifier.Verify(ctx, req.GetQuote(), mode)
	if err != nil {
		return nil, tee, err
	}
	var nonce [NonceSize]byte
	copy(nonce[:], req.GetNonce())
	if err := sim.CheckReportData(id.ReportData, csr.RawSubjectPublicKeyInfo, nonce); err != nil {
		return nil, tee, fmt.Errorf("%w: %w", refuse(ReasonReportData), err)
	}
	if err := CheckPlatform(id, sess.Security.Attestation); err != nil {
		return nil, tee, err
	}
	if req.GetRole() == attestationpb.Role_ROLE_SIDECAR {
		if err := s.checkSidecar(id.MREnclave); err != nil {
			return nil, tee, err
		}
	} else if err := CheckService(id, svc); err != nil {
		return nil, tee, err
	}

	spiffeID, err := spiffeid.FromSegments(s.cfg.Authority.TrustDomain(), append(strings.Split(sessName, "/"), svcName)...)
	if err != nil {
		return nil, tee, fmt.Errorf("%w: config ID %q is not a valid SPIFFE path: %w", refuse(ReasonMalformed), req.GetConfigId(), err)
	}
	chain, err := s.cfg.Authority.IssueSVID(csr, spiffeID, s.cfg.SVIDTTL, tee)
	if err != nil {
		return nil, tee, fmt.Errorf("%w: %w", refuse(ReasonCSRInvalid), err)
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.certificatesIssued.WithLabelValues(string(tee)).Inc()
	}
	resp := &attestationpb.AttestResponse{
		SpiffeId:   spiffeID.String(),
		Tee:        string(tee),
		XdsAddress: s.cfg.XDSAddress,
	}
	for _, c := range chain {
		resp.SvidChain = append(resp.SvidChain, c.Raw)
	}
	for _, c := range s.cfg.Authority.Bundle() {
		resp.TrustBundle = append(resp.TrustBundle, c.Raw)
	}
	if req.GetRole() == attestationpb.Role_ROLE_SIDECAR {
		if s.cfg.OnSVID != nil {
			s.cfg.OnSVID(spiffeID, chain)
		}
		return resp, tee, nil
	}
	rs, err := sess.RenderService(svcName, vals)
	if err != nil {
		return nil, tee, fmt.Errorf("attestation: render %s: %w", req.GetConfigId(), err)
	}
	resp.Config = renderedConfig(rs)
	return resp, tee, nil
}

func (s *Server) checkSidecar(mre []byte) error {
	for _, m := range s.cfg.SidecarMREnclaves {
		if slices.Equal(m[:], mre) {
			return nil
		}
	}
	allowed := make([]string, len(s.cfg.SidecarMREnclaves))
	for i, m := range s.cfg.SidecarMREnclaves {
		allowed[i] = hex.EncodeToString(m[:])
	}
	return fmt.Errorf("%w: sidecar mrenclave mismatch: got %s, control plane allows [%s]", refuse(ReasonSidecarMeasurement), hex.EncodeToString(mre), strings.Join(allowed, ", "))
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
