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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/injector"
	"github.com/attestmesh/attestmesh/controlplane/session"

	"github.com/attestmesh/attestmesh/controlplane/kube"
)

// newWebhookServer is the sidecar-injector webhook's HTTPS server: the control plane's own
// certificate, or the one in --webhook-cert-file (reloaded when it changes).
func newWebhookServer(cfg Config, c *cas.CAS, bundlePEM []byte, las *sim.LAS, serverTLS *tlsSource, reg prometheus.Registerer, log *slog.Logger) (*http.Server, error) {
	h, err := newWebhook(cfg, c, bundlePEM, las, reg, log)
	if err != nil {
		return nil, err
	}
	getCert := serverTLS.get
	if cfg.WebhookCertFile != "" {
		fc, err := newFileCert(cfg.WebhookCertFile, cfg.WebhookKeyFile)
		if err != nil {
			return nil, err
		}
		getCert = fc.get
	}
	return newHTTPServer(h, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert}, log), nil
}

// newWebhook builds the sidecar-injector webhook over the CAS's sessions.
func newWebhook(cfg Config, c *cas.CAS, bundlePEM []byte, las *sim.LAS, reg prometheus.Registerer, log *slog.Logger) (http.Handler, error) {
	attest := cfg.InjectorAttestAddr
	if attest == "" {
		attest = net.JoinHostPort(advertiseHost(cfg), portOf(cfg.AttestAddr))
	}
	lasAddr := cfg.InjectorLASAddr
	if lasAddr == "" && las != nil {
		lasAddr = net.JoinHostPort(advertiseHost(cfg), portOf(las.Addr()))
	}
	in, err := injector.New(injector.Config{
		Image: cfg.InjectorImage, AttestAddr: attest, LASAddr: lasAddr, CAPEM: bundlePEM,
		Sessions: injector.SessionDirs(func(ctx context.Context, name string) (*session.Session, error) {
			s, err := c.Session(ctx, name)
			if cas.CodeOf(err) == cas.CodeNotFound {
				return nil, fmt.Errorf("no session %q: %w", name, injector.ErrUnknownConfigID)
			}
			return s, err
		}),
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("controlplane: webhook: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+injector.Path, in)
	return mux, nil
}

// patchCABundle puts the control plane's CA into the webhook configuration's caBundle, when
// running in a cluster, retrying until it succeeds or ctx ends.
func patchCABundle(ctx context.Context, name string, bundlePEM []byte, log *slog.Logger) error {
	api, err := kube.InCluster()
	if err != nil {
		log.Warn("not patching the webhook's caBundle: not running in a cluster", "error", err.Error())
		return nil
	}
	for delay := time.Second; ; delay = min(2*delay, time.Minute) {
		err := injector.PatchCABundle(ctx, api, name, bundlePEM)
		if err == nil {
			log.Info("webhook caBundle patched", "mutatingwebhookconfiguration", name)
			return nil
		}
		log.Warn("patching the webhook's caBundle failed; retrying", "error", err.Error(), "in", delay.String())
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil
			}
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}
