package admin_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/attestmesh/attestmesh/proxy/admin"
	"github.com/attestmesh/attestmesh/proxy/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHandler(t *testing.T) {
	m := metrics.New()
	m.AuthzDenials.WithLabelValues("inbound|8443").Inc()
	ready, reason := false, `listener "inbound|8443" is warming: waiting for secret "svid"`
	s, err := admin.New(admin.Config{
		Ready:      func() (bool, string) { return ready, reason },
		ConfigDump: func() any { return map[string]string{"node": "spiffe://attestmesh.local/app/server"} },
		Metrics:    m,
		Logger:     slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	get := func(path string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name     string
		path     string
		ready    bool
		wantCode int
		want     string
	}{
		{"cold", "/ready", false, http.StatusServiceUnavailable, `waiting for secret "svid"`},
		{"warm", "/ready", true, http.StatusOK, "LIVE"},
		{"config dump", "/config_dump", true, http.StatusOK, `"node": "spiffe://attestmesh.local/app/server"`},
		{"metrics", "/metrics", true, http.StatusOK, `attestmesh_sidecar_authz_denials_total{listener="inbound|8443"} 1`},
		{"unknown", "/quitquitquit", true, http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready = tt.ready
			code, body := get(tt.path)
			assert.Equal(t, tt.wantCode, code)
			assert.Contains(t, body, tt.want)
		})
	}
}

func TestPprof(t *testing.T) {
	newServer := func(t *testing.T, pprof bool) http.Handler {
		t.Helper()
		s, err := admin.New(admin.Config{
			Ready:      func() (bool, string) { return true, "" },
			ConfigDump: func() any { return nil },
			Metrics:    metrics.New(),
			Logger:     slog.New(slog.DiscardHandler),
			Pprof:      pprof,
		})
		require.NoError(t, err)
		return s.Handler()
	}
	serve := func(h http.Handler, remote string, local net.Addr, path string) *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil)
		req.RemoteAddr = remote
		if local != nil {
			req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, local))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	podAddr := &net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 15000}
	tests := []struct {
		name     string
		pprof    bool
		remote   string
		local    net.Addr
		path     string
		wantCode int
		want     string
	}{
		{"off by default", false, "127.0.0.1:40000", nil, "/debug/pprof/heap", http.StatusNotFound, ""},
		{"index from loopback", true, "127.0.0.1:40000", nil, "/debug/pprof/", http.StatusOK, "goroutine"},
		{"goroutines from loopback", true, "[::1]:40000", nil, "/debug/pprof/goroutine?debug=1", http.StatusOK, "goroutine profile:"},
		{"from the pod's own address", true, "192.0.2.10:40000", podAddr, "/debug/pprof/goroutine?debug=1", http.StatusOK, "goroutine profile:"},
		{"from another address", true, "192.0.2.11:40000", podAddr, "/debug/pprof/heap", http.StatusForbidden, "network namespace"},
		{"unknown profile", true, "127.0.0.1:40000", nil, "/debug/pprof/nothing", http.StatusNotFound, "unknown profile"},
		{"bad duration", true, "127.0.0.1:40000", nil, "/debug/pprof/profile?seconds=-1", http.StatusBadRequest, "seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := serve(newServer(t, tt.pprof), tt.remote, tt.local, tt.path)
			assert.Equal(t, tt.wantCode, w.Code)
			assert.Contains(t, w.Body.String(), tt.want)
		})
	}
	t.Run("CPU profile", func(t *testing.T) {
		w := serve(newServer(t, true), "127.0.0.1:40000", nil, "/debug/pprof/profile?seconds=0.05")
		require.Equal(t, http.StatusOK, w.Code)
		assert.True(t, bytes.HasPrefix(w.Body.Bytes(), []byte{0x1f, 0x8b}), "a gzipped profile.proto")
	})
}
