// Package controlplane assembles the attestmesh control plane: the encrypted store, the CA,
// the CAS (sessions and secrets), the management API, the attestation API, the simulated
// platform's LAS (in simulation), and the metrics endpoint, each a Run(ctx) component joined
// by an errgroup. A cancelled context is a clean stop.
package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/attestation"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/kube"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
	"github.com/attestmesh/attestmesh/controlplane/mgmt"
	"github.com/attestmesh/attestmesh/controlplane/store"
	"github.com/attestmesh/attestmesh/controlplane/xds"
)

// Store keys of the control plane's own state (values sealed by the encrypted store).
const (
	keyAuthority = "controlplane/authority"
	keyPlatform  = "controlplane/sim-platform"
	// keyAttestationMAC keys the attestation API's stateless nonces and sidecar grants.
	keyAttestationMAC = "controlplane/attestation-mac-key"
)

// Config is the control plane's configuration; the `attestmesh controlplane` flags fill it.
type Config struct {
	DataDir      string
	StoreKeyFile string // empty: ATTESTMESH_STORE_KEY
	// StoreKey, when set, is the store key itself (for `attestmesh up`, which keeps it in
	// memory only); it takes precedence over StoreKeyFile.
	StoreKey *store.Key
	// StoreAnchor keeps the store's generation outside the data directory, so that an older
	// copy of the store put back in place is refused: a file path, or
	// "kubernetes-secret:NAMESPACE/NAME" for a Secret the control plane may get and patch.
	// Empty: the file "<store key file>.generation" when the key comes from a file; none (and a
	// warning) when it comes from the environment. "none" disables the check.
	StoreAnchor string
	// AllowStoreRollback opens a store older than its anchor (a backup restored on purpose).
	AllowStoreRollback bool
	TrustDomain        string
	// Limits bound what one client can make the CAS store and compute.
	Limits cas.Limits
	// ClientRate and ClientBurst bound the management API requests of each client identity (and
	// of each address without one); zero takes mgmt's defaults, a negative rate none.
	ClientRate  float64
	ClientBurst int

	MgmtAddr    string // management API (HTTPS)
	AttestAddr  string // attestation API (gRPC over TLS)
	XDSAddr     string // xDS (gRPC, mTLS)
	MetricsAddr string // Prometheus metrics (HTTP)
	// WebhookAddr serves the sidecar-injector webhook (HTTPS) when InjectorImage is set.
	WebhookAddr string
	// InjectorImage is the attestmesh image the injector adds to pods; empty disables the
	// webhook.
	InjectorImage string
	// InjectorAttestAddr and InjectorLASAddr are the attestation API and LAS as pods reach
	// them (e.g. the control plane's Service names); empty means the advertised host.
	InjectorAttestAddr string
	InjectorLASAddr    string
	// WebhookCertFile and WebhookKeyFile, when set, are the webhook's TLS certificate and key
	// (cert-manager or a user-supplied Secret), reloaded when they change; otherwise the
	// webhook serves the control plane's own certificate.
	WebhookCertFile, WebhookKeyFile string
	// WebhookConfigName, when set and running in a cluster, is the
	// MutatingWebhookConfiguration whose caBundle the control plane patches with its CA.
	WebhookConfigName string
	// AdvertiseAddr is the host that workloads use to reach this control plane; it goes into
	// the server certificate and the xDS address told to sidecars.
	AdvertiseHost string
	ServerNames   []string // extra DNS names for the server certificate

	SVIDTTL time.Duration

	// Simulation enables the simulated platform and its LAS on LASAddr.
	Simulation bool
	LASAddr    string
	// CollateralDir holds hardware collateral (see attestation.DirCollateral); empty
	// disables hardware attestation.
	CollateralDir string
	// SidecarBinary is measured to accept sidecars; empty means this executable.
	SidecarBinary string

	Logger *slog.Logger
	// Ready, when set, is called once every listener is bound, with the bound addresses.
	Ready func(Addrs)
}

// Addrs are the bound addresses (useful with port 0).
type Addrs struct {
	Mgmt, Attest, XDS, Metrics, LAS, Webhook string
	// BundlePEM is the control plane's CA bundle, to pin in clients.
	BundlePEM []byte
}

// Run runs the control plane until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		return errors.New("controlplane: --data-dir is required")
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("controlplane: trust domain %q: %w", cfg.TrustDomain, err)
	}

	var key store.Key
	if cfg.StoreKey != nil {
		key = *cfg.StoreKey
	} else if key, err = store.LoadKey(store.KeyConfig{File: cfg.StoreKeyFile, DataDir: cfg.DataDir}); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	anchor, err := storeAnchor(cfg, log)
	if err != nil {
		return err
	}
	bolt, err := store.OpenBolt(store.BoltConfig{Dir: cfg.DataDir})
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	defer bolt.Close()
	st, err := store.Open(ctx, bolt, key, store.Options{Anchor: anchor, AllowRollback: cfg.AllowStoreRollback, Logger: log.With("subsystem", "store")})
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	log.Info("store open", "generation", st.Generation(), "rollback_anchor", anchorName(anchor))

	authority, err := loadOrCreateAuthority(ctx, st, td)
	if err != nil {
		return err
	}
	log.Info("control plane CA", "trust_domain", td.String(), "ca_subject", authority.Bundle()[0].Subject.CommonName)
	bundlePEM := authority.BundlePEM()
	// The bundle is public: write it where operators and `attestmesh` clients find it.
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "ca.pem"), bundlePEM, 0o644); err != nil { //nolint:gosec // a CA certificate is public
		return fmt.Errorf("controlplane: write ca.pem: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := newMetrics(reg)

	var feed *feed
	casSvc := cas.New(cas.Config{Store: st, Limits: cfg.Limits, MeshSessions: mesh.RegistrationSessions, Logger: log.With("subsystem", "cas"), OnChange: func(string) {
		metrics.sessionsChanged()
		if feed != nil {
			feed.changed()
		}
	}})
	metrics.countSessions = func() {
		if n, err := casSvc.Count(context.WithoutCancel(ctx)); err == nil {
			metrics.sessions.Set(float64(n))
		}
	}
	metrics.countSessions()

	verifier := &attestation.Verifier{}
	if cfg.CollateralDir != "" {
		verifier.Hardware = attestation.TrustAnchor{Root: dcap.IntelRoot(), Collateral: attestation.DirCollateral{Dir: cfg.CollateralDir}}
	}
	var las *sim.LAS
	if cfg.Simulation {
		platform, err := loadOrCreatePlatform(ctx, st)
		if err != nil {
			return err
		}
		verifier.Simulation = attestation.TrustAnchor{
			Root: platform.Root(),
			Collateral: attestation.CollateralFunc(func(context.Context, string) (dcap.Collateral, error) {
				return platform.Collateral(time.Now())
			}),
			SkipRevocation: !platform.HasCRLs(),
		}
		if !platform.HasCRLs() {
			log.Warn("the simulated platform was created by an older version and has no CRLs: revocation is not checked in simulation")
		}
		las, err = sim.NewLAS(sim.LASConfig{Platform: platform, Logger: log, Addr: cfg.LASAddr})
		if err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		log.Warn("SIMULATION MODE: the simulated platform's LAS signs any measurement it is asked to; identities from it are marked tee=simulation and give no hardware guarantee", "las", las.Addr())
	}

	sidecarBin := cfg.SidecarBinary
	if sidecarBin == "" {
		if sidecarBin, err = os.Executable(); err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
	}
	sidecarMeasure, err := measure.File(sidecarBin)
	if err != nil {
		return fmt.Errorf("controlplane: sidecar measurement: %w", err)
	}

	// Listeners first, so that port clashes fail before anything serves.
	var lc net.ListenConfig
	listen := func(what, addr string) (net.Listener, error) {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("controlplane: %s listener: %w", what, err)
		}
		return ln, nil
	}
	mgmtLn, err := listen("management API", cfg.MgmtAddr)
	if err != nil {
		return err
	}
	attestLn, err := listen("attestation API", cfg.AttestAddr)
	if err != nil {
		return err
	}
	metricsLn, err := listen("metrics", cfg.MetricsAddr)
	if err != nil {
		return err
	}
	xdsLn, err := listen("xDS", cfg.XDSAddr)
	if err != nil {
		return err
	}
	var webhookLn net.Listener
	if cfg.InjectorImage != "" {
		if webhookLn, err = listen("webhook", cfg.WebhookAddr); err != nil {
			return err
		}
	} else {
		log.Info("sidecar-injector webhook disabled (no --injector-image)")
	}

	serverTLS, err := serverCertificate(authority, cfg)
	if err != nil {
		return err
	}
	xdsAddr := net.JoinHostPort(advertiseHost(cfg), portOf(xdsLn.Addr().String()))
	clientCAs := ca.CertPool(authority.Bundle())
	xdsSrv, err := xds.New(xds.Config{
		Logger: log, Metrics: reg, Addr: cfg.XDSAddr,
		TLS: &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: serverTLS.get, ClientCAs: clientCAs, ClientAuth: tls.RequireAndVerifyClientCert},
		// Streams open only once Run serves, after feed is set.
		OnPeer: func(id spiffeid.ID, chain []*x509.Certificate) { feed.peer(id, chain) },
	})
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	feed = newFeed(casSvc, authority, xdsSrv, metrics, log)

	macKey, err := loadOrCreateSecret(ctx, st, keyAttestationMAC, 32)
	if err != nil {
		return err
	}
	attestSvc, err := attestation.NewServer(attestation.Config{
		CAS: casSvc, Authority: authority, Verifier: verifier, Logger: log, MACKey: macKey,
		Metrics: attestation.NewMetrics(reg), SVIDTTL: cfg.SVIDTTL, XDSAddress: xdsAddr,
		SidecarMREnclaves: [][32]byte{sidecarMeasure},
		OnSVID:            feed.svid,
	})
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	grpcSrv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, GetCertificate: serverTLS.get,
	})),
		// Attestation is two small unary calls: bound what one caller can hold open.
		grpc.ConnectionTimeout(10*time.Second),
		grpc.MaxRecvMsgSize(1<<20),
		grpc.MaxConcurrentStreams(64),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 2 * time.Minute}),
	)
	attestationpb.RegisterAttestationServer(grpcSrv, attestSvc)

	validateMesh := func(ctx context.Context, name string, doc []byte, client cas.Client) error {
		_, m, err := mesh.ParseRegistration(doc)
		if err != nil {
			return err
		}
		if m.Name != name {
			return fmt.Errorf("the path names mesh %q but the document names %q", name, m.Name)
		}
		// The mesh configures the sidecars of every config ID it names: the CAS lets only a
		// client that may update each of their sessions register it (PutMesh). It must also
		// fit with the meshes already registered (no config ID or address claimed twice):
		// otherwise the feed would have to leave it out.
		others, err := casSvc.Meshes(ctx)
		if err != nil {
			return err
		}
		others = slices.DeleteFunc(others, func(o cas.Mesh) bool { return o.Name == name })
		_, skipped := buildModel(td, append(others, cas.Mesh{Name: name, Doc: doc}))
		if err := skipped[name]; err != nil {
			return fmt.Errorf("mesh %q does not fit with the registered meshes: %w", name, err)
		}
		return nil
	}
	mgmtHandler := mgmt.NewHandler(mgmt.Config{
		CAS: casSvc, BundlePEM: bundlePEM, ValidateMesh: validateMesh,
		ClientRate: cfg.ClientRate, ClientBurst: cfg.ClientBurst, Registerer: reg, Logger: log,
	})
	mgmtSrv := &http.Server{
		Handler:           mgmtHandler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS12, GetCertificate: serverTLS.get,
			// Clients are identified by their (typically self-signed) certificate's key;
			// the TLS handshake proves possession. Public endpoints need none.
			ClientAuth: tls.RequestClientCert,
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	var webhookSrv *http.Server
	if webhookLn != nil {
		h, err := newWebhook(cfg, casSvc, bundlePEM, las, reg, log)
		if err != nil {
			return err
		}
		getCert := serverTLS.get
		if cfg.WebhookCertFile != "" || cfg.WebhookKeyFile != "" {
			fc, err := newFileCert(cfg.WebhookCertFile, cfg.WebhookKeyFile)
			if err != nil {
				return err
			}
			getCert = fc.get
		}
		webhookSrv = &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert},
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	}
	metricsSrv := &http.Server{
		Handler:           promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}

	addrs := Addrs{Mgmt: mgmtLn.Addr().String(), Attest: attestLn.Addr().String(), XDS: xdsLn.Addr().String(), Metrics: metricsLn.Addr().String(), BundlePEM: bundlePEM}
	if las != nil {
		addrs.LAS = las.Addr()
	}
	if webhookLn != nil {
		addrs.Webhook = webhookLn.Addr().String()
	}
	log.Info("control plane serving", "management", addrs.Mgmt, "attestation", addrs.Attest, "metrics", addrs.Metrics, "las", addrs.LAS)
	if cfg.Ready != nil {
		cfg.Ready(addrs)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveHTTP(gctx, mgmtSrv, mgmtLn, true) })
	g.Go(func() error { return serveHTTP(gctx, metricsSrv, metricsLn, false) })
	if webhookSrv != nil {
		g.Go(func() error { return serveHTTP(gctx, webhookSrv, webhookLn, true) })
		if cfg.WebhookConfigName != "" {
			g.Go(func() error { return patchCABundle(gctx, cfg.WebhookConfigName, bundlePEM, log) })
		}
	}
	g.Go(func() error {
		errc := make(chan error, 1)
		go func() { errc <- grpcSrv.Serve(attestLn) }()
		select {
		case err := <-errc:
			return fmt.Errorf("controlplane: attestation API: %w", err)
		case <-gctx.Done():
			stopped := make(chan struct{})
			go func() { grpcSrv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				grpcSrv.Stop()
			}
			return nil
		}
	})
	if las != nil {
		g.Go(func() error { return las.Run(gctx) })
	}
	g.Go(func() error { return serverTLS.renew(gctx, authority, cfg, log) })
	g.Go(func() error { return xdsSrv.Serve(gctx, xdsLn) })
	g.Go(func() error { return feed.Run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener, useTLS bool) error {
	errc := make(chan error, 1)
	go func() {
		if useTLS {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("controlplane: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

// storeAnchor returns the store's rollback anchor from cfg (nil: none).
func storeAnchor(cfg Config, log *slog.Logger) (store.Anchor, error) {
	const secretPrefix = "kubernetes-secret:" //nolint:gosec // G101: a scheme name, not a credential
	switch a := cfg.StoreAnchor; {
	case a == "none":
		log.Warn("store rollback check disabled (--store-anchor none): an older copy of the store put back in place would go unnoticed")
		return nil, nil
	case strings.HasPrefix(a, secretPrefix):
		ns, name, ok := strings.Cut(strings.TrimPrefix(a, secretPrefix), "/")
		if !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("controlplane: --store-anchor %q: want kubernetes-secret:NAMESPACE/NAME", a)
		}
		api, err := kube.InCluster()
		if err != nil {
			return nil, fmt.Errorf("controlplane: --store-anchor %q: %w", a, err)
		}
		return &kube.SecretAnchor{API: api, Namespace: ns, Name: name}, nil
	case a != "":
		return &store.FileAnchor{Path: a}, nil
	case cfg.StoreKeyFile != "" && cfg.StoreKey == nil:
		return &store.FileAnchor{Path: cfg.StoreKeyFile + ".generation"}, nil
	default:
		if cfg.StoreKey == nil {
			log.Warn("store rollback check off: the store key comes from the environment, so there is no place beside it for the store's generation; give --store-anchor FILE (outside --data-dir)")
		}
		return nil, nil
	}
}

func anchorName(a store.Anchor) string {
	if a == nil {
		return "none"
	}
	return a.String()
}

func loadOrCreateAuthority(ctx context.Context, st store.Backend, td spiffeid.TrustDomain) (*ca.Authority, error) {
	raw, err := st.Get(ctx, keyAuthority)
	switch {
	case err == nil:
		a, err := ca.LoadAuthority(raw, ca.AuthorityConfig{TrustDomain: td})
		if err != nil {
			return nil, fmt.Errorf("controlplane: stored CA: %w", err)
		}
		return a, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("controlplane: read CA: %w", err)
	}
	a, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: td})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	pem, err := a.MarshalPEM()
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if err := st.CompareAndSwap(ctx, keyAuthority, nil, pem); err != nil {
		return nil, fmt.Errorf("controlplane: store CA: %w", err)
	}
	return a, nil
}

// loadOrCreateSecret returns the random secret of n bytes stored under key, creating it on the
// first start (sealed by the store like everything else; the first writer wins when several
// control planes start at once).
func loadOrCreateSecret(ctx context.Context, st store.Backend, key string, n int) ([]byte, error) {
	for range 2 {
		b, err := st.Get(ctx, key)
		if err == nil {
			if len(b) != n {
				return nil, fmt.Errorf("controlplane: stored %s is %d bytes, want %d", key, len(b), n)
			}
			return b, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("controlplane: read %s: %w", key, err)
		}
		b = make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
		err = st.CompareAndSwap(ctx, key, nil, b)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("controlplane: store %s: %w", key, err)
		}
	}
	return nil, fmt.Errorf("controlplane: %s keeps changing", key)
}

func loadOrCreatePlatform(ctx context.Context, st store.Backend) (*sim.Platform, error) {
	raw, err := st.Get(ctx, keyPlatform)
	switch {
	case err == nil:
		p, err := sim.UnmarshalPlatform(raw)
		if err != nil {
			return nil, fmt.Errorf("controlplane: stored simulated platform: %w", err)
		}
		return p, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("controlplane: read simulated platform: %w", err)
	}
	p, err := sim.NewPlatform(rand.Reader, sim.PlatformOptions{})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	data, err := p.Marshal()
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if err := st.CompareAndSwap(ctx, keyPlatform, nil, data); err != nil {
		return nil, fmt.Errorf("controlplane: store simulated platform: %w", err)
	}
	return p, nil
}

func advertiseHost(cfg Config) string {
	if cfg.AdvertiseHost != "" {
		return cfg.AdvertiseHost
	}
	return "127.0.0.1"
}

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return port
}

// tlsSource holds the control plane's server certificate and renews it before expiry.
type tlsSource struct {
	cert atomicCert
}

func serverCertificate(a *ca.Authority, cfg Config) (*tlsSource, error) {
	s := &tlsSource{}
	if err := s.issue(a, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *tlsSource) issue(a *ca.Authority, cfg Config) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("controlplane: server key: %w", err)
	}
	dns := append([]string{"localhost"}, cfg.ServerNames...)
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if h := cfg.AdvertiseHost; h != "" {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	cert, err := a.IssueServerCert(key.Public(), dns, ips, 0)
	if err != nil {
		return fmt.Errorf("controlplane: server certificate: %w", err)
	}
	s.cert.Store(&tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert})
	return nil
}

func (s *tlsSource) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil }

// renew re-issues the server certificate at two thirds of its lifetime; on failure the last
// good certificate stays and renewal is retried.
func (s *tlsSource) renew(ctx context.Context, a *ca.Authority, cfg Config, log *slog.Logger) error {
	for {
		leaf := s.cert.Load().Leaf
		wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(wait, time.Minute)):
		}
		if err := s.issue(a, cfg); err != nil {
			log.Error("server certificate renewal failed; keeping the current one", "error", err)
		}
	}
}
