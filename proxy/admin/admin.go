// Package admin serves the sidecar's admin endpoint (default
// 127.0.0.1:15000): /healthz (the process serves), /ready (attested, listeners warm),
// /config_dump and /metrics; with Pprof, Go's profiles under /debug/pprof/ to clients in the
// sidecar's own network namespace only.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/attestmesh/attestmesh/proxy/metrics"
)

// DefaultAddr is the admin endpoint's default address.
const DefaultAddr = "127.0.0.1:15000"

// Config configures a Server.
type Config struct {
	// Addr to listen on (DefaultAddr if empty).
	Addr string
	// Ready reports readiness, and the reason when not ready.
	Ready func() (bool, string)
	// ConfigDump returns the current configuration as a JSON-encodable
	// value; it must not contain key material.
	ConfigDump func() any
	// Metrics are served at /metrics.
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Pprof serves Go's profiles under /debug/pprof/, only to clients in the sidecar's own
	// network namespace (off by default: a profile shows what the sidecar is doing).
	Pprof bool
}

// Server is the admin HTTP server.
type Server struct {
	cfg Config
	log *slog.Logger
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Ready == nil || cfg.ConfigDump == nil || cfg.Metrics == nil || cfg.Logger == nil {
		return nil, errors.New("admin: Ready, ConfigDump, Metrics and Logger are required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("subsystem", "admin")}, nil
}

// Handler returns the admin routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ALIVE")
	})
	mux.HandleFunc("GET /ready", s.ready)
	mux.HandleFunc("GET /config_dump", s.configDump)
	mux.Handle("GET /metrics", s.cfg.Metrics)
	if s.cfg.Pprof {
		s.pprofRoutes(mux)
	}
	return mux
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	ok, reason := s.cfg.Ready()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "NOT READY: %s\n", reason)
		return
	}
	_, _ = fmt.Fprintln(w, "LIVE")
}

func (s *Server) configDump(w http.ResponseWriter, _ *http.Request) {
	b, err := json.MarshalIndent(s.cfg.ConfigDump(), "", "  ")
	if err != nil {
		s.log.Error("config dump failed", "error", err)
		http.Error(w, "config dump failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

// Run serves until ctx is done, then shuts down within five seconds.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin: listen %s: %w", s.cfg.Addr, err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	s.log.Info("admin endpoint listening", "address", ln.Addr().String(), "pprof", s.cfg.Pprof)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve: %w", err)
	}
	return nil
}
