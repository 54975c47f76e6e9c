package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/attestation"
)

// listeners are the control plane's bound listeners.
type listeners struct {
	mgmt, attest, metrics, xds, webhook net.Listener
	las                                 string
}

// listenAll binds every listener, so that a port clash fails before anything serves.
func listenAll(ctx context.Context, cfg Config, las *sim.LAS) (*listeners, error) {
	var lc net.ListenConfig
	l := &listeners{}
	bind := func(dst *net.Listener, what, addr string) error {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("controlplane: %s listener: %w", what, err)
		}
		*dst = ln
		return nil
	}
	err := errors.Join(
		bind(&l.mgmt, "management API", cfg.MgmtAddr),
		bind(&l.attest, "attestation API", cfg.AttestAddr),
		bind(&l.metrics, "metrics", cfg.MetricsAddr),
		bind(&l.xds, "xDS", cfg.XDSAddr),
	)
	if err == nil && cfg.InjectorImage != "" {
		err = bind(&l.webhook, "webhook", cfg.WebhookAddr)
	}
	if err != nil {
		l.close()
		return nil, err
	}
	if las != nil {
		l.las = las.Addr()
	}
	return l, nil
}

// close closes every listener (the servers close theirs when they stop; closing twice is fine).
func (l *listeners) close() {
	for _, ln := range []net.Listener{l.mgmt, l.attest, l.metrics, l.xds, l.webhook} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

func (l *listeners) addrs(bundlePEM []byte) Addrs {
	a := Addrs{Mgmt: l.mgmt.Addr().String(), Attest: l.attest.Addr().String(), XDS: l.xds.Addr().String(),
		Metrics: l.metrics.Addr().String(), LAS: l.las, BundlePEM: bundlePEM}
	if l.webhook != nil {
		a.Webhook = l.webhook.Addr().String()
	}
	return a
}

// newHTTPServer is every HTTP(S) server of the control plane: bounded reads, writes and idle
// connections; TLS when tlsCfg is set; its own errors logged at debug level.
func newHTTPServer(h http.Handler, tlsCfg *tls.Config, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig:         tlsCfg,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// serveHTTP serves srv on ln until ctx is done, then shuts it down within five seconds.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

// newAttestationGRPC is the attestation API's gRPC server: TLS 1.3 with the control plane's
// certificate, and, since attestation is two small unary calls, bounds on what one caller can
// hold open.
func newAttestationGRPC(serverTLS *tlsSource) *grpc.Server {
	return grpc.NewServer(append(attestation.GRPCServerOptions(),
		grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: serverTLS.get})),
		grpc.ConnectionTimeout(10*time.Second),
		grpc.MaxRecvMsgSize(1<<20),
		grpc.MaxConcurrentStreams(64),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 2 * time.Minute}),
	)...)
}

// serveGRPC serves srv on ln until ctx is done, then stops it gracefully within five seconds.
func serveGRPC(ctx context.Context, srv *grpc.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			srv.Stop()
		}
		return nil
	}
}
