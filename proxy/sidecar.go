// Package proxy is the attestmesh sidecar: it generates its key, attests,
// follows the control plane over ADS and runs the mTLS tunnels (see
// proxy/ads, proxy/listener, proxy/admin). Run joins the parts; the CLI verb
// `attestmesh proxy` fills a Config.
package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/proxy/admin"
	"github.com/attestmesh/attestmesh/proxy/ads"
	"github.com/attestmesh/attestmesh/proxy/identity"
	"github.com/attestmesh/attestmesh/proxy/listener"
	"github.com/attestmesh/attestmesh/proxy/metrics"
	"github.com/attestmesh/attestmesh/proxy/resource"
)

// Attestor and Identity are the attestation contract (see proxy/identity).
type (
	Attestor = identity.Attestor
	Identity = identity.Identity
)

// Defaults.
const (
	DefaultTrustDomain  = "attestmesh.local"
	DefaultXDSAddr      = "127.0.0.1:18000"
	DefaultDrainTimeout = 20 * time.Second
	// ControlPlanePath is the path of the control plane's SPIFFE ID.
	ControlPlanePath = "/controlplane"
)

// Config configures the sidecar.
type Config struct {
	// ConfigID is SESSION/SERVICE; the session may hold '/'.
	ConfigID string
	// TrustDomain (DefaultTrustDomain if empty).
	TrustDomain string
	// XDSAddr is the control plane's xDS address; an address returned by
	// attestation overrides it (DefaultXDSAddr if both are empty).
	XDSAddr string
	// XDSServerID is the SPIFFE ID the xDS server must present
	// (spiffe://<trust domain>/controlplane if empty).
	XDSServerID string
	// XDSAnyMember accepts any member of the trust domain as xDS server
	// instead of XDSServerID.
	XDSAnyMember bool
	// AdminAddr (admin.DefaultAddr if empty).
	AdminAddr string
	// Pprof serves Go's profiles on the admin endpoint under /debug/pprof/, to clients in the
	// sidecar's own network namespace only.
	Pprof bool
	// NoMultiplex gives every app connection its own mTLS connection to the upstream sidecar,
	// instead of a stream over a shared one (listener.MuxProto), and refuses streams inbound.
	NoMultiplex bool
	Logger      *slog.Logger
	Attestor    Attestor
	// DrainTimeout bounds the graceful drain on shutdown (DefaultDrainTimeout).
	DrainTimeout time.Duration
	// Metrics receives the sidecar's metrics (a new set if nil).
	Metrics *metrics.Metrics
	// XDSInitialBackoff and XDSMaxBackoff bound xDS reconnects and
	// attestation retries (defaults 500ms and 30s).
	XDSInitialBackoff time.Duration
	XDSMaxBackoff     time.Duration
	// EnvoyCredentialsDir is where EnvoyBootstrap expects a real Envoy's
	// SVID, key and bundle (/run/attestmesh if empty).
	EnvoyCredentialsDir string
	// InboundIP, when set, is the workload's own address (its pod IP): inbound
	// listeners sent on the wildcard address bind to it instead, so that they
	// do not clash with the app's ports on 127.0.0.1, and replicas that share
	// one configuration each serve on their own address.
	InboundIP netip.Addr
}

// MuxProto is the ALPN protocol of the multiplexed tunnels between sidecars (see Config.NoMultiplex).
const MuxProto = listener.MuxProto

// SPIFFEID returns the workload's SPIFFE ID for cfg.
func (cfg *Config) SPIFFEID() (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.trustDomain())
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("proxy: trust domain %q: %w", cfg.TrustDomain, err)
	}
	id, err := attestapi.SPIFFEID(td, cfg.ConfigID)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("proxy: %w", err)
	}
	return id, nil
}

func (cfg *Config) trustDomain() string {
	if cfg.TrustDomain == "" {
		return DefaultTrustDomain
	}
	return cfg.TrustDomain
}

func (cfg *Config) xdsAuthorizer(td spiffeid.TrustDomain) (tlsconfig.Authorizer, string, error) {
	if cfg.XDSAnyMember {
		return tlsconfig.AuthorizeMemberOf(td), "any member of " + td.IDString(), nil
	}
	s := cfg.XDSServerID
	if s == "" {
		s = td.IDString() + ControlPlanePath
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return nil, "", fmt.Errorf("proxy: xDS server ID %q: %w", s, err)
	}
	return tlsconfig.AuthorizeID(id), id.String(), nil
}

// Sidecar is one running sidecar.
type Sidecar struct {
	cfg     Config
	id      spiffeid.ID
	log     *slog.Logger
	metrics *metrics.Metrics
	creds   *identity.Source
	mgr     *listener.Manager
	// adsc is set once attested; attested says so.
	adsc     atomic.Pointer[ads.Client]
	attested atomic.Bool
}

// New validates cfg, generates the sidecar's key (ECDSA P-256, in memory
// only) and prepares the parts. Nothing listens until Run.
func New(cfg Config) (*Sidecar, error) {
	if cfg.Logger == nil {
		return nil, errors.New("proxy: Logger is required")
	}
	if cfg.Attestor == nil {
		return nil, errors.New("proxy: Attestor is required")
	}
	id, err := cfg.SPIFFEID()
	if err != nil {
		return nil, err
	}
	if _, _, err := cfg.xdsAuthorizer(id.TrustDomain()); err != nil {
		return nil, err
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.XDSInitialBackoff <= 0 {
		cfg.XDSInitialBackoff = 500 * time.Millisecond
	}
	if cfg.XDSMaxBackoff < cfg.XDSInitialBackoff {
		cfg.XDSMaxBackoff = max(30*time.Second, cfg.XDSInitialBackoff)
	}
	m := cfg.Metrics
	if m == nil {
		m = metrics.New()
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxy: generate key: %w", err)
	}
	creds, err := identity.NewSource(key)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	log := cfg.Logger.With("spiffe_id", id.String())
	creds.OnChange(func() {
		svid, err := creds.GetX509SVID()
		if err != nil || len(svid.Certificates) == 0 {
			return
		}
		m.SVIDExpiry.Reset()
		m.SVIDExpiry.WithLabelValues(teeLabel(svid.Certificates[0])).Set(float64(svid.Certificates[0].NotAfter.Unix()))
	})
	mgr, err := listener.New(listener.Config{Creds: creds, Metrics: m, Logger: log, Multiplex: !cfg.NoMultiplex})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return &Sidecar{cfg: cfg, id: id, log: log, metrics: m, creds: creds, mgr: mgr}, nil
}

// Run creates a Sidecar from cfg and runs it until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// Run serves the admin endpoint, attests (waiting for the app's grant), then follows ADS
// and renews the SVID until ctx is done; then it drains the listeners within DrainTimeout.
// A canceled ctx is a clean stop (nil).
func (s *Sidecar) Run(ctx context.Context) error {
	adm, err := admin.New(admin.Config{
		Addr: s.cfg.AdminAddr, Ready: s.ready, ConfigDump: s.ConfigDump, Metrics: s.metrics, Logger: s.log,
		Pprof: s.cfg.Pprof,
	})
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		s.log.Info("shutting down: draining", "deadline", s.cfg.DrainTimeout)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), s.cfg.DrainTimeout)
		defer cancel()
		return s.mgr.Shutdown(dctx)
	})
	g.Go(func() error { return s.follow(gctx) })
	err = g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = nil
	}
	s.log.Info("sidecar stopped", "error", err)
	return err
}

// follow attests, then follows ADS and renews the SVID until ctx is done.
func (s *Sidecar) follow(ctx context.Context) error {
	ident, err := s.attest(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.attested.Store(true)
	addr := s.cfg.XDSAddr
	if ident.XDSAddr != "" {
		addr = ident.XDSAddr
	}
	if addr == "" {
		addr = DefaultXDSAddr
	}
	authorize, serverDesc, err := s.cfg.xdsAuthorizer(s.id.TrustDomain())
	if err != nil {
		return err
	}
	s.log.Info("following the control plane", "xds_server", addr, "xds_server_id", serverDesc)
	adsc, err := ads.New(ads.Config{
		Addr:    addr,
		Node:    s.node(),
		TLS:     ads.ClientTLS(s.creds, s.creds.AttestedBundle(), authorize),
		Handler: &handler{s: s},
		Subscriptions: []ads.Subscription{
			{TypeURL: resource.ClusterType},
			{TypeURL: resource.ListenerType},
			{TypeURL: resource.SecretType, Names: []string{resource.SecretSVID, resource.SecretTrustBundle}},
		},
		Logger:         s.log,
		Metrics:        s.metrics,
		InitialBackoff: s.cfg.XDSInitialBackoff,
		MaxBackoff:     s.cfg.XDSMaxBackoff,
	})
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	s.adsc.Store(adsc)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adsc.Run(gctx) })
	g.Go(func() error { return s.renew(gctx) })
	return g.Wait()
}

// ready is the admin endpoint's readiness: attested, then the listeners' own.
func (s *Sidecar) ready() (bool, string) {
	if !s.attested.Load() {
		return false, "not attested yet: waiting for the app's launcher to hand over its grant, then for the control plane"
	}
	return s.mgr.Ready()
}

func (s *Sidecar) node() *ads.Node {
	return &ads.Node{
		ID:            s.id.String(),
		Cluster:       s.cfg.ConfigID,
		UserAgentName: "attestmesh-sidecar",
		Metadata:      map[string]string{"config_id": s.cfg.ConfigID},
	}
}

// attest attests until it succeeds or ctx is done, with backoff.
func (s *Sidecar) attest(ctx context.Context) (*Identity, error) {
	delay := s.cfg.XDSInitialBackoff
	for {
		ident, err := s.attestOnce(ctx)
		if err == nil {
			return ident, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("proxy: attest: %w", ctx.Err())
		}
		s.log.Warn("attestation failed; retrying", "error", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("proxy: attest: %w", ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, s.cfg.XDSMaxBackoff)
	}
}

func (s *Sidecar) attestOnce(ctx context.Context) (*Identity, error) {
	ident, err := s.cfg.Attestor.Attest(ctx, s.creds.Key())
	if err != nil {
		return nil, fmt.Errorf("proxy: attest: %w", err)
	}
	if len(ident.SVID) == 0 {
		return nil, errors.New("proxy: attest: no SVID returned")
	}
	got, err := x509svid.IDFromCert(ident.SVID[0])
	if err != nil {
		return nil, fmt.Errorf("proxy: attest: %w", err)
	}
	if got != s.id {
		return nil, fmt.Errorf("proxy: attest: got SVID for %s, want %s (from config ID %q)", got, s.id, s.cfg.ConfigID)
	}
	if err := s.creds.SetAttested(ident); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	leaf := identity.DescribeCert(ident.SVID[0])
	s.log.Info("attested: SVID installed", "serial", leaf.Serial, "not_after", leaf.NotAfter, "tee", teeLabel(ident.SVID[0]))
	return ident, nil
}

// renewAt returns when an SVID received at got and valid until na should be
// renewed: at half of its validity (measured from receipt, so a backdated
// NotBefore cannot cause a renewal loop), no later than a minute before
// expiry when the lifetime allows it, and not sooner than minRenewWait.
func renewAt(got, na time.Time) time.Time {
	left := na.Sub(got)
	at := got.Add(left / 2)
	if left > 2*time.Minute {
		at = minTime(at, na.Add(-time.Minute))
	}
	if earliest := got.Add(minRenewWait); at.Before(earliest) {
		at = earliest
	}
	return at
}

// minRenewWait keeps an SVID that is nearly expired on arrival from
// causing a busy renewal loop.
const minRenewWait = 200 * time.Millisecond

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// renew re-attests with the same key before the SVID expires. New
// handshakes use the new SVID; open connections are untouched.
func (s *Sidecar) renew(ctx context.Context) error {
	for {
		leaf := s.creds.AttestedSVID().Certificates[0]
		wait := time.Until(renewAt(time.Now(), leaf.NotAfter))
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay := s.cfg.XDSInitialBackoff
		for {
			_, err := s.attestOnce(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			left := time.Until(leaf.NotAfter)
			s.log.Warn("SVID renewal failed; retrying", "error", err, "expires_in", left.Round(time.Second))
			// Retry well before expiry, but not in a busy loop.
			retry := min(delay, max(left/4, 100*time.Millisecond))
			rt := time.NewTimer(retry)
			select {
			case <-ctx.Done():
				rt.Stop()
				return nil
			case <-rt.C:
			}
			delay = min(2*delay, s.cfg.XDSMaxBackoff)
		}
	}
}

// BindInbound returns ls with every inbound listener on the wildcard address
// bound to ip instead (ls itself when ip is not set). Outbound listeners are
// on loopback and stay there.
func BindInbound(ls []*resource.Listener, ip netip.Addr) []*resource.Listener {
	if !ip.IsValid() {
		return ls
	}
	out := make([]*resource.Listener, len(ls))
	for i, l := range ls {
		out[i] = l
		ap, err := netip.ParseAddrPort(l.Address)
		if l.Direction != resource.Inbound || err != nil || !ap.Addr().IsUnspecified() {
			continue
		}
		c := *l
		c.Address = netip.AddrPortFrom(ip, ap.Port()).String()
		out[i] = &c
	}
	return out
}

// handler applies ADS responses to the listener manager and credentials.
type handler struct{ s *Sidecar }

func (h *handler) Apply(typeURL string, res []*anypb.Any) error {
	s := h.s
	switch typeURL {
	case resource.ListenerType:
		ls, err := resource.ParseListeners(res)
		if err != nil {
			return err
		}
		return s.mgr.UpdateListeners(BindInbound(ls, s.cfg.InboundIP))
	case resource.ClusterType:
		cs, err := resource.ParseClusters(res)
		if err != nil {
			return err
		}
		return s.mgr.UpdateClusters(cs)
	case resource.SecretType:
		return h.applySecrets(res)
	default:
		return fmt.Errorf("proxy: unsupported type %s", typeURL)
	}
}

func (h *handler) applySecrets(res []*anypb.Any) error {
	s := h.s
	ss, err := resource.ParseSecrets(res)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(ss))
	for _, sec := range ss {
		if sec.Name != resource.SecretSVID {
			continue
		}
		got, err := x509svid.IDFromCert(sec.Chain[0])
		if err != nil {
			return fmt.Errorf("proxy: secret %q: %w", sec.Name, err)
		}
		if got != s.id {
			return fmt.Errorf("proxy: secret %q: SVID for %s, want %s", sec.Name, got, s.id)
		}
	}
	for _, sec := range ss {
		switch sec.Name {
		case resource.SecretSVID:
			err := s.creds.SetPushed(sec.Chain)
			switch {
			case errors.Is(err, identity.ErrForeignKey):
				s.log.Info("pushed SVID is for another key: keeping the SVID from this sidecar's attestation",
					"serial", identity.DescribeCert(sec.Chain[0]).Serial)
			case err != nil:
				return fmt.Errorf("proxy: secret %q: %w", sec.Name, err)
			}
		case resource.SecretTrustBundle:
			if err := s.creds.SetTrustBundle(s.id.TrustDomain(), sec.CAs); err != nil {
				return fmt.Errorf("proxy: secret %q: %w", sec.Name, err)
			}
		}
		names = append(names, sec.Name)
	}
	s.mgr.SecretsReady(names...)
	return nil
}

// ConfigDump returns the sidecar's current configuration: listeners and
// clusters as accepted (in the shape of Envoy's JSON, see resource.Listener.EnvoyJSON),
// secrets as certificate summaries only.
func (s *Sidecar) ConfigDump() any {
	type entry struct {
		Name       string         `json:"name"`
		Address    string         `json:"address,omitempty"`
		Direction  string         `json:"direction,omitempty"`
		Warm       *bool          `json:"warm,omitempty"`
		WaitingFor string         `json:"waiting_for,omitempty"`
		Config     map[string]any `json:"config"`
	}
	out := map[string]any{
		"node": map[string]string{"id": s.id.String(), "config_id": s.cfg.ConfigID},
	}
	if c := s.adsc.Load(); c != nil {
		out["xds"] = c.Status()
	}
	var ls []entry
	for _, st := range s.mgr.Listeners() {
		warm := st.Warm
		ls = append(ls, entry{Name: st.Name, Address: st.Address, Direction: string(st.Direction), Warm: &warm, WaitingFor: st.WaitingFor, Config: st.Spec.EnvoyJSON()})
	}
	out["listeners"] = ls
	var cs []entry
	for _, c := range s.mgr.Clusters() {
		cs = append(cs, entry{Name: c.Name, Config: c.EnvoyJSON()})
	}
	out["clusters"] = cs
	secrets := map[string]any{}
	if cur, ok := s.creds.Current(); ok {
		secrets[resource.SecretSVID] = cur
	}
	if b := s.creds.TrustBundle(); b != nil {
		secrets[resource.SecretTrustBundle] = b
	}
	out["secrets"] = secrets
	return out
}

// teeLabel names the TEE behind an SVID for logs and metric labels: "simulation" marks an
// identity that rests on the simulated platform.
func teeLabel(cert *x509.Certificate) string {
	if t := attestapi.TEEOf(cert); t != attestapi.TEEUnknown {
		return string(t)
	}
	return "unknown"
}
