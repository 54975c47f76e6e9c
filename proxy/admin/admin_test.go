package admin_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/attestmesh/attestmesh/proxy/admin"
	"github.com/attestmesh/attestmesh/proxy/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	require.NoError(t, err)
	m.AuthzDenials.WithLabelValues("inbound|8443").Inc()
	ready, reason := false, `listener "inbound|8443" is warming: waiting for secret "svid"`
	s, err := admin.New(admin.Config{
		Ready:      func() (bool, string) { return ready, reason },
		ConfigDump: func() any { return map[string]string{"node": "spiffe://attestmesh.local/app/server"} },
		Gatherer:   reg,
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
