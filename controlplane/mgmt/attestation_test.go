package mgmt_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/evidence"
	"github.com/attestmesh/attestmesh/controlplane/mgmt"
	"github.com/attestmesh/attestmesh/controlplane/mgmt/mgmttest"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
)

var cpMR = [32]byte{0xc0, 0x27}

// startAttested runs the management API with evidence from a simulated platform quoting cpMR
// for the server's own CA.
func startAttested(t *testing.T, configure func(*mgmt.Config)) *mgmttest.Server {
	t.Helper()
	platform, err := sim.NewPlatform(nil, sim.PlatformOptions{})
	require.NoError(t, err)
	var iss *evidence.Issuer // made once the server (and its CA) exists, before any request
	srv := mgmttest.StartWith(t, func(c *mgmt.Config) {
		c.Evidence = func(ctx context.Context, nonce [32]byte) ([]byte, error) { return iss.Issue(ctx, nonce) }
		if configure != nil {
			configure(c)
		}
	})
	iss, err = evidence.NewIssuer(evidence.IssuerConfig{
		TEE: attestapi.TEESimulation, CA: srv.Authority.Bundle()[0], SimulatedRoot: platform.Root(),
		Quoter: evidence.QuoterFunc(func(_ context.Context, rd [64]byte) ([]byte, error) {
			return platform.Quote(sim.Report{MREnclave: cpMR, ReportData: rd})
		}),
		Collateral: func(now time.Time) (dcap.Collateral, error) { return platform.Collateral(now) },
	})
	require.NoError(t, err)
	return srv
}

func hostOf(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	return u.Host
}

// get fetches path anonymously; the body of a refusal is its error message.
func get(t *testing.T, srv *mgmttest.Server, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
	require.NoError(t, err)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Roots, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var e mgmtapi.ErrorResponse
	if resp.StatusCode != http.StatusOK && json.Unmarshal(body, &e) == nil {
		return resp.StatusCode, e.Error
	}
	return resp.StatusCode, string(body)
}

func TestAttestationEndpoint(t *testing.T) {
	srv := startAttested(t, nil)
	res, err := evidence.Attest(t.Context(), hostOf(t, srv.URL), evidence.Policy{TEE: attestapi.TEESimulation, MREnclave: cpMR})
	require.NoError(t, err, "anonymous, with a fresh nonce, over the server's own TLS")
	assert.True(t, res.CA.Equal(srv.Authority.Bundle()[0]))

	for _, tt := range []struct{ query, want string }{
		{"", "want one nonce: /v1/attestation?nonce=<64 hex digits>, 32 fresh random bytes of the caller's (got 0)"},
		{"?nonce=abc", "nonce: want 64 hex digits (32 bytes), got 3 characters"},
		{"?nonce=" + strings.Repeat("zz", 32), "nonce: want 64 hex digits (32 bytes): encoding/hex: invalid byte"},
		{"?nonce=" + strings.Repeat("00", 32) + "&nonce=" + strings.Repeat("00", 32), "(got 2)"},
	} {
		code, body := get(t, srv, evidence.Path+tt.query)
		assert.Equal(t, http.StatusBadRequest, code, body)
		assert.Contains(t, body, tt.want)
	}
	got := counts(t, srv.Metrics)
	assert.InDelta(t, 1, got["get_attestation/ok"], 0)
	assert.InDelta(t, 4, got["get_attestation/invalid"], 0)
}

func TestAttestationEndpointWithoutEvidence(t *testing.T) {
	srv := mgmttest.Start(t)
	_, _, err := evidence.Fetch(t.Context(), hostOf(t, srv.URL), [32]byte{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "404 Not Found: cas: this control plane serves no attestation evidence: "+
		"it runs neither in an SGX enclave under Gramine (/dev/attestation) nor with --simulation")
}

// Every request costs a quote: each address has a small burst, then 429; and all callers
// together have their own bound.
func TestAttestationEndpointIsRateLimited(t *testing.T) {
	nonce := "?nonce=" + strings.Repeat("ab", 32)
	srv := startAttested(t, func(c *mgmt.Config) { c.EvidenceRate, c.EvidenceBurst = 0.001, 3 })
	for i := range 3 {
		code, body := get(t, srv, evidence.Path+nonce)
		require.Equal(t, http.StatusOK, code, "request %d: %s", i, body)
	}
	code, body := get(t, srv, evidence.Path+nonce)
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.Contains(t, body, "too many attestation requests: each costs a quote; at most 0.001 per second (bursts of 3) per address")
	assert.InDelta(t, 1, counts(t, srv.Metrics)["get_attestation/limit_rate"], 0)

	srv = startAttested(t, func(c *mgmt.Config) {
		c.EvidenceRate, c.EvidenceTotalRate, c.EvidenceTotalBurst = -1, 0.001, 2
	})
	for range 2 {
		code, body := get(t, srv, evidence.Path+nonce)
		require.Equal(t, http.StatusOK, code, body)
	}
	code, body = get(t, srv, evidence.Path+nonce)
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.Contains(t, body, "0.001 per second for everyone")
}
