package controlplane_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/store"
	"github.com/attestmesh/attestmesh/proxy"
	"github.com/attestmesh/attestmesh/proxy/proxytest"
)

// The tests in this file run the whole data path on loopback, in this process: the real
// control plane (simulation mode), two real sidecars (proxy.Run) that attest through the
// attestation API with proxy.AttestationAttestor (the code `attestmesh proxy` runs) and
// follow the control plane's xDS, and a real TCP server as the server app (redis-server when
// installed, else an echo server).
//
// One network namespace holds everything, so the mesh is laid out to avoid port clashes:
//   - the server app listens on 127.0.0.1:P, the port the mesh serves;
//   - the server's sidecar is registered at 127.0.0.2, so its inbound listener is
//     127.0.0.2:P;
//   - the client's sidecar is registered at 127.0.0.3 (it serves nothing), and its outbound
//     listener would be 127.0.0.1:P, where the server app already listens. The mesh file's
//     `local_port` on the connection moves it to 127.0.0.1:L, exactly as a client of two
//     services that serve the same port would need (the xDS model always had LocalPort; the
//     mesh file could not set it before).
//
// Sidecars are checked against the sidecar measurement (this test binary, which is also
// what measure.Self returns in the sidecars), not against the sessions' mrenclaves.

const (
	itTrustDomain = "attestmesh.local"
	itServerIP    = "127.0.0.2"
	itClientIP    = "127.0.0.3"
)

// itSession is a one-service session in simulation mode.
// itAppMR is the measurement the test sessions accept for their apps.
var itAppMR = [32]byte{0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
	0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab}

func itSession(name, service string) []byte {
	return []byte(fmt.Sprintf("name: %s\nversion: \"0.3\"\nsecurity:\n  attestation:\n    mode: simulation\nservices:\n  - name: %s\n    mrenclaves: [%q]\n",
		name, service, hex.EncodeToString(itAppMR[:])))
}

// itMesh: the client connects to the server on each port of ports (server port -> the
// client's local port).
func itMesh(ports map[uint32]uint32) string {
	var serves, connects []string
	for _, p := range slices.Sorted(maps.Keys(ports)) {
		serves = append(serves, fmt.Sprintf("{port: %d}", p))
		connects = append(connects, fmt.Sprintf("{service: server, port: %d, local_port: %d}", p, ports[p]))
	}
	return fmt.Sprintf(`name: it
sessions: [unused.yaml]
services:
  - name: server
    config_id: it/server/server
    binary: /bin/true
    ports: [%s]
  - name: client
    config_id: it/client/client
    binary: /bin/true
    connects: [%s]
`, strings.Join(serves, ", "), strings.Join(connects, ", "))
}

// putMesh registers the "it" mesh with ports (see itMesh).
func (e *itEnv) putMesh(t *testing.T, ports map[uint32]uint32) {
	t.Helper()
	doc, err := (&mgmtapi.Registration{
		Mesh:      itMesh(ports),
		Endpoints: map[string]string{"server": itServerIP, "client": itClientIP},
	}).Marshal()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.cp.client(t, e.ownerDir).PutMesh(ctx, "it", doc))
}

// startWith runs the real control plane with cfg until the test ends (see start).
func startWith(t *testing.T, cfg controlplane.Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan controlplane.Addrs, 1)
	cfg.Ready = func(a controlplane.Addrs) { ready <- a }
	go func() { r.done <- controlplane.Run(ctx, cfg) }()
	select {
	case r.addrs = <-ready:
	case err := <-r.done:
		cancel()
		t.Fatalf("control plane did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("control plane did not start within 30 s (stopped: %v)", <-r.done)
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

// itApp is the server app: redis-server when installed (ECHO command), else an echo server.
type itApp struct {
	port  uint32
	redis bool
	close func()
}

func startApp(t *testing.T) *itApp {
	t.Helper()
	if path, err := exec.LookPath("redis-server"); err == nil {
		addr, err := proxytest.FreeAddr()
		require.NoError(t, err)
		_, p, _ := net.SplitHostPort(addr)
		cmd := exec.Command(path, "--port", p, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", //nolint:gosec,noctx // the test's own redis, stopped in Cleanup
			"--dir", t.TempDir(), "--protected-mode", "yes")
		var out proxytest.SyncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		require.NoError(t, cmd.Start())
		stopped := make(chan struct{})
		go func() { _ = cmd.Wait(); close(stopped) }()
		app := &itApp{port: uint32(mustAtoi(t, p)), redis: true, close: func() {
			_ = cmd.Process.Kill()
			<-stopped
		}}
		t.Cleanup(app.close)
		require.Eventually(t, func() bool {
			c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
			if err != nil {
				return false
			}
			_ = c.Close()
			return true
		}, 10*time.Second, 20*time.Millisecond, "redis-server did not start: %s", &out)
		t.Logf("server app: redis-server on %s", addr)
		return app
	}
	echo, err := proxytest.StartEcho()
	require.NoError(t, err)
	t.Cleanup(echo.Close)
	_, p, _ := net.SplitHostPort(echo.Addr)
	t.Logf("server app: echo server on %s (redis-server not installed)", echo.Addr)
	return &itApp{port: uint32(mustAtoi(t, p)), close: echo.Close}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// exchange sends msg through c and requires the app to answer with it: Redis's ECHO, or the
// echo server's echo.
func (a *itApp) exchange(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	if a.redis {
		_, err := fmt.Fprintf(c, "*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n", len(msg), msg)
		require.NoError(t, err)
		want := fmt.Sprintf("$%d\r\n%s\r\n", len(msg), msg)
		buf := make([]byte, len(want))
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		require.Equal(t, want, string(buf))
		return
	}
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
}

// itSidecar is one running sidecar.
type itSidecar struct {
	configID string
	admin    string
	logs     *proxytest.SyncBuffer
	stop     func()
}

// itEnv is a control plane with the "it" mesh registered, the server app, and both sidecars
// running and ready.
type itEnv struct {
	cfg      controlplane.Config // with the bound addresses, for a restart
	cp       *running
	ownerDir string // the management client's identity, owner of the sessions and the mesh
	app      *itApp
	ac       *attestapi.Client
	bundle   []*x509.Certificate
	inbound  string // the server sidecar's mTLS listener
	outbound string // where the client app connects
	server   *itSidecar
	client   *itSidecar
}

func newITEnv(t *testing.T, svidTTL time.Duration) *itEnv {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err := store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	cfg := controlplane.Config{
		DataDir: filepath.Join(t.TempDir(), "data"), StoreKeyFile: keyFile, TrustDomain: itTrustDomain,
		MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		Simulation: true, LASAddr: "127.0.0.1:0", SVIDTTL: svidTTL,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	e := &itEnv{cp: startWith(t, cfg)}
	a := e.cp.addrs
	// A restart binds the same ports.
	cfg.MgmtAddr, cfg.AttestAddr, cfg.XDSAddr, cfg.MetricsAddr, cfg.LASAddr = a.Mgmt, a.Attest, a.XDS, a.Metrics, a.LAS
	e.cfg = cfg

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.ownerDir = t.TempDir()
	owner := e.cp.client(t, e.ownerDir)
	_, err = owner.Create(ctx, []byte("name: it\nversion: \"0.3\"\n"))
	require.NoError(t, err, "namespace it")
	for _, s := range [][2]string{{"it/server", "server"}, {"it/client", "client"}, {"it/intruder", "intruder"}} {
		_, err := owner.Create(ctx, itSession(s[0], s[1]))
		require.NoError(t, err)
	}
	e.app = startApp(t)
	local, err := proxytest.FreeAddr()
	require.NoError(t, err)
	_, lp, _ := net.SplitHostPort(local)
	e.outbound = local
	e.inbound = net.JoinHostPort(itServerIP, strconv.FormatUint(uint64(e.app.port), 10))
	e.putMesh(t, map[uint32]uint32{e.app.port: uint32(mustAtoi(t, lp))})

	e.bundle, err = ca.ParseCertsPEM(a.BundlePEM)
	require.NoError(t, err)
	e.ac, err = attestapi.Dial(attestapi.ClientConfig{Addr: a.Attest, Bundle: e.bundle, Quotes: sim.Client{Addr: a.LAS}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.ac.Close() }) // after the sidecars stop (cleanups run last first)

	e.server = e.startSidecar(t, "it/server/server")
	e.client = e.startSidecar(t, "it/client/client")
	e.server.waitReady(t)
	e.client.waitReady(t)
	return e
}

// appGrants gets a sidecar grant as the app's launcher does: it attests as the app of configID
// (the sessions accept the measurement itAppMR) and hands over the grant it receives.
func (e *itEnv) appGrants(configID string) proxy.GrantSource {
	return func(ctx context.Context) ([]byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		res, err := e.ac.Attest(ctx, attestapi.Request{
			ConfigID: configID, Role: attestationpb.Role_ROLE_APP, Key: key, Evidence: attestapi.Evidence{MREnclave: itAppMR},
		})
		if err != nil {
			return nil, err
		}
		return res.SidecarGrant, nil
	}
}

func (e *itEnv) startSidecar(t *testing.T, configID string) *itSidecar {
	t.Helper()
	admin, err := proxytest.FreeAddr()
	require.NoError(t, err)
	att, err := proxy.AttestationAttestor(e.ac, configID, e.appGrants(configID), nil)
	require.NoError(t, err)
	s := &itSidecar{configID: configID, admin: admin, logs: &proxytest.SyncBuffer{}}
	cfg := proxy.Config{
		ConfigID: configID, TrustDomain: itTrustDomain, AdminAddr: admin, Attestor: att,
		Logger:       slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		DrainTimeout: 2 * time.Second, XDSInitialBackoff: 50 * time.Millisecond, XDSMaxBackoff: 500 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- proxy.Run(ctx, cfg) }()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("sidecar %s did not stop cleanly: %v", configID, err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("sidecar %s did not stop", configID)
			}
		})
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("logs of sidecar %s:\n%s", configID, s.logs)
		}
	})
	return s
}

func itGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func (s *itSidecar) waitReady(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		code, _ := itGet(t, "http://"+s.admin+"/ready")
		return code == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "sidecar %s never became ready", s.configID)
}

// dump is the part of the sidecar's /config_dump the tests read.
type dump struct {
	Listeners []struct {
		Name string `json:"name"`
	} `json:"listeners"`
	XDS struct {
		Connected bool `json:"connected"`
	} `json:"xds"`
	Secrets struct {
		SVID struct {
			SPIFFEID string    `json:"spiffe_id"`
			Serial   string    `json:"serial"`
			NotAfter time.Time `json:"not_after"`
		} `json:"svid"`
	} `json:"secrets"`
}

func (s *itSidecar) configDump(t *testing.T) dump {
	t.Helper()
	code, body := itGet(t, "http://"+s.admin+"/config_dump")
	require.Equal(t, http.StatusOK, code, body)
	var d dump
	require.NoError(t, json.Unmarshal([]byte(body), &d))
	return d
}

// metric sums the series of name on the sidecar's admin /metrics whose labels include
// labels ("k", "v", ...).
func (s *itSidecar) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return scrape(t, s.admin, name, labels...)
}

// scrape sums the series of name on http://addr/metrics whose labels include labels.
func scrape(t *testing.T, addr, name string, labels ...string) float64 {
	t.Helper()
	code, body := itGet(t, "http://"+addr+"/metrics")
	require.Equal(t, http.StatusOK, code, body)
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		series, value, ok := strings.Cut(rest, " ")
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			require.Positive(t, end, line)
			series, value, ok = rest[:end+1], strings.TrimSpace(rest[end+1:]), true
		}
		require.True(t, ok, line)
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(series, labels[i]+"="+strconv.Quote(labels[i+1])) {
				continue next
			}
		}
		v, err := strconv.ParseFloat(value, 64)
		require.NoError(t, err, line)
		sum += v
	}
	return sum
}

func itDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// attestAs attests as the sidecar of configID with a fresh key, as the sidecars do, and
// returns the SVID as a TLS certificate.
func (e *itEnv) attestAs(t *testing.T, configID string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	att, err := proxy.AttestationAttestor(e.ac, configID, e.appGrants(configID), nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	id, err := att.Attest(ctx, key)
	require.NoError(t, err)
	cert := tls.Certificate{PrivateKey: key, Leaf: id.SVID[0]}
	for _, c := range id.SVID {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}

// mtlsExchange opens mTLS to the server sidecar's inbound listener with cert, verifying that
// the sidecar presents the server's SVID from the mesh CA, and exchanges one message with
// the app. It returns the serial of the certificate the sidecar presented and the error of
// the exchange (the sidecar's verdict on cert arrives after the client's TLS 1.3 handshake).
func (e *itEnv) mtlsExchange(t *testing.T, cert tls.Certificate) (string, error) {
	t.Helper()
	roots := x509.NewCertPool()
	for _, c := range e.bundle {
		roots.AddCert(c)
	}
	var serial string
	tc := tls.Client(itDial(t, e.inbound), &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{cert},
		ServerName: "server", InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection: SPIFFE IDs are not DNS names
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
				return err
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://"+itTrustDomain+"/it/server/server" {
				return fmt.Errorf("server sidecar presented %v", leaf.URIs)
			}
			serial = leaf.SerialNumber.Text(16)
			return nil
		},
	})
	require.NoError(t, tc.SetDeadline(time.Now().Add(5*time.Second)))
	if err := tc.Handshake(); err != nil {
		return serial, err
	}
	msg := "hello from " + cert.Leaf.URIs[0].String()
	var err error
	if e.app.redis {
		_, err = fmt.Fprintf(tc, "*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n", len(msg), msg)
		msg = fmt.Sprintf("$%d\r\n%s\r\n", len(msg), msg)
	} else {
		_, err = tc.Write([]byte(msg))
	}
	if err != nil {
		return serial, err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(tc, buf); err != nil {
		return serial, err
	}
	if string(buf) != msg {
		return serial, fmt.Errorf("got %q, want %q", buf, msg)
	}
	return serial, nil
}

// TestTunnelThroughRealControlPlane: bytes flow client app -> client sidecar (outbound,
// 127.0.0.1:L) -> mTLS -> server sidecar (inbound, 127.0.0.2:P) -> server app, with both
// sidecars configured only by the real control plane; plaintext on the mTLS port is refused.
func TestTunnelThroughRealControlPlane(t *testing.T) {
	e := newITEnv(t, 0)

	c := itDial(t, e.outbound)
	for i := range 3 {
		e.app.exchange(t, c, strings.Repeat("through the tunnel ", i+1))
	}
	// A second connection at the same time.
	e.app.exchange(t, itDial(t, e.outbound), "second connection")

	inbound := "inbound|" + strconv.FormatUint(uint64(e.app.port), 10)
	assert.InDelta(t, 2, e.server.metric(t, "attestmesh_sidecar_connections_total", "listener", inbound, "direction", "inbound"), 0)
	assert.Positive(t, e.client.metric(t, "attestmesh_sidecar_bytes_total", "direction", "outbound"))
	for _, s := range []*itSidecar{e.server, e.client} {
		d := s.configDump(t)
		assert.True(t, d.XDS.Connected)
		assert.Equal(t, "spiffe://"+itTrustDomain+"/"+s.configID, d.Secrets.SVID.SPIFFEID)
		assert.Positive(t, s.metric(t, "attestmesh_sidecar_svid_expiry_timestamp_seconds", "tee", "simulation"))
	}

	// Plaintext on the inbound (mTLS) port is refused.
	before := e.server.metric(t, "attestmesh_sidecar_tls_handshake_failures_total", "listener", inbound, "reason", "plaintext")
	p := itDial(t, e.inbound)
	require.NoError(t, p.SetDeadline(time.Now().Add(5*time.Second)))
	_, _ = p.Write([]byte("*1\r\n$4\r\nPING\r\n\r\n\r\n"))
	n, err := io.ReadFull(p, make([]byte, 7))
	require.Error(t, err, "plaintext got an answer: %d bytes", n)
	require.Eventually(t, func() bool {
		return e.server.metric(t, "attestmesh_sidecar_tls_handshake_failures_total", "listener", inbound, "reason", "plaintext") == before+1
	}, 5*time.Second, 20*time.Millisecond)

	e.app.exchange(t, c, "still open")
}

// TestIntruderRefusedByServerSidecar: a third service, attested by the same control plane as
// a sidecar (same sidecar measurement) but not allowed by the mesh to reach the server, is
// refused by the server sidecar during the handshake, with its SPIFFE ID in the log and an
// authorization denial counted; the same dial with the client's identity gets through.
func TestIntruderRefusedByServerSidecar(t *testing.T) {
	e := newITEnv(t, 0)
	inbound := "inbound|" + strconv.FormatUint(uint64(e.app.port), 10)

	// Control: an SVID of the allowed identity, from the same attestation API, passes.
	_, err := e.mtlsExchange(t, e.attestAs(t, "it/client/client"))
	require.NoError(t, err)

	before := e.server.metric(t, "attestmesh_sidecar_authz_denials_total", "listener", inbound)
	intruder := e.attestAs(t, "it/intruder/intruder")
	require.Equal(t, "spiffe://"+itTrustDomain+"/it/intruder/intruder", intruder.Leaf.URIs[0].String())
	_, err = e.mtlsExchange(t, intruder)
	require.Error(t, err, "the intruder must not reach the server app")
	require.Eventually(t, func() bool {
		return e.server.metric(t, "attestmesh_sidecar_authz_denials_total", "listener", inbound) == before+1
	}, 5*time.Second, 20*time.Millisecond)
	assert.Contains(t, e.server.logs.String(), "spiffe://"+itTrustDomain+"/it/intruder/intruder")
	assert.Contains(t, e.server.logs.String(), "peer not authorized")

	// The tunnel is unaffected.
	e.app.exchange(t, itDial(t, e.outbound), "after the intruder")
}

// TestRotationThroughRealControlPlane: with SVIDs valid for a few seconds, both sidecars
// re-attest again and again; a connection opened before keeps working across at least three
// rotations of both, and new connections (after every earlier certificate has expired) work,
// so they present the new certificates; the server sidecar presents the serial its
// /config_dump names, and the SVID expiry gauge moves forward.
func TestRotationThroughRealControlPlane(t *testing.T) {
	const ttl = 4 * time.Second
	e := newITEnv(t, ttl)
	old := itDial(t, e.outbound)
	e.app.exchange(t, old, "before rotation")

	first := map[*itSidecar]dump{e.server: e.server.configDump(t), e.client: e.client.configDump(t)}
	firstExpiry := e.client.metric(t, "attestmesh_sidecar_svid_expiry_timestamp_seconds")
	seen := map[*itSidecar]map[string]bool{e.server: {}, e.client: {}}
	for _, s := range []*itSidecar{e.server, e.client} {
		seen[s][first[s].Secrets.SVID.Serial] = true
	}
	deadline := time.Now().Add(45 * time.Second)
	for round := 1; len(seen[e.server]) < 4 || len(seen[e.client]) < 4; round++ {
		require.True(t, time.Now().Before(deadline), "fewer than 3 rotations: server %d, client %d serials", len(seen[e.server]), len(seen[e.client]))
		time.Sleep(500 * time.Millisecond)
		for _, s := range []*itSidecar{e.server, e.client} {
			seen[s][s.configDump(t).Secrets.SVID.Serial] = true
		}
		e.app.exchange(t, old, fmt.Sprintf("old connection, round %d", round))
	}
	t.Logf("serials: server %d, client %d", len(seen[e.server]), len(seen[e.client]))

	// Every certificate of the first round has expired: new connections can only be made
	// with the new ones, on both sides.
	for _, d := range first {
		time.Sleep(time.Until(d.Secrets.SVID.NotAfter.Add(100 * time.Millisecond)))
	}
	e.app.exchange(t, itDial(t, e.outbound), "new connection after rotation")
	e.app.exchange(t, old, "old connection after rotation")

	// The server sidecar presents its current SVID to new handshakes (retried: a rotation may
	// fall between the handshake and the config dump).
	var presented, current string
	for range 20 {
		var err error
		presented, err = e.mtlsExchange(t, e.attestAs(t, "it/client/client"))
		require.NoError(t, err)
		if current = e.server.configDump(t).Secrets.SVID.Serial; presented == current {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Equal(t, current, presented, "the server sidecar presents its current SVID")
	require.NotEqual(t, first[e.server].Secrets.SVID.Serial, presented)
	assert.Greater(t, e.client.metric(t, "attestmesh_sidecar_svid_expiry_timestamp_seconds"), firstExpiry)
}

// TestControlPlaneOutage: with the control plane stopped, established and new tunnel
// connections keep working on the cached configuration; restarted on the same data dir, key
// and ports, the control plane is found again by both sidecars, which reconnect and ACK.
func TestControlPlaneOutage(t *testing.T) {
	e := newITEnv(t, 0)
	old := itDial(t, e.outbound)
	e.app.exchange(t, old, "before the outage")
	acks := map[*itSidecar]float64{}
	for _, s := range []*itSidecar{e.server, e.client} {
		acks[s] = s.metric(t, "attestmesh_sidecar_xds_updates_total", "result", "ack")
		require.Positive(t, acks[s])
	}

	e.cp.stop(t)
	for _, s := range []*itSidecar{e.server, e.client} {
		require.Eventually(t, func() bool { return !s.configDump(t).XDS.Connected }, 10*time.Second, 20*time.Millisecond,
			"sidecar %s did not notice the outage", s.configID)
	}
	e.app.exchange(t, old, "during the outage")
	e.app.exchange(t, itDial(t, e.outbound), "new connection during the outage")
	e.server.waitReady(t)

	e.cp = startWith(t, e.cfg)
	// Both sidecars open authenticated ADS streams again (the control plane counts them).
	require.Eventually(t, func() bool {
		return scrape(t, e.cp.addrs.Metrics, "attestmesh_xds_connected_sidecars") == 2
	}, 20*time.Second, 50*time.Millisecond, "the sidecars did not reconnect")
	// A reconnecting sidecar sends the versions it has; while the configuration is the same the
	// ADS server rightly sends nothing, and the sidecar still reports itself connected.
	for _, s := range []*itSidecar{e.server, e.client} {
		require.Eventually(t, func() bool { return s.configDump(t).XDS.Connected }, 20*time.Second, 50*time.Millisecond,
			"sidecar %s does not report its re-established stream", s.configID)
	}
	// The restarted control plane serves them: a configuration change made after the restart
	// reaches both, and both ACK it.
	second, err := proxytest.FreeAddr()
	require.NoError(t, err)
	local, err := proxytest.FreeAddr()
	require.NoError(t, err)
	_, sp, _ := net.SplitHostPort(second)
	_, lp, _ := net.SplitHostPort(local)
	_, op, _ := net.SplitHostPort(e.outbound)
	e.putMesh(t, map[uint32]uint32{e.app.port: uint32(mustAtoi(t, op)), uint32(mustAtoi(t, sp)): uint32(mustAtoi(t, lp))})
	for _, s := range []*itSidecar{e.server, e.client} {
		require.Eventually(t, func() bool {
			return s.metric(t, "attestmesh_sidecar_xds_updates_total", "result", "ack") > acks[s]
		}, 20*time.Second, 50*time.Millisecond, "sidecar %s did not ACK after the restart", s.configID)
	}
	// The change comes as clusters, then listeners, each ACKed: the first ACK may be the
	// clusters', so the second listener is waited for.
	for _, s := range []*itSidecar{e.server, e.client} {
		require.Eventually(t, func() bool { return len(s.configDump(t).Listeners) == 2 }, 20*time.Second, 50*time.Millisecond,
			"sidecar %s did not apply the listener added after the restart", s.configID)
		assert.True(t, s.configDump(t).XDS.Connected, "sidecar %s", s.configID)
	}
	e.app.exchange(t, old, "after the restart")
	e.app.exchange(t, itDial(t, e.outbound), "new connection after the restart")
}
