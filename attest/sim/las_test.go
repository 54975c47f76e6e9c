package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
)

// startLAS serves p on addr until the test ends, and checks that Run stops cleanly.
func startLAS(t *testing.T, p *Platform, addr string) *LAS {
	t.Helper()
	l, err := NewLAS(t.Context(), LASConfig{Platform: p, Addr: addr})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("LAS did not stop within 10s")
		}
	})
	return l
}

func TestLASQuoteVerifies(t *testing.T) {
	p := testPlatform(t)
	tests := []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"loopback TCP", func(*testing.T) string { return "127.0.0.1:0" }},
		{"unix socket", func(t *testing.T) string {
			t.Helper()
			return "unix:" + filepath.Join(t.TempDir(), "las.sock")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.addr(t)
			l := startLAS(t, p, addr)
			if strings.HasPrefix(addr, "unix:") {
				assert.Equal(t, addr, l.Addr())
			} else {
				host, port, err := net.SplitHostPort(l.Addr())
				require.NoError(t, err)
				assert.Equal(t, "127.0.0.1", host)
				assert.NotEqual(t, "0", port)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := Client{Addr: l.Addr()}

			root, err := c.Root(ctx)
			require.NoError(t, err)
			assert.True(t, root.Equal(p.Root()))
			col, err := c.Collateral(ctx)
			require.NoError(t, err)

			r := Report{
				MREnclave: sha256.Sum256([]byte("redis")), MRSigner: [32]byte{0xaa}, ISVProdID: 2, ISVSVN: 9, Debug: true,
				ReportData: attestapi.BindReportData([]byte("spki"), [32]byte{1, 2, 3}),
			}
			q, err := c.Quote(ctx, r)
			require.NoError(t, err)
			id, err := dcap.Verify(q, col, dcap.Options{Root: root})
			require.NoError(t, err)
			assert.Equal(t, dcap.HexBytes(r.MREnclave[:]), id.MREnclave)
			assert.Equal(t, dcap.HexBytes(r.MRSigner[:]), id.MRSigner)
			assert.Equal(t, r.ISVProdID, id.ISVProdID)
			assert.Equal(t, r.ISVSVN, id.ISVSVN)
			assert.True(t, id.Debug)
			require.NoError(t, attestapi.CheckReportData(id.ReportData, []byte("spki"), [32]byte{1, 2, 3}))
		})
	}
}

func validRequest() map[string]any {
	return map[string]any{
		"mrenclave":  strings.Repeat("ab", 32),
		"mrsigner":   strings.Repeat("CD", 32),
		"isvprodid":  1,
		"isvsvn":     2,
		"debug":      false,
		"reportdata": strings.Repeat("01", 64),
	}
}

func jsonWith(t *testing.T, edit func(m map[string]any)) string {
	t.Helper()
	m := validRequest()
	edit(m)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return string(b)
}

func TestLASRefuses(t *testing.T) {
	l := startLAS(t, testPlatform(t), "127.0.0.1:0")
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		status      int
		reason      string
	}{
		{"valid", http.MethodPost, "/v1/quote", "application/json", jsonWith(t, func(map[string]any) {}), http.StatusOK, ""},
		{"bad JSON", http.MethodPost, "/v1/quote", "application/json", `{"mrenclave":`, http.StatusBadRequest, "unexpected EOF"},
		{"not an object", http.MethodPost, "/v1/quote", "application/json", `[1,2]`, http.StatusBadRequest, "cannot unmarshal array"},
		{"unknown field", http.MethodPost, "/v1/quote", "application/json",
			jsonWith(t, func(m map[string]any) { m["mrsigner_hint"] = "x" }), http.StatusBadRequest, `unknown field "mrsigner_hint"`},
		{"trailing data", http.MethodPost, "/v1/quote", "application/json",
			jsonWith(t, func(map[string]any) {}) + `{}`, http.StatusBadRequest, "data after the JSON object"},
		{"missing mrenclave", http.MethodPost, "/v1/quote", "application/json",
			jsonWith(t, func(m map[string]any) { delete(m, "mrenclave") }), http.StatusBadRequest, "mrenclave missing"},
		{"short reportdata", http.MethodPost, "/v1/quote", "application/json",
			jsonWith(t, func(m map[string]any) { m["reportdata"] = "00" }), http.StatusBadRequest, "reportdata has 2 hex digits, want 128"},
		{"bad hex", http.MethodPost, "/v1/quote", "application/json",
			jsonWith(t, func(m map[string]any) { m["mrsigner"] = strings.Repeat("zz", 32) }), http.StatusBadRequest, "mrsigner: encoding/hex"},
		{"isvsvn out of range", http.MethodPost, "/v1/quote", "application/json",
			jsonWith(t, func(m map[string]any) { m["isvsvn"] = 70000 }), http.StatusBadRequest, "isvsvn"},
		{"oversized", http.MethodPost, "/v1/quote", "application/json",
			jsonWith(t, func(m map[string]any) { m["pad"] = strings.Repeat("x", maxRequestBody) }), http.StatusRequestEntityTooLarge, "body larger than 4096 bytes"},
		{"not JSON", http.MethodPost, "/v1/quote", "text/plain", jsonWith(t, func(map[string]any) {}), http.StatusUnsupportedMediaType, "Content-Type must be application/json"},
		{"wrong method", http.MethodGet, "/v1/quote", "", "", http.StatusMethodNotAllowed, ""},
		{"unknown path", http.MethodGet, "/v1/secrets", "", "", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, tt.method, "http://"+l.Addr()+tt.path, strings.NewReader(tt.body))
			require.NoError(t, err)
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, tt.status, resp.StatusCode, string(body))
			if tt.reason == "" {
				return
			}
			var e errorResponse
			require.NoError(t, json.Unmarshal(body, &e), string(body))
			assert.Contains(t, e.Error, tt.reason)
			assert.True(t, strings.HasPrefix(e.Error, "sim: "), e.Error)
		})
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestClientErrors(t *testing.T) {
	l := startLAS(t, testPlatform(t), "127.0.0.1:0")
	// A port that nothing listens on: bind one and release it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close())

	tests := []struct {
		name string
		addr string
		want string
	}{
		{"nothing listening", closed, "connection refused"},
		{"no socket", "unix:" + filepath.Join(t.TempDir(), "none.sock"), "no such file"},
		{"empty socket path", "unix:", "empty socket path"},
		{"no port", "localhost", "want host:port or unix:/path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := Client{Addr: tt.addr}.Quote(ctx, Report{})
			require.ErrorContains(t, err, tt.want)
			assert.ErrorContains(t, err, "sim: ")
		})
	}
	t.Run("server error is reported", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := Client{Addr: l.Addr()}
		var out quoteResponse
		err := c.do(ctx, http.MethodPost, "/v1/quote", []byte(`{"x":1}`), &out)
		require.ErrorContains(t, err, `400 Bad Request: sim: quote request: json: unknown field "x"`)
	})
}

func TestNewLAS(t *testing.T) {
	p := testPlatform(t)
	dir := t.TempDir()
	regular := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(regular, []byte("x"), 0o600))

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	require.NoError(t, err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, ln.Close())
	_, err = os.Lstat(stale)
	require.NoError(t, err, "the stale socket file stays behind")

	tests := []struct {
		name string
		cfg  LASConfig
		want string
	}{
		{"no platform", LASConfig{Addr: "127.0.0.1:0"}, "sim: LAS: no platform configured"},
		{"bad address", LASConfig{Platform: p, Addr: "127.0.0.1"}, "want host:port or unix:/path"},
		{"file in the way", LASConfig{Platform: p, Addr: "unix:" + regular}, "not a socket"},
		{"stale socket replaced", LASConfig{Platform: p, Addr: "unix:" + stale}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := NewLAS(t.Context(), tt.cfg)
			if tt.want != "" {
				require.ErrorContains(t, err, tt.want)
				return
			}
			require.NoError(t, err)
			require.NoError(t, l.Close())
			require.NoError(t, l.Close(), "Close is idempotent")
		})
	}
}

func TestResolveLASAddr(t *testing.T) {
	tests := []struct {
		name, flag, env, want string
	}{
		{"default", "", "", DefaultLASAddr},
		{"environment", "", "unix:/run/attestmesh/las.sock", "unix:/run/attestmesh/las.sock"},
		{"flag wins", "127.0.0.1:9999", "unix:/run/attestmesh/las.sock", "127.0.0.1:9999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(LASAddrEnv, tt.env)
			assert.Equal(t, tt.want, ResolveLASAddr(tt.flag))
		})
	}
}

func TestQuoteRequestRoundTrip(t *testing.T) {
	r := Report{MREnclave: [32]byte{1}, MRSigner: [32]byte{31: 2}, ISVProdID: 3, ISVSVN: 4, Debug: true, ReportData: [64]byte{5}}
	b, err := json.Marshal(encodeQuoteRequest(r))
	require.NoError(t, err)
	got, err := decodeQuoteRequest(bytes.NewReader(b))
	require.NoError(t, err)
	assert.Equal(t, r, got)
}

func FuzzDecodeQuoteRequest(f *testing.F) {
	valid, err := json.Marshal(validRequest())
	require.NoError(f, err)
	f.Add(valid)
	f.Add([]byte(`{"mrenclave":"00","unknown":1}`))
	f.Add([]byte(`{"isvsvn":-1}`))
	f.Add([]byte(`{}{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeQuoteRequest(bytes.NewReader(b))
		if err != nil {
			assert.True(t, strings.HasPrefix(err.Error(), "sim: quote request: "), err.Error())
			return
		}
		// Whatever is accepted re-encodes to an equivalent request.
		again, err := json.Marshal(encodeQuoteRequest(r))
		require.NoError(t, err)
		r2, err := decodeQuoteRequest(bytes.NewReader(again))
		require.NoError(t, err)
		assert.Equal(t, r, r2)
	})
}
