// Package controlplane assembles the attestmesh control plane: the encrypted store, the CA,
// the CAS (sessions and secrets), the mesh registry, the management API, the attestation API,
// xDS, the simulated platform's LAS (in simulation), the injector webhook and the metrics
// endpoint. Run constructs the parts, lists their tasks and runs them, each a Run(ctx) joined
// by an errgroup; a cancelled context is a clean stop.
package controlplane

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/controlplane/attestation"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/endpoints"
	"github.com/attestmesh/attestmesh/controlplane/mgmt"
	"github.com/attestmesh/attestmesh/controlplane/registry"
	"github.com/attestmesh/attestmesh/controlplane/xds"
)

// Run runs the control plane until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, td := cfg.logger(), cfg.trustDomain()

	// State: the store, the CA, the sessions.
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	authority, err := loadOrCreateAuthority(ctx, st, td)
	if err != nil {
		return err
	}
	log.Info("control plane CA", "trust_domain", td.String(), "ca_subject", authority.Bundle()[0].Subject.CommonName)
	bundlePEM := authority.BundlePEM()
	// The bundle is public: write it where operators and `attestmesh` clients find it. With
	// etcd nothing else creates --data-dir.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("controlplane: --data-dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "ca.pem"), bundlePEM, 0o644); err != nil { //nolint:gosec // a CA certificate is public
		return fmt.Errorf("controlplane: write ca.pem: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sessions := newSessionsGauge(reg)
	changes := make(chan struct{}, 1)
	casSvc := cas.New(cas.Config{
		Store: st, Limits: cfg.Limits, MeshSessions: registry.Sessions, Logger: log.With("subsystem", "cas"),
		OnChange: func(string) { sessions.changed(ctx); signal(changes) },
	})
	sessions.count = casSvc.Count
	sessions.changed(ctx) // the sessions already stored count from the start
	var cluster *endpoints.Watcher
	var ready registry.Cluster
	if cfg.Kubernetes {
		if cluster, err = newClusterWatcher(cfg, func() { signal(changes) }, log); err != nil {
			return err
		}
		ready = cluster.Ready
	}
	meshes := registry.New(registry.Config{
		CAS: casSvc, TrustDomain: td, Bundle: authority.Bundle, Changes: changes, Cluster: ready, Registerer: reg, Logger: log,
	})

	// Attestation: the verifier (and, in simulation, the platform and its LAS).
	verifier, las, err := newVerifier(ctx, cfg, st, log)
	if err != nil {
		return err
	}
	sidecarMR, sidecarBin, err := sidecarMeasurement(cfg)
	if err != nil {
		return err
	}
	log.Info("sidecars of simulation-mode sessions that name no sidecar measurement must present this binary's", "binary", sidecarBin, "mrenclave", hex.EncodeToString(sidecarMR[:]))
	macKey, err := loadOrCreateSecret(ctx, st, keyAttestationMAC, 32)
	if err != nil {
		return err
	}
	// The control plane's own evidence, which binds its CA (nil: it serves none).
	issuer, err := newEvidenceIssuer(ctx, cfg, st, authority, log)
	if err != nil {
		return err
	}

	// Listeners first, so that port clashes fail before anything serves.
	lns, err := listenAll(ctx, cfg, las)
	if err != nil {
		return err
	}
	defer lns.close()
	serverTLS, err := serverCertificate(authority, cfg)
	if err != nil {
		return err
	}

	// The servers.
	xdsSrv, err := xds.New(xds.Config{
		Logger: log, Metrics: reg, Addr: cfg.XDSAddr, OnPeer: meshes.Peer,
		TLS: &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: serverTLS.get,
			ClientCAs: ca.CertPool(authority.Bundle()), ClientAuth: tls.RequireAndVerifyClientCert},
	})
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	attestSvc, err := attestation.NewServer(attestation.Config{
		CAS: casSvc, Authority: authority, Verifier: verifier, Logger: log, MACKey: macKey,
		Metrics: attestation.NewMetrics(reg), SVIDTTL: cfg.SVIDTTL, SidecarMREnclaves: [][32]byte{sidecarMR},
		XDSAddress: advertiseXDS(cfg, lns.xds.Addr().String()), OnSVID: meshes.SVID,
	})
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	attestGRPC := newAttestationGRPC(serverTLS)
	attestationpb.RegisterAttestationServer(attestGRPC, attestSvc)
	// Clients are identified by their certificate's key; the TLS handshake proves possession.
	// Public endpoints need none.
	mgmtTLS := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: serverTLS.get}
	if err := mgmtClientAuth(cfg, mgmtTLS); err != nil {
		return err
	}
	mgmtSrv := newHTTPServer(mgmt.NewHandler(mgmt.Config{
		CAS: casSvc, BundlePEM: bundlePEM, ValidateMesh: meshes.Validate, Evidence: evidenceFunc(issuer),
		ClientRate: cfg.ClientRate, ClientBurst: cfg.ClientBurst, Registerer: reg, Logger: log,
	}), mgmtTLS, log)
	metricsSrv := newHTTPServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), nil, log)

	// The tasks.
	tasks := map[string]func(context.Context) error{
		"management API":  func(ctx context.Context) error { return serveHTTP(ctx, mgmtSrv, lns.mgmt) },
		"metrics":         func(ctx context.Context) error { return serveHTTP(ctx, metricsSrv, lns.metrics) },
		"attestation API": func(ctx context.Context) error { return serveGRPC(ctx, attestGRPC, lns.attest) },
		"xDS":             func(ctx context.Context) error { return xdsSrv.Serve(ctx, lns.xds) },
		"mesh registry":   func(ctx context.Context) error { return meshes.Run(ctx, xdsSrv) },
		"server certificate renewal": func(ctx context.Context) error {
			return serverTLS.renew(ctx, authority, cfg, log)
		},
	}
	if las != nil {
		tasks["LAS"] = las.Run
	}
	if cluster != nil {
		tasks["cluster endpoints"] = cluster.Run
	}
	if st.watch != nil {
		// Other replicas write too: their changes reach this replica's xDS feed as its own do.
		tasks["store watch"] = func(ctx context.Context) error {
			return st.watch(ctx, func([]string) { sessions.changed(ctx); signal(changes) })
		}
	}
	if lns.webhook != nil {
		webhookSrv, err := newWebhookServer(cfg, casSvc, bundlePEM, las, serverTLS, reg, log)
		if err != nil {
			return err
		}
		tasks["webhook"] = func(ctx context.Context) error { return serveHTTP(ctx, webhookSrv, lns.webhook) }
		if cfg.WebhookConfigName != "" {
			tasks["webhook caBundle"] = func(ctx context.Context) error { return patchCABundle(ctx, cfg.WebhookConfigName, bundlePEM, log) }
		}
	} else {
		log.Info("sidecar-injector webhook disabled (no --injector-image)")
	}

	addrs := lns.addrs(bundlePEM)
	log.Info("control plane serving", "management", addrs.Mgmt, "attestation", addrs.Attest, "xds", addrs.XDS, "metrics", addrs.Metrics, "las", addrs.LAS)
	if cfg.Ready != nil {
		cfg.Ready(addrs)
	}
	g, gctx := errgroup.WithContext(ctx)
	for name, run := range tasks {
		g.Go(func() error {
			if err := run(gctx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("controlplane: %s: %w", name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// newClusterWatcher follows the cluster with the pod's service account (or cfg.Kubeconfig).
func newClusterWatcher(cfg Config, onChange func(), log *slog.Logger) (*endpoints.Watcher, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("controlplane: --kubernetes: cannot reach the cluster's API server: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("controlplane: --kubernetes: %w", err)
	}
	w, err := endpoints.New(endpoints.Config{Client: client, OnChange: onChange, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	return w, nil
}

// signal asks for a rebuild on c without blocking.
func signal(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
