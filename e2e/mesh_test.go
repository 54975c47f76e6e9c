//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/local"
	"github.com/attestmesh/attestmesh/e2e/e2etest"

	"github.com/attestmesh/attestmesh/proxy/proxytest"
)

// The test's own bridge and subnet, apart from `attestmesh up`'s defaults (amup0,
// 10.231.0.0/24), so that it never touches a mesh someone runs by hand.
const (
	bridge = "ame2e0"
	subnet = "10.233.0.0/24"
)

// requireTools skips the test, saying what is missing, unless it runs as root with the
// programs that the example and the test run.
func requireTools(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network and mount namespaces)")
	}
	for _, p := range []string{"ip", "go", redisServer, python, "prometheus", "promtool"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if out, err := exec.CommandContext(t.Context(), python, "-c", "import flask, redis").CombinedOutput(); err != nil {
		missing = append(missing, fmt.Sprintf("the flask and redis modules of %s (%s)", python, strings.TrimSpace(string(out))))
	}
	if len(missing) > 0 {
		e2etest.Prerequisite(t, fmt.Sprintf("e2e: needs %s; as root on Debian: apt-get install -y iproute2 redis-server python3-flask python3-redis prometheus",
			strings.Join(missing, ", ")))
	}
}

// mesh is a running `attestmesh up` of the example.
type mesh struct {
	info    *local.Info
	caCerts []*x509.Certificate // the mesh CA
	bin     string
	binMR   measure.MREnclave // the sidecar build's, which the sidecars and launchers run
	out     *proxytest.SyncBuffer

	cancel   context.CancelFunc
	done     chan struct{}
	upErr    error // set before done closes
	stopOnce sync.Once
	stopErr  error
}

// startMesh runs local.Up on the example until the test ends; Up's progress and, when the test
// failed, the tails of every log are in the test's output.
func startMesh(ctx context.Context, t *testing.T, bin string) *mesh {
	t.Helper()
	meshFile, err := filepath.Abs("../examples/flask-redis/mesh.yaml")
	require.NoError(t, err)
	// The sidecars and the launchers run the sidecar build beside bin (e2etest.BuildAttestmesh
	// makes it), as `attestmesh up` picks it; the control plane accepts its measurement.
	sidecarBin := controlplane.DefaultSidecarBinary(bin)
	require.NotEqual(t, bin, sidecarBin, "the sidecar build beside %s", bin)
	binMR, err := measure.File(sidecarBin)
	require.NoError(t, err)
	stateDir := t.TempDir()
	// Runs last, after Up has stopped: whatever Up left behind (a bug that Teardown reports)
	// is removed, so that a failed run leaves the machine clean.
	t.Cleanup(func() { sweep(ctx, t, stateDir, bin) })

	upCtx, cancel := context.WithCancel(ctx)
	m := &mesh{bin: bin, binMR: binMR, out: &proxytest.SyncBuffer{}, cancel: cancel, done: make(chan struct{})}
	ready := make(chan *local.Info, 1)
	go func() {
		defer close(m.done)
		m.upErr = local.Up(upCtx, local.Config{
			MeshFile: meshFile, Binary: bin, StateDir: stateDir,
			Subnet: netip.MustParsePrefix(subnet), Bridge: bridge,
			Out: m.out, Ready: func(i *local.Info) { ready <- i }, StartTimeout: time.Minute,
		})
	}()
	t.Cleanup(func() {
		if err := m.stop(); err != nil {
			t.Errorf("stopping the mesh: %v", err)
		}
		t.Logf("attestmesh up:\n%s", m.out.String())
		if t.Failed() {
			logTails(t, stateDir)
		}
	})
	select {
	case m.info = <-ready:
		m.caCerts, err = ca.ParseCertsPEM(m.info.ControlPlane.BundlePEM)
		require.NoError(t, err, "the control plane's CA bundle")
		return m
	case <-m.done:
		require.FailNow(t, "attestmesh up ended before it was ready", "%v\n%s", m.upErr, m.out.String())
	case <-ctx.Done():
		require.FailNow(t, "attestmesh up is not ready", "%v\n%s", ctx.Err(), m.out.String())
	}
	return nil
}

// stop cancels Up and waits for it to stop everything; it returns Up's error. Safe to call
// twice.
func (m *mesh) stop() error {
	m.stopOnce.Do(func() {
		m.cancel()
		select {
		case <-m.done:
			m.stopErr = m.upErr
		case <-time.After(90 * time.Second):
			m.stopErr = errors.New("attestmesh up did not stop within 90 s")
		}
	})
	return m.stopErr
}

func logTails(t *testing.T, dir string) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		t.Logf("%s:\n  %s", filepath.Base(l), strings.Join(lines, "\n  "))
	}
}

// meshRoots holds the mesh CA (the control plane's bundle), for plain TLS clients.
func (m *mesh) meshRoots() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range m.caCerts {
		pool.AddCert(c)
	}
	return pool
}

// meshBundle is the mesh CA as the trust domain's X.509 bundle, for SPIFFE clients.
func (m *mesh) meshBundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(redisID.TrustDomain(), m.caCerts)
}

// apiClient is an HTTPS client that sends every request to the API's exposed address.
func (m *mesh) apiClient(cfg *tls.Config) *http.Client {
	addr := net.JoinHostPort(m.info.Services["api"].Address.String(), apiPort)
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: cfg,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// waitMetric polls the endpoint until series reaches want.
func waitMetric(ctx context.Context, t *testing.T, u, series string, want float64) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.InDelta(c, want, e2etest.Sample(e2etest.Scrape(ctx, c, u), series), 0)
	}, 10*time.Second, 100*time.Millisecond, "%s at %s", series, u)
}

// prometheus is a real Prometheus server scraping the mesh.
type prometheus struct {
	base    string
	targets map[string]string // job/service -> metrics URL
}

// startPrometheus runs Debian's Prometheus with a 1 s scrape interval over the control plane
// and both sidecars, its storage in a temporary directory, its API on loopback.
func startPrometheus(ctx context.Context, t *testing.T, m *mesh) *prometheus {
	t.Helper()
	dir := t.TempDir()
	p := &prometheus{targets: map[string]string{
		"controlplane": "http://" + m.info.ControlPlane.Metrics + "/metrics",
		"redis":        "http://" + m.info.Services["redis"].AdminAddr + "/metrics",
		"api":          "http://" + m.info.Services["api"].AdminAddr + "/metrics",
	}}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: controlplane
    static_configs:
      - targets: [%q]
  - job_name: sidecars
    static_configs:
      - targets: [%q]
        labels: {service: redis}
      - targets: [%q]
        labels: {service: api}
`, m.info.ControlPlane.Metrics, m.info.Services["redis"].AdminAddr, m.info.Services["api"].AdminAddr)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o600))
	out, err := exec.CommandContext(ctx, "promtool", "check", "config", cfgFile).CombinedOutput()
	require.NoError(t, err, "promtool check config:\n%s", out)

	listen := freeLoopbackAddr(ctx, t)
	p.base = "http://" + listen
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	require.NoError(t, err)
	pctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(pctx, "prometheus", "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // a clean stop exits 0
	cmd.WaitDelay = 10 * time.Second
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		// A clean exit after the SIGTERM is reported as the context's error.
		if err := <-exited; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("prometheus: %v", err)
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("prometheus.log:\n%s", b)
		}
	})
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		select {
		case err := <-exited:
			exited <- err
			require.Fail(c, "prometheus exited", "%v", err)
		default:
		}
		_, err := e2etest.Get(ctx, p.base+"/-/ready")
		assert.NoError(c, err)
	}, 30*time.Second, 100*time.Millisecond, "prometheus ready at %s", p.base)
	return p
}

// freeLoopbackAddr returns a loopback address with a port that was free a moment ago.
func freeLoopbackAddr(ctx context.Context, t *testing.T) string {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// query runs an instant query and returns each series' value keyed by the listed labels'
// values joined with "/" ("" for a single unlabelled result).
func (p *prometheus) query(ctx context.Context, q string, by ...string) (map[string]float64, error) {
	body, err := e2etest.Get(ctx, p.base+"/api/v1/query?query="+url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	var resp struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	if resp.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, body)
	}
	out := map[string]float64{}
	for _, r := range resp.Data.Result {
		keys := make([]string, len(by))
		for i, l := range by {
			keys[i] = r.Metric[l]
		}
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", q, r.Value[1], err)
		}
		out[strings.Join(keys, "/")] = v
	}
	return out, nil
}

// prometheus: Prometheus scrapes the control plane and both sidecars and counts the
// attestations, the refusals and the tunnel's connections; each endpoint passes promtool.
func (s *suite) prometheus(t *testing.T) {
	ctx, p := s.ctx, s.prom
	start := time.Now()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		q := func(query string, by ...string) map[string]float64 {
			v, err := p.query(ctx, query, by...)
			require.NoError(c, err)
			return v
		}
		assert.Equal(c, map[string]float64{"controlplane/": 1, "sidecars/redis": 1, "sidecars/api": 1},
			q("up", "job", "service"), "every target is up")
		// Two sidecars and two apps attested (the test adds more: the intruder, the control launch).
		assert.GreaterOrEqual(c, q(`sum(attestmesh_attestations_total{result="ok"})`)[""], 4.0)
		ok := q(`sum by (role) (attestmesh_attestations_total{result="ok",tee="simulation"})`, "role")
		assert.GreaterOrEqual(c, ok["sidecar"], 2.0, "sidecars attested")
		assert.GreaterOrEqual(c, ok["app"], 2.0, "apps attested")
		// The two launches with the wrong measurement, counted by reason.
		assert.GreaterOrEqual(c, q(`sum(attestmesh_attestations_total{result="refused",reason="mrenclave_mismatch"})`)[""], 2.0)
		// The tunnel: Flask's connection to Redis leaves through the api sidecar and enters
		// through the redis sidecar.
		conns := q(`sum by (service, direction) (attestmesh_sidecar_connections_total)`, "service", "direction")
		assert.Positive(c, conns["redis/inbound"], "connections into the redis sidecar")
		assert.Positive(c, conns["api/outbound"], "connections out of the api sidecar")
		assert.GreaterOrEqual(c, q(`sum(attestmesh_sidecar_authz_denials_total{service="redis"})`)[""], 1.0, "the intruder's denial")
	}, time.Minute, 500*time.Millisecond, "prometheus at %s", p.base)
	t.Logf("prometheus saw everything %s after the query loop started", time.Since(start).Round(time.Millisecond))

	for name, u := range p.targets {
		t.Run("PromtoolCheckMetrics/"+name, func(t *testing.T) {
			cmd := exec.CommandContext(ctx, "promtool", "check", "metrics")
			cmd.Stdin = strings.NewReader(e2etest.Scrape(ctx, t, u))
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "promtool check metrics on %s:\n%s", u, out)
			assert.Empty(t, strings.TrimSpace(string(out)), "promtool check metrics on %s", u)
		})
	}
}

// teardown stops the mesh and checks that its processes, namespaces and links are gone.
func (s *suite) teardown(t *testing.T) {
	m := s.m
	var pids []int
	for _, s := range m.info.Services {
		out, err := exec.CommandContext(t.Context(), "ip", "netns", "pids", s.Namespace).Output()
		require.NoError(t, err, "ip netns pids %s", s.Namespace)
		for _, f := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(f)
			require.NoError(t, err)
			pids = append(pids, pid)
		}
	}
	// Each namespace runs at least its sidecar, its launcher and its app.
	require.GreaterOrEqual(t, len(pids), 2*3, "processes in the namespaces: %v", pids)
	pids = append(pids, mentioning(t, m.info.StateDir, m.bin)...)

	start := time.Now()
	require.NoError(t, m.stop(), "attestmesh up stops cleanly")
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, pid := range pids {
			assert.False(c, alive(pid), "process %d (%s) still runs", pid, cmdline(pid))
		}
		assert.Empty(c, mentioning(t, m.info.StateDir, m.bin), "processes that mention the state dir or the binary")
	}, 10*time.Second, 100*time.Millisecond)

	assert.Empty(t, e2etest.Ours(t.Context(), t, bridge, "netns", "list"), "namespaces left behind (ip netns list)")
	assert.Empty(t, e2etest.Ours(t.Context(), t, bridge, "-o", "link", "show"), "links left behind (ip link show)")
}

// sweep kills the processes and removes the namespaces and links that a run on bridge could
// have left behind.
func sweep(ctx context.Context, t *testing.T, stateDir, bin string) {
	t.Helper()
	// A cleanup runs after the test's context is cancelled: keep its values, not its end.
	ctx = context.WithoutCancel(ctx)
	run := func(args ...string) string {
		out, _ := exec.CommandContext(ctx, "ip", args...).Output()
		return string(out)
	}
	var left []string
	for _, ns := range e2etest.Ours(ctx, t, bridge, "netns", "list") {
		for _, f := range strings.Fields(run("netns", "pids", ns)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		run("netns", "del", ns)
		left = append(left, "namespace "+ns)
	}
	for _, pid := range mentioning(t, stateDir, bin) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		left = append(left, fmt.Sprintf("process %d", pid))
	}
	for _, name := range e2etest.Ours(ctx, t, bridge, "-o", "link", "show") {
		run("link", "del", name)
		left = append(left, "link "+name)
	}
	if len(left) > 0 {
		t.Logf("removed what the run left behind: %s", strings.Join(left, ", "))
	}
}

// mentioning lists the live processes whose command line holds one of subs.
func mentioning(t *testing.T, subs ...string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !alive(pid) {
			continue
		}
		cl := cmdline(pid)
		for _, s := range subs {
			if strings.Contains(cl, s) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// alive reports whether pid exists and is not a zombie (a zombie has exited; its parent may be
// a reaper outside the test's control).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}
