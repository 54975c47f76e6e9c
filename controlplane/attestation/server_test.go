package attestation_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/attestation"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/session"
	"github.com/attestmesh/attestmesh/controlplane/store/storetest"
	"github.com/attestmesh/attestmesh/proxy/proxytest"
)

// platformQuotes quotes directly on a simulated platform: the LAS is a thin HTTP wrapper over
// the same call, tested in attest/sim.
type platformQuotes struct{ p *sim.Platform }

func (q platformQuotes) Quote(_ context.Context, r sim.Report) ([]byte, error) { return q.p.Quote(r) }

type fixture struct {
	client   *attestapi.Client
	raw      attestationpb.AttestationClient
	platform *sim.Platform
	auth     *ca.Authority
	reg      *prometheus.Registry
	cas      *cas.CAS
	owner    cas.Client
	sidecar  [32]byte
	log      *proxytest.SyncBuffer
	addr     string // the attestation API's
}

// fixtureOptions change what newFixtureWith sets up.
type fixtureOptions struct {
	platform       sim.PlatformOptions
	peerRate       float64
	peerBurst      int
	replayCapacity int
}

var (
	pythonMR = [32]byte{1, 2, 3}
	redisMR  = [32]byte{4, 5, 6}
)

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	return newFixtureWith(tb, fixtureOptions{})
}

func newFixtureWith(tb testing.TB, opts fixtureOptions) *fixture {
	tb.Helper()
	f := &fixture{reg: prometheus.NewRegistry(), cas: cas.New(cas.Config{Store: storetest.Open(tb)}), sidecar: [32]byte{9, 9}, log: &proxytest.SyncBuffer{}}
	var err error
	f.auth, err = ca.NewAuthority(ca.AuthorityConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("attestmesh.local")})
	require.NoError(tb, err)
	f.platform, err = sim.NewPlatform(rand.Reader, opts.platform)
	require.NoError(tb, err)
	f.owner = cas.Client{ID: "owner"}

	verifier := &attestation.Verifier{
		Simulation: attestation.TrustAnchor{Root: f.platform.Root(), Collateral: &attestation.CachedCollateral{TTL: time.Minute, Source: attestation.CollateralFunc(
			func(context.Context, string) (dcap.Collateral, error) { return f.platform.Collateral(time.Now()) })}},
	}
	srv, err := attestation.NewServer(attestation.Config{
		CAS: f.cas, Authority: f.auth, Verifier: verifier, Metrics: attestation.NewMetrics(f.reg), MACKey: bytes.Repeat([]byte{7}, 32),
		SVIDTTL: 10 * time.Minute, XDSAddress: "127.0.0.1:18000", SidecarMREnclaves: [][32]byte{f.sidecar},
		PeerRate: opts.peerRate, PeerBurst: opts.peerBurst, ReplayCapacity: opts.replayCapacity, Logger: slog.New(slog.NewTextHandler(f.log, nil)),
	})
	require.NoError(tb, err)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	cert, err := f.auth.IssueServerCert(srvKey.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	require.NoError(tb, err)
	g := grpc.NewServer(append(attestation.GRPCServerOptions(), grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: srvKey}},
	})))...)
	attestationpb.RegisterAttestationServer(g, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	go func() { _ = g.Serve(ln) }()
	tb.Cleanup(g.Stop)

	f.addr = ln.Addr().String()
	f.client, err = attestapi.Dial(attestapi.ClientConfig{Addr: f.addr, Bundle: f.auth.Bundle(), Quotes: platformQuotes{f.platform}})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = f.client.Close() })
	pool := x509.NewCertPool()
	pool.AddCert(f.auth.Bundle()[0])
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13})))
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = conn.Close() })
	f.raw = attestationpb.NewAttestationClient(conn)
	return f
}

func (f *fixture) createExample(tb testing.TB, mode string, mutate func(string) string) {
	tb.Helper()
	vars := map[string]string{
		"REDIS_SESSION": "demo/redis", "FLASK_SESSION": "demo/flask", "ATTESTATION_MODE": mode,
		"REDIS_MRENCLAVE": hexOf(redisMR), "PYTHON_MRENCLAVE": hexOf(pythonMR),
		"API_FSPF_PATH": "/app", "API_FSPF_KEY": strings.Repeat("c", 64), "API_FSPF_TAG": strings.Repeat("d", 64),
	}
	if _, err := f.cas.Get(context.Background(), "demo", f.owner); err != nil {
		_, err = f.cas.Create(context.Background(), []byte("name: demo\nversion: \"0.3\"\n"), f.owner)
		require.NoError(tb, err, "namespace demo")
	}
	for _, file := range []string{"redis-session.yaml", "flask-session.yaml"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "examples", "flask-redis", file))
		require.NoError(tb, err)
		doc, err := session.Expand(raw, vars)
		require.NoError(tb, err)
		if mutate != nil {
			doc = []byte(mutate(string(doc)))
		}
		_, err = f.cas.Create(context.Background(), doc, f.owner)
		require.NoError(tb, err)
	}
}

func hexOf(b [32]byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 64)
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}

func newKey(tb testing.TB) crypto.Signer {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	return k
}

func TestAttestAppReceivesConfigAndSVID(t *testing.T) {
	f := newFixture(t)
	f.createExample(t, "simulation", nil)
	key := newKey(t)
	res, err := f.client.Attest(context.Background(), app("demo/flask/flask_restapi", key, pythonMR))
	require.NoError(t, err)
	assert.NotEmpty(t, res.SidecarGrant, "an attested app gets a grant for its sidecar")

	assert.Equal(t, "spiffe://attestmesh.local/demo/flask/flask_restapi", res.ID.String())
	assert.Equal(t, "simulation", res.TEE)
	svid, err := x509svid.ParseRaw(res.SVID[0].Raw, mustMarshalKey(t, key))
	require.NoError(t, err)
	assert.Equal(t, res.ID, svid.ID)
	assert.Equal(t, attestapi.TEESimulation, attestapi.TEEOf(res.SVID[0]), "a simulated identity is marked in the certificate")

	require.NotNil(t, res.Config)
	paths := []string{}
	for _, file := range res.Config.GetFiles() {
		paths = append(paths, file.GetPath())
	}
	assert.ElementsMatch(t, []string{"/tls/flask.crt", "/tls/flask.key", "/tls/redis-ca.crt", "/tls/client.crt", "/tls/client.key"}, paths)
	assert.Equal(t, "/app", res.Config.GetDir())

	assert.InDelta(t, 1, f.counter(t, "ok", "", "simulation", "app"), 0)
}

func app(configID string, key crypto.Signer, mr [32]byte) attestapi.Request {
	return attestapi.Request{ConfigID: configID, Role: attestationpb.Role_ROLE_APP, Key: key, Evidence: attestapi.Evidence{MREnclave: mr}}
}

func sidecar(configID string, key crypto.Signer, mr [32]byte) attestapi.Request {
	return attestapi.Request{ConfigID: configID, Role: attestationpb.Role_ROLE_SIDECAR, Key: key, Evidence: attestapi.Evidence{MREnclave: mr}}
}

type request = attestapi.Request

func withGrantOf(r request, g []byte) request {
	r.SidecarGrant = g
	return r
}

func mustMarshalKey(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	return der
}

// counter reads attestmesh_attestations_total with the given labels from the registry.
func (f *fixture) counter(t *testing.T, result, reason, tee, role string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "attestmesh_attestations_total" {
			continue
		}
		for _, metric := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["result"] == result && labels["reason"] == reason && labels["tee"] == tee && labels["role"] == role {
				return metric.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestAttestRefusals(t *testing.T) {
	tests := []struct {
		name     string
		mode     string
		mutate   func(string) string
		configID string
		role     attestationpb.Role
		ev       attestapi.Evidence
		reason   attestapi.Reason
		// publicReason is the reason the caller is told when it differs from the logged one.
		publicReason attestapi.Reason
		msg          string // what the caller is told
		logged       string // what only the log says (the policy's allowed values)
	}{
		{
			name: "wrong mrenclave", mode: "simulation", configID: "demo/flask/flask_restapi", role: attestationpb.Role_ROLE_APP,
			ev: attestapi.Evidence{MREnclave: redisMR}, reason: attestapi.ReasonMREnclave,
			msg:    "attestation refused (mrenclave_mismatch): mrenclave " + hexOf(redisMR) + ` is not accepted by service "flask_restapi"`,
			logged: "session allows [" + hexOf(pythonMR) + "]",
		},
		{
			name: "debug enclave without debug-mode", mode: "simulation", configID: "demo/flask/flask_restapi", role: attestationpb.Role_ROLE_APP,
			mutate: func(s string) string { return strings.Replace(s, "tolerate: [debug-mode, ", "tolerate: [", 1) },
			ev:     attestapi.Evidence{MREnclave: pythonMR, Debug: true}, reason: attestapi.ReasonDebug,
			msg:    "attestation refused (debug_not_tolerated): the enclave runs in debug mode, which the session does not tolerate",
			logged: `the session does not tolerate "debug-mode"`,
		},
		{
			name: "simulated quote for a hardware session", mode: "hardware", configID: "demo/flask/flask_restapi", role: attestationpb.Role_ROLE_APP,
			ev: attestapi.Evidence{MREnclave: pythonMR}, reason: attestapi.ReasonSimulationForbidden,
			msg: "simulated quote for a session that requires hardware attestation",
		},
		{
			name: "unknown service", mode: "simulation", configID: "demo/flask/nope", role: attestationpb.Role_ROLE_APP,
			ev: attestapi.Evidence{MREnclave: pythonMR}, reason: attestapi.ReasonUnknownService,
			msg:    `attestation refused (unknown_service): config ID "demo/flask/nope" names no session and service known here`,
			logged: "(services: flask_restapi)",
		},
		{
			name: "unknown session", mode: "simulation", configID: "demo/other/x", role: attestationpb.Role_ROLE_APP,
			// The caller is told what it would be told of an unknown service: which sessions
			// exist is nobody's business; the log and the metric say which it was.
			ev: attestapi.Evidence{MREnclave: pythonMR}, reason: attestapi.ReasonUnknownSession, publicReason: attestapi.ReasonUnknownService,
			msg:    `attestation refused (unknown_service): config ID "demo/other/x" names no session and service known here`,
			logged: `session "demo/other" does not exist`,
		},
		{
			name: "sidecar with the app's measurement", mode: "simulation", configID: "demo/flask/flask_restapi", role: attestationpb.Role_ROLE_SIDECAR,
			ev: attestapi.Evidence{MREnclave: pythonMR}, reason: attestapi.ReasonSidecarMeasurement,
			msg:    "attestation refused (sidecar_measurement): sidecar mrenclave " + hexOf(pythonMR) + ` is not accepted for service "flask_restapi"`,
			logged: "allows [" + hexOf([32]byte{9, 9}) + "]",
		},
		{
			name: "sidecar without a grant", mode: "simulation", configID: "demo/flask/flask_restapi", role: attestationpb.Role_ROLE_SIDECAR,
			ev: attestapi.Evidence{MREnclave: [32]byte{9, 9}}, reason: attestapi.ReasonSidecarGrant,
			msg: "a sidecar needs the grant that an attested app of demo/flask/flask_restapi handed it, or, to renew, the SVID it holds",
		},
		{
			name: "import its exporter no longer grants", mode: "simulation", configID: "demo/flask/flask_restapi", role: attestationpb.Role_ROLE_APP,
			ev: attestapi.Evidence{MREnclave: pythonMR}, reason: attestapi.ReasonImport,
			msg:    "attestation refused (import_refused): the session imports a secret that its exporter does not grant (any more)",
			logged: `session "demo/flask" imports secret "redis_client_key" from session "demo/redis": the secret is not exported to this session`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.createExample(t, tt.mode, tt.mutate)
			if tt.reason == attestapi.ReasonImport {
				f.stopExporting(t)
			}
			_, err := f.client.Attest(context.Background(), attestapi.Request{ConfigID: tt.configID, Role: tt.role, Key: newKey(t), Evidence: tt.ev})
			require.Error(t, err)
			public := tt.reason
			if tt.publicReason != "" {
				public = tt.publicReason
			}
			assert.Equal(t, public, attestapi.RefusalReason(err))
			assert.Contains(t, err.Error(), tt.msg)
			if tt.logged != "" {
				assert.NotContains(t, err.Error(), tt.logged, "the caller is not told what the policy allows")
				assert.Contains(t, strings.ReplaceAll(f.log.String(), `\"`, `"`), tt.logged, "the log is")
			}
			roleLabel := map[attestationpb.Role]string{attestationpb.Role_ROLE_APP: "app", attestationpb.Role_ROLE_SIDECAR: "sidecar"}[tt.role]
			tee := "simulation"
			if tt.reason == attestapi.ReasonSimulationForbidden || tt.reason == attestapi.ReasonUnknownService || tt.reason == attestapi.ReasonUnknownSession || tt.reason == attestapi.ReasonImport {
				tee = "none"
			}
			assert.InDelta(t, 1, f.counter(t, "refused", string(tt.reason), tee, roleLabel), 0, "refusal counted by reason")
		})
	}
}

// stopExporting updates the Redis session so that it exports nothing to the Flask session.
func (f *fixture) stopExporting(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	cur, err := f.cas.Get(ctx, "demo/redis", f.owner)
	require.NoError(t, err)
	doc := strings.ReplaceAll(string(cur.Document), "- session: demo/flask", "- session: demo/elsewhere")
	_, err = f.cas.Update(ctx, append([]byte("predecessor: "+cur.Hash+"\n"), doc...), f.owner)
	require.NoError(t, err)
}

// A sidecar gets its service's SVID with its accepted measurement and the grant of an attested
// app of that service; it renews on the SVID it holds; a grant counts once and for its own
// service only.
func TestAttestSidecarNeedsAGrant(t *testing.T) {
	f := newFixture(t)
	f.createExample(t, "simulation", nil)
	ctx := context.Background()
	appRes, err := f.client.Attest(ctx, app("demo/redis/redis", newKey(t), redisMR))
	require.NoError(t, err)

	wrong := sidecar("demo/flask/flask_restapi", newKey(t), f.sidecar)
	wrong.SidecarGrant = appRes.SidecarGrant
	_, err = f.client.Attest(ctx, wrong)
	require.ErrorContains(t, err, `the sidecar grant is for config ID "demo/redis/redis", not "demo/flask/flask_restapi"`)

	key := newKey(t)
	req := sidecar("demo/redis/redis", key, f.sidecar)
	req.SidecarGrant = appRes.SidecarGrant
	res, err := f.client.Attest(ctx, req)
	require.NoError(t, err)
	assert.Nil(t, res.Config, "a sidecar gets no service configuration or secrets")
	assert.Empty(t, res.SidecarGrant)
	assert.Equal(t, "127.0.0.1:18000", res.XDSAddr)
	assert.Equal(t, "spiffe://attestmesh.local/demo/redis/redis", res.ID.String())

	_, err = f.client.Attest(ctx, withGrantOf(sidecar("demo/redis/redis", newKey(t), f.sidecar), appRes.SidecarGrant))
	require.ErrorContains(t, err, "the sidecar grant was used already")

	renew := sidecar("demo/redis/redis", key, f.sidecar)
	renew.CurrentSVID = res.SVID
	renewed, err := f.client.Attest(ctx, renew)
	require.NoError(t, err, "a renewal shows the SVID it holds, with the same key")
	assert.NotEqual(t, res.SVID[0].SerialNumber, renewed.SVID[0].SerialNumber)

	stolen := sidecar("demo/redis/redis", newKey(t), f.sidecar)
	stolen.CurrentSVID = res.SVID
	_, err = f.client.Attest(ctx, stolen)
	require.ErrorContains(t, err, "current_svid holds another key than the CSR")

	other := sidecar("demo/flask/flask_restapi", key, f.sidecar)
	other.CurrentSVID = res.SVID
	_, err = f.client.Attest(ctx, other)
	require.ErrorContains(t, err, "current_svid is for spiffe://attestmesh.local/demo/redis/redis, not spiffe://attestmesh.local/demo/flask/flask_restapi")
	assert.InDelta(t, 4, f.counter(t, "refused", string(attestapi.ReasonSidecarGrant), "simulation", "sidecar"), 0)
}

// A session names its sidecars' measurements: then only those carry the identity (the
// control plane's own build no longer does).
func TestAttestSidecarMeasurementFromTheSession(t *testing.T) {
	f := newFixture(t)
	mine := [32]byte{1, 1, 1}
	f.createExample(t, "simulation", func(s string) string {
		return strings.Replace(s, "    image_name: redis_image\n", "    image_name: redis_image\n    sidecar:\n      mrenclaves: ["+hexOf(mine)+"]\n", 1)
	})
	ctx := context.Background()
	grant := func() []byte {
		res, err := f.client.Attest(ctx, app("demo/redis/redis", newKey(t), redisMR))
		require.NoError(t, err)
		return res.SidecarGrant
	}
	_, err := f.client.Attest(ctx, withGrantOf(sidecar("demo/redis/redis", newKey(t), f.sidecar), grant()))
	assert.Equal(t, attestapi.ReasonSidecarMeasurement, attestapi.RefusalReason(err), "%v", err)
	_, err = f.client.Attest(ctx, withGrantOf(sidecar("demo/redis/redis", newKey(t), mine), grant()))
	require.NoError(t, err)
}

func TestAttestRevokedPCKRefused(t *testing.T) {
	f := newFixtureWith(t, fixtureOptions{platform: sim.PlatformOptions{RevokedPCK: true}})
	f.createExample(t, "simulation", nil)
	_, err := f.client.Attest(context.Background(), app("demo/redis/redis", newKey(t), redisMR))
	require.Error(t, err)
	assert.Equal(t, attestapi.ReasonRevoked, attestapi.RefusalReason(err))
	assert.Contains(t, err.Error(), "is revoked by the PCK CA CRL")
	assert.InDelta(t, 1, f.counter(t, "refused", "revoked", "none", "app"), 0)
}

// The security review's scenario 5: 65,536 anonymous GetNonce calls leave nothing behind, and
// a legitimate attestation works right after.
func TestNonceFloodLeavesAttestationWorking(t *testing.T) {
	f := newFixture(t)
	f.createExample(t, "simulation", nil)
	ctx := context.Background()
	const flood, workers = 1 << 16, 16
	var wg sync.WaitGroup
	var failed atomic.Int32
	for w := range workers {
		wg.Go(func() {
			for range flood / workers {
				if _, err := f.raw.GetNonce(ctx, &attestationpb.GetNonceRequest{ConfigId: fmt.Sprintf("flood/%d", w)}); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, failed.Load(), "GetNonce never runs out")
	_, err := f.client.Attest(ctx, app("demo/redis/redis", newKey(t), redisMR))
	require.NoError(t, err, "a legitimate attestation works after the flood")
}

// Attest calls from one address beyond its burst are refused and counted; the limit is per
// address.
func TestAttestRateLimitPerAddress(t *testing.T) {
	f := newFixtureWith(t, fixtureOptions{peerRate: 0.01, peerBurst: 3})
	f.createExample(t, "simulation", nil)
	ctx := context.Background()
	limited := 0
	for range 10 {
		_, err := f.client.Attest(ctx, app("demo/redis/redis", newKey(t), redisMR))
		if attestapi.RefusalReason(err) == attestapi.ReasonRateLimited {
			limited++
			assert.Contains(t, err.Error(), "ResourceExhausted")
		}
	}
	assert.GreaterOrEqual(t, limited, 6)
	assert.InDelta(t, float64(limited), f.counter(t, "refused", "rate_limited", "none", "app"), 0)
}

// TestAttestReplayAndBinding drives the protocol by hand: a replayed nonce, a quote bound to
// another key, and a nonce for another config ID are refused with their reasons.
func TestAttestReplayAndBinding(t *testing.T) {
	f := newFixture(t)
	f.createExample(t, "simulation", nil)
	ctx := context.Background()
	const cid = "demo/flask/flask_restapi"

	evidence := func(key crypto.Signer, nonce []byte, bindKey crypto.Signer) ([]byte, []byte) {
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		require.NoError(t, err)
		spki, err := x509.MarshalPKIXPublicKey(bindKey.Public())
		require.NoError(t, err)
		var n [32]byte
		copy(n[:], nonce)
		quote, err := f.platform.Quote(sim.Report{MREnclave: pythonMR, ReportData: attestapi.BindReportData(spki, n)})
		require.NoError(t, err)
		return quote, csr
	}

	key := newKey(t)
	nr, err := f.raw.GetNonce(ctx, &attestationpb.GetNonceRequest{ConfigId: cid})
	require.NoError(t, err)
	quote, csr := evidence(key, nr.GetNonce(), key)
	req := &attestationpb.AttestRequest{ConfigId: cid, Role: attestationpb.Role_ROLE_APP, Nonce: nr.GetNonce(), Quote: quote, Csr: csr}
	_, err = f.raw.Attest(ctx, req)
	require.NoError(t, err)
	_, err = f.raw.Attest(ctx, req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nonce already used (replayed evidence)")

	// The quote binds another key than the CSR's.
	nr, err = f.raw.GetNonce(ctx, &attestationpb.GetNonceRequest{ConfigId: cid})
	require.NoError(t, err)
	quote, csr = evidence(key, nr.GetNonce(), newKey(t))
	_, err = f.raw.Attest(ctx, &attestationpb.AttestRequest{ConfigId: cid, Role: attestationpb.Role_ROLE_APP, Nonce: nr.GetNonce(), Quote: quote, Csr: csr})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "reportdata_mismatch")

	// A nonce issued for another config ID.
	nr, err = f.raw.GetNonce(ctx, &attestationpb.GetNonceRequest{ConfigId: "demo/redis/redis"})
	require.NoError(t, err)
	quote, csr = evidence(key, nr.GetNonce(), key)
	_, err = f.raw.Attest(ctx, &attestationpb.AttestRequest{ConfigId: cid, Role: attestationpb.Role_ROLE_APP, Nonce: nr.GetNonce(), Quote: quote, Csr: csr})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `nonce was not issued by this control plane for config ID "demo/flask/flask_restapi"`)

	// A quote that is not a quote.
	nr, err = f.raw.GetNonce(ctx, &attestationpb.GetNonceRequest{ConfigId: cid})
	require.NoError(t, err)
	_, err = f.raw.Attest(ctx, &attestationpb.AttestRequest{ConfigId: cid, Role: attestationpb.Role_ROLE_APP, Nonce: nr.GetNonce(), Quote: []byte("garbage"), Csr: csr})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "quote_invalid")

	// Evidence that does not verify leaves its nonce unused (junk cannot fill the replay
	// cache): the same nonce then carries real evidence, once.
	quote, csr = evidence(key, nr.GetNonce(), key)
	req = &attestationpb.AttestRequest{ConfigId: cid, Role: attestationpb.Role_ROLE_APP, Nonce: nr.GetNonce(), Quote: quote, Csr: csr}
	_, err = f.raw.Attest(ctx, req)
	require.NoError(t, err, "the nonce of refused junk is still good")
	_, err = f.raw.Attest(ctx, req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nonce already used (replayed evidence)")
}

// The security review's anonymous flood: callers that hold nonces but no valid evidence send
// junk with each; none of it is remembered, so the replay cache (here 8 entries) stays empty
// and a real attestation goes through.
func TestJunkEvidenceFillsNothing(t *testing.T) {
	f := newFixtureWith(t, fixtureOptions{replayCapacity: 8, peerRate: -1})
	f.createExample(t, "simulation", nil)
	ctx := context.Background()
	// A well-formed CSR, so that each request reaches the quote check and is refused there,
	// after its nonce was checked (a refusal at the CSR would prove nothing about nonces).
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, newKey(t))
	require.NoError(t, err)
	for i := range 64 {
		nr, err := f.raw.GetNonce(ctx, &attestationpb.GetNonceRequest{ConfigId: "demo/redis/redis"})
		require.NoError(t, err)
		_, err = f.raw.Attest(ctx, &attestationpb.AttestRequest{ConfigId: "demo/redis/redis", Role: attestationpb.Role_ROLE_APP,
			Nonce: nr.GetNonce(), Quote: []byte{byte(i)}, Csr: csr})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "quote_invalid", "refused at the quote, after the nonce check")
	}
	_, err = f.client.Attest(ctx, app("demo/redis/redis", newKey(t), redisMR))
	require.NoError(t, err, "64 junk attestations with fresh nonces took none of the 8 replay slots")
}

// A sidecar renews only while the app it speaks for is accepted: once the session revokes the
// app's measurement, the renewal on the current SVID is refused, and the sidecar must fetch a
// grant, which an attestation of the revoked app cannot give. An app's own SVID is no proof.
func TestSidecarRenewalFollowsItsApp(t *testing.T) {
	f := newFixture(t)
	f.createExample(t, "simulation", nil)
	ctx := context.Background()
	appRes, err := f.client.Attest(ctx, app("demo/redis/redis", newKey(t), redisMR))
	require.NoError(t, err)
	key := newKey(t)
	res, err := f.client.Attest(ctx, withGrantOf(sidecar("demo/redis/redis", key, f.sidecar), appRes.SidecarGrant))
	require.NoError(t, err)

	appKey := newKey(t)
	appRes2, err := f.client.Attest(ctx, app("demo/redis/redis", appKey, redisMR))
	require.NoError(t, err)
	asApp := sidecar("demo/redis/redis", appKey, f.sidecar)
	asApp.CurrentSVID = appRes2.SVID
	_, err = f.client.Attest(ctx, asApp)
	require.ErrorContains(t, err, "current_svid is not a sidecar SVID that names its app")

	renew := sidecar("demo/redis/redis", key, f.sidecar)
	renew.CurrentSVID = res.SVID
	renewed, err := f.client.Attest(ctx, renew)
	require.NoError(t, err, "renewal while the app is accepted")

	// The owner revokes the app's measurement.
	cur, err := f.cas.Get(ctx, "demo/redis", f.owner)
	require.NoError(t, err)
	newMR := [32]byte{4, 5, 7}
	doc := strings.ReplaceAll(string(cur.Document), hexOf(redisMR), hexOf(newMR))
	_, err = f.cas.Update(ctx, append([]byte("predecessor: "+cur.Hash+"\n"), doc...), f.owner)
	require.NoError(t, err)

	renew.CurrentSVID = renewed.SVID
	_, err = f.client.Attest(ctx, renew)
	require.Error(t, err)
	assert.Equal(t, attestapi.ReasonSidecarGrant, attestapi.RefusalReason(err), "%v", err)
	assert.Contains(t, err.Error(), "the app this sidecar speaks for is no longer accepted by its service")
	_, err = f.client.Attest(ctx, app("demo/redis/redis", newKey(t), redisMR))
	assert.Equal(t, attestapi.ReasonMREnclave, attestapi.RefusalReason(err), "and the revoked app gets no new grant: %v", err)
	assert.Contains(t, f.log.String(), "renewal refused: ", "the log says why")
}

// The control plane keeps the sessions it looked up while its store is unchanged: every write
// through the local API applies from the next attestation on. Each case attests first, so that
// the session is kept, and fails if its write did not reach the next attestation. (Writes by
// another replica: TestReplicasAttestWithTheCurrentSession in package controlplane.)
func TestAttestSeesEveryWrite(t *testing.T) {
	newMR := [32]byte{1, 2, 4}
	update := func(t *testing.T, f *fixture, name string, edit func(string) string) {
		t.Helper()
		cur, err := f.cas.Get(t.Context(), name, f.owner)
		require.NoError(t, err)
		_, err = f.cas.Update(t.Context(), append([]byte("predecessor: "+cur.Hash+"\n"), edit(string(cur.Document))...), f.owner)
		require.NoError(t, err)
	}
	for _, tc := range []struct {
		name   string
		write  func(t *testing.T, f *fixture)
		mr     [32]byte
		debug  bool             // the enclave runs in debug mode
		reason attestapi.Reason // ReasonNone: accepted
	}{{
		name: "the measurement is revoked",
		write: func(t *testing.T, f *fixture) {
			t.Helper()
			update(t, f, "demo/flask", replace(hexOf(pythonMR), hexOf(newMR)))
		},
		mr:     pythonMR,
		reason: attestapi.ReasonMREnclave,
	}, {
		name: "a new measurement is accepted",
		write: func(t *testing.T, f *fixture) {
			t.Helper()
			update(t, f, "demo/flask", replace(hexOf(pythonMR), hexOf(newMR)))
		},
		mr: newMR,
	}, {
		name:   "debug mode is no longer tolerated",
		write:  func(t *testing.T, f *fixture) { t.Helper(); update(t, f, "demo/flask", replace("debug-mode, ", "")) },
		mr:     pythonMR,
		debug:  true,
		reason: attestapi.ReasonDebug,
	}, {
		name: "the exporter stops exporting to the session",
		write: func(t *testing.T, f *fixture) {
			t.Helper()
			update(t, f, "demo/redis", replace("- session: demo/flask", "- session: demo/other"))
		},
		mr:     pythonMR,
		reason: attestapi.ReasonImport,
	}, {
		name: "the session is deleted",
		write: func(t *testing.T, f *fixture) {
			t.Helper()
			require.NoError(t, f.cas.Delete(t.Context(), "demo/flask", f.owner))
		},
		mr:     pythonMR,
		reason: attestapi.ReasonUnknownService,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.createExample(t, "simulation", nil)
			ctx := t.Context()
			req := func(mr [32]byte) request {
				r := app("demo/flask/flask_restapi", newKey(t), mr)
				r.Evidence.Debug = tc.debug
				return r
			}
			_, err := f.client.Attest(ctx, req(pythonMR))
			require.NoError(t, err)
			tc.write(t, f)
			_, err = f.client.Attest(ctx, req(tc.mr))
			if tc.reason == attestapi.ReasonNone {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tc.reason, attestapi.RefusalReason(err), "%v", err)
		})
	}
}

// replace returns an edit that replaces old, which must occur, by new.
func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic(fmt.Sprintf("the document has no %q", old))
		}
		return strings.ReplaceAll(s, old, new)
	}
}
