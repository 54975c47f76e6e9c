package evidence_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/attestation"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/evidence"
)

// vectorDir holds the real Intel SGX DCAP vectors, shared by the project and not copied here.
const vectorDir = "../../../shared/testdata/sgx-dcap"

// The measurement the simulated control planes of these tests run.
var ourMR = [32]byte{0x0c, 0x0b}

// cp is a control plane's attestation side as the tests need it: a real CA, a simulated
// platform, an Issuer, and a real HTTPS server (certificate from the CA) serving the evidence.
type cp struct {
	authority *ca.Authority
	platform  *sim.Platform
	issuer    *evidence.Issuer
	addr      string
}

func newAuthority(tb testing.TB) *ca.Authority {
	tb.Helper()
	a, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("attestmesh.local")})
	require.NoError(tb, err)
	return a
}

func newPlatform(tb testing.TB, opts sim.PlatformOptions) *sim.Platform {
	tb.Helper()
	p, err := sim.NewPlatform(nil, opts)
	require.NoError(tb, err)
	return p
}

// newIssuer quotes report (its ReportData filled in) on platform for authority's CA.
func newIssuer(tb testing.TB, a *ca.Authority, p *sim.Platform, report sim.Report) *evidence.Issuer {
	tb.Helper()
	iss, err := evidence.NewIssuer(evidence.IssuerConfig{
		TEE: attestapi.TEESimulation, CA: a.Bundle()[0], SimulatedRoot: p.Root(),
		Quoter: evidence.QuoterFunc(func(_ context.Context, rd [64]byte) ([]byte, error) {
			r := report
			r.ReportData = rd
			return p.Quote(r)
		}),
		Collateral: func(now time.Time) (dcap.Collateral, error) { return p.Collateral(now) },
	})
	require.NoError(tb, err)
	return iss
}

// serve serves h over HTTPS on loopback with a server certificate from a.
func serve(t *testing.T, a *ca.Authority, h http.Handler) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	cert, err := a.IssueServerCert(key.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// handler serves an issuer the way the management API does (without its limits).
func handler(iss *evidence.Issuer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+evidence.Path, func(w http.ResponseWriter, r *http.Request) {
		var nonce [32]byte
		if n, err := hex.Decode(nonce[:], []byte(r.URL.Query().Get("nonce"))); err != nil || n != 32 {
			http.Error(w, `{"error":"bad nonce"}`, http.StatusBadRequest)
			return
		}
		body, err := iss.Issue(r.Context(), nonce)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(body)
	})
	return mux
}

func startCP(t *testing.T, opts sim.PlatformOptions, report sim.Report) *cp {
	t.Helper()
	c := &cp{authority: newAuthority(t), platform: newPlatform(t, opts)}
	c.issuer = newIssuer(t, c.authority, c.platform, report)
	c.addr = serve(t, c.authority, handler(c.issuer))
	return c
}

func simPolicy() evidence.Policy {
	return evidence.Policy{TEE: attestapi.TEESimulation, MREnclave: ourMR}
}

func TestAttestAcceptsTheRealControlPlane(t *testing.T) {
	c := startCP(t, sim.PlatformOptions{}, sim.Report{MREnclave: ourMR})
	res, err := evidence.Attest(t.Context(), c.addr, simPolicy())
	require.NoError(t, err)
	assert.Equal(t, attestapi.TEESimulation, res.TEE)
	assert.True(t, res.CA.Equal(c.authority.Bundle()[0]), "the attested CA is the control plane's")
	assert.True(t, res.Root.Equal(c.platform.Root()))
	assert.True(t, res.RootFromEvidence, "no root was pinned")
	assert.Equal(t, hex.EncodeToString(ourMR[:]), res.Identity.MREnclave.String())
	assert.Equal(t, dcap.TCBUpToDate, res.Identity.TCBStatus)
	require.NotNil(t, res.Server)
	require.NoError(t, res.Server.CheckSignatureFrom(res.CA))

	// With the simulated root pinned, the same.
	p := simPolicy()
	p.Root = c.platform.Root()
	res, err = evidence.Attest(t.Context(), c.addr, p)
	require.NoError(t, err)
	assert.False(t, res.RootFromEvidence)
}

// TestAttestRefuses: every check of Verify, each refusal saying what differs.
func TestAttestRefuses(t *testing.T) {
	tests := []struct {
		name   string
		opts   sim.PlatformOptions
		report sim.Report
		policy func(c *cp) evidence.Policy
		want   []string
	}{
		{"another binary", sim.PlatformOptions{}, sim.Report{MREnclave: [32]byte{0xee}}, func(*cp) evidence.Policy { return simPolicy() },
			[]string{"the control plane's measurement differs: expected MRENCLAVE " + hex.EncodeToString(ourMR[:]) +
				", got ee00000000000000000000000000000000000000000000000000000000000000"}},
		{"debug enclave", sim.PlatformOptions{}, sim.Report{MREnclave: ourMR, Debug: true}, func(*cp) evidence.Policy { return simPolicy() },
			[]string{"runs in a debug enclave"}},
		{"hardware required", sim.PlatformOptions{}, sim.Report{MREnclave: ourMR}, func(*cp) evidence.Policy {
			p := simPolicy()
			p.TEE = attestapi.TEESGX
			return p
		}, []string{"presented simulated evidence, but hardware (sgx) evidence was required"}},
		{"another simulated platform than the pinned one", sim.PlatformOptions{}, sim.Report{MREnclave: ourMR}, func(*cp) evidence.Policy {
			p := simPolicy()
			p.Root = newPlatform(t, sim.PlatformOptions{}).Root()
			return p
		}, []string{"the simulated root differs from the pinned one: pinned SHA-256 ", ", the control plane's "}},
		{"revoked PCK certificate", sim.PlatformOptions{RevokedPCK: true}, sim.Report{MREnclave: ourMR}, func(*cp) evidence.Policy { return simPolicy() },
			[]string{"the control plane's quote does not verify", "revoked"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startCP(t, tt.opts, tt.report)
			_, err := evidence.Attest(t.Context(), c.addr, tt.policy(c))
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// TestReplayedEvidence: evidence fetched for one nonce does not pass for another.
func TestReplayedEvidence(t *testing.T) {
	c := startCP(t, sim.PlatformOptions{}, sim.Report{MREnclave: ourMR})
	first, err := evidence.NewNonce()
	require.NoError(t, err)
	ev, peer, err := evidence.Fetch(t.Context(), c.addr, first)
	require.NoError(t, err)
	_, err = evidence.Verify(t.Context(), ev, first, peer, simPolicy())
	require.NoError(t, err, "for the nonce it was made for")

	second, err := evidence.NewNonce()
	require.NoError(t, err)
	_, err = evidence.Verify(t.Context(), ev, second, peer, simPolicy())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "REPORTDATA does not carry this request's nonce: got "+hex.EncodeToString(first[:])+
		", sent "+hex.EncodeToString(second[:])+" (evidence replayed from an earlier request)")
}

// TestEvidenceForAnotherCA: a quote that binds one CA, served with another.
func TestEvidenceForAnotherCA(t *testing.T) {
	real, other := newAuthority(t), newAuthority(t)
	p := newPlatform(t, sim.PlatformOptions{})
	nonce, err := evidence.NewNonce()
	require.NoError(t, err)
	rd := evidence.ReportData(real.Bundle()[0], nonce)
	quote, err := p.Quote(sim.Report{MREnclave: ourMR, ReportData: rd})
	require.NoError(t, err)
	coll, err := p.Collateral(time.Now())
	require.NoError(t, err)
	ev := &evidence.Evidence{TEE: attestapi.TEESimulation, Quote: quote, CA: other.Bundle()[0], SimulatedRoot: p.Root(), Collateral: &coll}
	_, err = evidence.Verify(t.Context(), ev, nonce, other.Bundle(), simPolicy())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "REPORTDATA does not bind the CA that the evidence carries: its first 32 bytes are "+hex.EncodeToString(rd[:32]))
	otherRD := evidence.ReportData(other.Bundle()[0], nonce)
	assert.Contains(t, err.Error(), "is "+hex.EncodeToString(otherRD[:32]))
}

// TestRelayNotChainingToTheAttestedCA: a TLS server with a certificate from another CA relays
// the real control plane's evidence (fresh nonce and all); the TLS check refuses it.
func TestRelayNotChainingToTheAttestedCA(t *testing.T) {
	c := startCP(t, sim.PlatformOptions{}, sim.Report{MREnclave: ourMR})
	target, err := url.Parse("https://" + c.addr)
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.CertPool(c.authority.Bundle()), MinVersion: tls.VersionTLS12}}
	mitm := newAuthority(t)
	relay := serve(t, mitm, proxy)

	_, err = evidence.Attest(t.Context(), relay, simPolicy())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `the TLS server certificate (subject "CN=localhost,O=attestmesh", issuer "CN=attestmesh CA attestmesh.local,O=attestmesh") `+
		`does not chain to the attested CA "CN=attestmesh CA attestmesh.local,O=attestmesh" (SHA-256 `+evidence.Fingerprint(c.authority.Bundle()[0])+")")
	assert.Contains(t, err.Error(), "certificate signed by unknown authority")

	// The same relay, for comparison, passes every check before the TLS one.
	_, err = evidence.Attest(t.Context(), c.addr, simPolicy())
	require.NoError(t, err)
}

// TestHardwareVector runs the hardware path with the real SGX v3 quote (an unrelated enclave's,
// from Intel's collateral test vectors): the DCAP verifier accepts the quote against Intel's
// root, and the refusal is the truth: its REPORTDATA binds neither our CA nor our nonce.
func TestHardwareVector(t *testing.T) {
	if _, err := os.Stat(vectorDir); err != nil {
		t.Skipf("real SGX DCAP vectors not available at %s (%v): skipping", vectorDir, err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(vectorDir, name))
		require.NoError(t, err)
		return b
	}
	quote := read("quote_v3_ecdsa_p256_pck_chain.bin")
	coll := dcap.Collateral{TCBInfo: read("tcb_info_v3_fmspc_00606A000000.json"), QEIdentity: read("qe_identity_v2.json"),
		TCBSignChain: read("tcb_info_v3_fmspc_00606A000000_certs.pem")}
	a := newAuthority(t)
	ev := &evidence.Evidence{TEE: attestapi.TEESGX, Quote: quote, CA: a.Bundle()[0]}
	raw, err := ev.Marshal()
	require.NoError(t, err)
	ev, err = evidence.Parse(raw)
	require.NoError(t, err, "hardware evidence round-trips")
	mr, err := hex.DecodeString("68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f")
	require.NoError(t, err)
	var fmspcAsked string
	policy := evidence.Policy{
		TEE: attestapi.TEESGX,
		Collateral: func(_ context.Context, fmspc string) (dcap.Collateral, error) {
			fmspcAsked = fmspc
			return coll, nil
		},
		// The vectors' collateral is valid at this time only, and comes without Intel's CRLs.
		Now: time.Unix(1671497404, 0), SkipRevocation: true,
	}
	copy(policy.MREnclave[:], mr)
	nonce, err := evidence.NewNonce()
	require.NoError(t, err)

	_, err = evidence.Verify(t.Context(), ev, nonce, a.Bundle(), policy)
	require.Error(t, err)
	assert.Equal(t, "00606A000000", fmspcAsked, "collateral is looked up by the PCK certificate's FMSPC")
	assert.Contains(t, err.Error(), "REPORTDATA does not bind the CA that the evidence carries, nor this request's nonce: its first 32 bytes are "+
		"026a69ced96c3e0295d16d6b388e057a137a14319671662a5844c7472f3c62ae")

	// Another expected measurement: refused at the MRENCLAVE, both named.
	policy.MREnclave = ourMR
	_, err = evidence.Verify(t.Context(), ev, nonce, a.Bundle(), policy)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "expected MRENCLAVE "+hex.EncodeToString(ourMR[:])+", got 68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f")

	// With the collateral read as the control plane reads --collateral-dir, revocation is
	// checked, and the vectors have no CRLs: refused, saying so.
	dir := t.TempDir()
	for name, b := range map[string][]byte{"tcb_info_00606A000000.json": coll.TCBInfo, "qe_identity.json": coll.QEIdentity, "tcb_chain.pem": coll.TCBSignChain} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
	policy.MREnclave, policy.SkipRevocation = [32]byte(mr), false
	policy.Collateral = attestation.DirCollateral{Dir: dir}.Collateral
	_, err = evidence.Verify(t.Context(), ev, nonce, a.Bundle(), policy)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "collateral for the control plane's platform (FMSPC 00606A000000)")
	assert.Contains(t, err.Error(), "revocation cannot be checked")

	// Simulated evidence is no way around it.
	policy.Collateral = nil
	_, err = evidence.Verify(t.Context(), ev, nonce, a.Bundle(), policy)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "hardware evidence needs Intel's collateral")
}

func TestParseRefuses(t *testing.T) {
	a := newAuthority(t)
	p := newPlatform(t, sim.PlatformOptions{})
	body, err := newIssuer(t, a, p, sim.Report{MREnclave: ourMR}).Issue(t.Context(), [32]byte{1})
	require.NoError(t, err)
	_, err = evidence.Parse(body)
	require.NoError(t, err)
	change := func(f func(m map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(body, &m))
		f(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	leaf, err := ca.ParseCertsPEM(serverCertPEM(t, a))
	require.NoError(t, err)
	tests := []struct {
		name string
		doc  []byte
		want string
	}{
		{"not JSON", []byte("<html>"), "evidence: not a JSON evidence document"},
		{"too large", make([]byte, evidence.MaxSize+1), "more than 1048576"},
		{"version", change(func(m map[string]any) { m["version"] = 2 }), "evidence: version 2, want 1"},
		{"tee", change(func(m map[string]any) { m["tee"] = "tdx" }), `evidence: tee "tdx", want "sgx" or "simulation"`},
		{"no quote", change(func(m map[string]any) { delete(m, "quote") }), "evidence: no quote"},
		{"bad quote", change(func(m map[string]any) { m["quote"] = "AAAA" }), "evidence: quote: dcap:"},
		{"no CA", change(func(m map[string]any) { delete(m, "ca_bundle") }), "evidence: ca_bundle missing"},
		{"two CAs", change(func(m map[string]any) { m["ca_bundle"] = m["ca_bundle"].(string) + m["ca_bundle"].(string) }),
			"evidence: ca_bundle holds 2 certificates, want exactly one"},
		{"a leaf for a CA", change(func(m map[string]any) { m["ca_bundle"] = string(ca.MarshalCertsPEM(leaf[0])) }),
			"is not a CA certificate"},
		{"simulation without root", change(func(m map[string]any) { delete(m, "simulated_root") }), "evidence: simulated_root missing"},
		{"simulation without collateral", change(func(m map[string]any) { delete(m, "collateral") }), "simulated evidence without its collateral"},
		{"hardware with a simulated root", change(func(m map[string]any) { m["tee"] = "sgx" }),
			`evidence: tee "sgx" with a simulated root or collateral`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := evidence.Parse(tt.doc)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func serverCertPEM(t *testing.T, a *ca.Authority) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	cert, err := a.IssueServerCert(key.Public(), []string{"localhost"}, nil, 0)
	require.NoError(t, err)
	return ca.MarshalCertsPEM(cert)
}

func TestFetchSaysWhatTheServerSaid(t *testing.T) {
	a := newAuthority(t)
	addr := serve(t, a, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error": "this control plane serves no attestation evidence"}`))
	}))
	_, _, err := evidence.Fetch(t.Context(), addr, [32]byte{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/v1/attestation?nonce="+strings.Repeat("00", 32)+": 404 Not Found: this control plane serves no attestation evidence")

	_, _, err = evidence.Fetch(t.Context(), "no-port", [32]byte{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `evidence: control plane address "no-port": want host:port`)
}

// TestIssuerBoundsConcurrentQuotes: no more than MaxConcurrent quotes at once, and a caller
// who gives up waiting gets an error, not a quote.
func TestIssuerBoundsConcurrentQuotes(t *testing.T) {
	a := newAuthority(t)
	release := make(chan struct{})
	inside := make(chan struct{}, 10)
	iss, err := evidence.NewIssuer(evidence.IssuerConfig{TEE: attestapi.TEESGX, CA: a.Bundle()[0], MaxConcurrent: 1,
		Quoter: evidence.QuoterFunc(func(context.Context, [64]byte) ([]byte, error) {
			inside <- struct{}{}
			<-release
			return []byte("q"), nil
		})})
	require.NoError(t, err)
	var g errgroup.Group
	g.Go(func() error { _, err := iss.Issue(t.Context(), [32]byte{}); return err })
	<-inside
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = iss.Issue(ctx, [32]byte{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "evidence: waiting to quote: context deadline exceeded")
	close(release)
	require.NoError(t, g.Wait())
}

// TestEvidenceMissingSimulatedParts: Evidence built by a caller rather than Parse, without the
// simulated root or collateral, is refused with what is missing (not a nil dereference).
func TestEvidenceMissingSimulatedParts(t *testing.T) {
	c := startCP(t, sim.PlatformOptions{}, sim.Report{MREnclave: ourMR})
	nonce, err := evidence.NewNonce()
	require.NoError(t, err)
	ev, peer, err := evidence.Fetch(t.Context(), c.addr, nonce)
	require.NoError(t, err)
	for name, strip := range map[string]func(e *evidence.Evidence){
		"no root":       func(e *evidence.Evidence) { e.SimulatedRoot = nil },
		"no collateral": func(e *evidence.Evidence) { e.Collateral = nil },
	} {
		t.Run(name, func(t *testing.T) {
			e := *ev
			strip(&e)
			_, err := evidence.Verify(t.Context(), &e, nonce, peer, simPolicy())
			require.Error(t, err)
			assert.Contains(t, err.Error(), "simulated evidence without its simulated root or collateral")
		})
	}
}
