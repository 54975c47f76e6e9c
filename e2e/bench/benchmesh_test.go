//go:build benchmesh

package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/local"
	"github.com/attestmesh/attestmesh/e2e/e2etest"
	"github.com/attestmesh/attestmesh/proxy/proxytest"
)

// The benchmark's own bridge and subnet, apart from `attestmesh up`'s (amup0, 10.231.0.0/24),
// the e2e test's (ame2e0, 10.233.0.0/24) and the Kubernetes node's (10.232.0.0/24).
const (
	bridge = "ambench"
	subnet = "10.234.0.0/24"
)

// Ports. In the client's namespace, on its loopback: the client sidecar's outbound listener
// (the mesh's connects: redis 6379), the HAProxy and stunnel clients. In the server's
// namespace: the mesh's redis-server on its loopback behind the sidecar, HAProxy and stunnel
// on its bridge address, and the second redis-server for the direct path.
const (
	redisPort         = 6379
	haproxyPort       = 6380
	stunnelPort       = 6381
	directPort        = 6390
	haproxyServerPort = 7380
	stunnelServerPort = 7381
)

var (
	flagBin         = flag.String("bin", "", "the attestmesh binary that runs the sidecars (default: built by the test)")
	flagRounds      = flag.Int("rounds", 3, "rounds; every path runs every measurement once per round, in an order that rotates")
	flagRequests    = flag.Int("requests", 100_000, "requests per throughput run (one for GET, one for SET)")
	flagConns       = flag.Int("conns", 50, "redis-benchmark connections of the throughput runs")
	flagLatency     = flag.Int("latency-requests", 20_000, "GETs on one connection, for the latency percentiles")
	flagRate        = flag.Int("rate", 2_000, "GETs per second of the fixed-rate run")
	flagRateConns   = flag.Int("rate-conns", 10, "connections of the fixed-rate run")
	flagRateFor     = flag.Duration("rate-for", 10*time.Second, "duration of the fixed-rate run")
	flagOut         = flag.String("out", "", "also write the report (markdown) to this file")
	flagSidecarArgs = flag.String("sidecar-args", "", "extra flags for every `attestmesh proxy` (space-separated)")
	flagProfile     = flag.String("profile", "", "record profiles of the first round's GET runs into this directory (perf, and the sidecars' pprof)")
)

// settings are the flags, or their short-round values with -test.short (CI: one short round
// that shows that everything runs and is cleaned up).
type settings struct {
	rounds, requests, conns, latency, rate, rateConns int
	rateFor                                           time.Duration
	warmup                                            int
}

func currentSettings() settings {
	s := settings{
		rounds: *flagRounds, requests: *flagRequests, conns: *flagConns, latency: *flagLatency,
		rate: *flagRate, rateConns: *flagRateConns, rateFor: *flagRateFor, warmup: 20_000,
	}
	if testing.Short() {
		s = settings{rounds: 1, requests: 2_000, conns: *flagConns, latency: 500, rate: 500, rateConns: 5, rateFor: time.Second, warmup: 1_000}
	}
	return s
}

// requireTools fails the test, saying what is missing: `make bench-mesh` is run on purpose, so
// a missing tool is an error rather than a skip.
func requireTools(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces)")
	}
	for _, p := range []string{"ip", "go", "redis-server", "redis-benchmark", "haproxy", "stunnel4", "/usr/bin/sleep"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("bench-mesh: needs %s; as root on Debian: apt-get install -y iproute2 redis-server redis-tools haproxy stunnel4",
			strings.Join(missing, ", "))
	}
}

func TestBenchMesh(t *testing.T) {
	requireTools(t)
	set := currentSettings()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Hour)
	defer cancel()
	dir := t.TempDir()
	bin := *flagBin
	if bin == "" {
		bin = e2etest.BuildAttestmesh(ctx, t)
	}
	bin, err := filepath.Abs(bin)
	require.NoError(t, err)
	var extra []string
	if *flagSidecarArgs != "" {
		extra = strings.Fields(*flagSidecarArgs)
	}
	var prof *profiler
	if *flagProfile != "" {
		require.NoError(t, os.MkdirAll(*flagProfile, 0o755))
		prof = &profiler{dir: *flagProfile, logf: t.Logf}
		extra = append(extra, "--pprof")
	}
	// Runs last: whatever a failed run left behind is removed.
	t.Cleanup(func() { sweep(t, dir) })

	report := &report{settings: set, machine: describeMachine(ctx), sidecarArgs: extra}
	report.loadBefore = loadavg()
	m := startMesh(ctx, t, bin, dir, extra)
	server, client := m.info.Services["redis"], m.info.Services["client"]
	serverIP := server.Address.String()

	pki := writePKI(t, filepath.Join(dir, "pki"))
	var peers []*daemon
	stopPeers := func() {
		for _, d := range peers {
			d.stop()
		}
	}
	t.Cleanup(stopPeers)
	startDaemon := func(name, ns string, argv ...string) *daemon {
		d, err := startIn(dir, name, ns, argv...)
		require.NoError(t, err)
		peers = append(peers, d)
		return d
	}
	startDaemon("redis-direct", server.Namespace, "redis-server", "--port", strconv.Itoa(directPort), "--bind", serverIP,
		"--save", "", "--appendonly", "no", "--protected-mode", "no")
	hs := startDaemon("haproxy-server", server.Namespace, "haproxy", "-db", "-f",
		writeConfig(t, dir, "haproxy-server.cfg", haproxyServer(pki, serverIP)))
	hc := startDaemon("haproxy-client", client.Namespace, "haproxy", "-db", "-f",
		writeConfig(t, dir, "haproxy-client.cfg", haproxyClient(pki, serverIP)))
	ss := startDaemon("stunnel-server", server.Namespace, "stunnel4",
		writeConfig(t, dir, "stunnel-server.conf", stunnelServer(pki, dir, serverIP)))
	sc := startDaemon("stunnel-client", client.Namespace, "stunnel4",
		writeConfig(t, dir, "stunnel-client.conf", stunnelClient(pki, dir, serverIP)))

	loop := func(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
	paths := []*path{
		{name: "direct", addr: net.JoinHostPort(serverIP, strconv.Itoa(directPort))},
		{name: "attestmesh", addr: loop(redisPort), pids: []int{client.SidecarPID, server.SidecarPID}, admins: []admin{
			{name: "client", ns: client.Namespace, addr: client.AdminAddr}, {name: "server", ns: server.Namespace, addr: server.AdminAddr},
		}},
		{name: "HAProxy", addr: loop(haproxyPort), pids: []int{hc.pid(), hs.pid()}},
		{name: "stunnel", addr: loop(stunnelPort), pids: []int{sc.pid(), ss.pid()}},
	}
	for _, p := range paths {
		require.NoError(t, waitPing(ctx, client.Namespace, p.addr, 30*time.Second, peers), "path %s (%s)", p.name, p.addr)
	}
	for _, p := range paths {
		p.rssIdle, p.anonIdle = rssOf(p.pids), anonOf(p.pids)
		if len(p.pids) > 0 {
			t.Logf("  %-10s idle RSS %d KiB (%.2f MB), anonymous %d KiB", p.name, p.rssIdle, float64(p.rssIdle)*1024/1e6, p.anonIdle)
		}
	}
	t.Logf("every path answers PING; warming up (%d requests each)", set.warmup)
	for _, p := range paths {
		_, err := redisBenchmark(ctx, client.Namespace, p.addr, set.conns, set.warmup, "set,get")
		require.NoError(t, err, "warm-up of %s", p.name)
	}

	for r := range set.rounds {
		load := loadavg()
		order := rotate(paths, r)
		var names []string
		for _, p := range order {
			names = append(names, p.name)
		}
		t.Logf("round %d/%d (load average %s): %s", r+1, set.rounds, load, strings.Join(names, ", "))
		report.loadRounds = append(report.loadRounds, load)
		for _, p := range order {
			var pr *profiler
			if r == 0 {
				pr = prof
			}
			s, err := measure(ctx, client.Namespace, p, set, pr)
			require.NoError(t, err, "round %d, %s", r+1, p.name)
			p.rounds = append(p.rounds, s)
			t.Logf("  %-10s %s", p.name, s)
		}
	}
	report.loadAfter = loadavg()
	for _, p := range paths {
		p.rssAfter = rssOf(p.pids)
	}
	report.paths = paths
	text := report.markdown()
	fmt.Println(text)
	if *flagOut != "" {
		require.NoError(t, os.MkdirAll(filepath.Dir(*flagOut), 0o755))
		require.NoError(t, os.WriteFile(*flagOut, []byte(text), 0o600))
		t.Logf("report written to %s", *flagOut)
	}

	// Everything stops and nothing is left behind.
	var pids []int
	for _, d := range peers {
		pids = append(pids, d.pid())
	}
	stopPeers()
	pids = append(pids, m.pids(t)...)
	require.NoError(t, m.stop(), "attestmesh up stops cleanly")
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, pid := range pids {
			assert.False(c, alive(pid), "process %d (%s) still runs", pid, cmdline(pid))
		}
		assert.Empty(c, mentioning(dir), "processes that mention the run's directory")
	}, 15*time.Second, 100*time.Millisecond)
	assert.Empty(t, e2etest.Ours(context.WithoutCancel(t.Context()), t, bridge, "netns", "list"), "namespaces left behind (ip netns list)")
	assert.Empty(t, e2etest.Ours(context.WithoutCancel(t.Context()), t, bridge, "-o", "link", "show"), "links left behind (ip link show)")
}

// path is one way from the client's namespace to a Redis in the server's.
type path struct {
	name   string
	addr   string  // where the client connects, from its namespace
	pids   []int   // the proxies of the path (none for direct)
	admins []admin // the sidecars' admin endpoints

	rounds            []sample
	rssIdle, rssAfter int64 // KiB, the larger of the path's processes
	anonIdle          int64 // KiB, anonymous RSS, the larger of the path's processes
}

// sample is one round of one path.
type sample struct {
	getRPS, setRPS   float64
	getCPU, setCPU   time.Duration // CPU time per request, all of the path's processes
	oneP50, oneP99   float64       // ms, one connection
	rateP50, rateP99 float64       // ms, fixed rate
	rateP999         float64
	rateAnswered     float64 // fraction of the fixed-rate requests due that were answered in time
	rssLoad          int64   // KiB, the larger of the path's processes at its peak
	anonLoad         int64   // KiB, the same for anonymous RSS
}

func (s sample) String() string {
	return fmt.Sprintf("GET %8.0f/s  SET %8.0f/s  CPU/GET %5.1f µs  1 conn p50 %.3f p99 %.3f ms  fixed rate p50 %.3f p99 %.3f p99.9 %.3f ms (%.1f%% answered)  RSS %d KiB",
		s.getRPS, s.setRPS, us(s.getCPU), s.oneP50, s.oneP99, s.rateP50, s.rateP99, s.rateP999, 100*s.rateAnswered, s.rssLoad)
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// measure runs one round of p: SET and GET throughput with their CPU time and peak RSS, GET
// latency at one connection, and GET latency at a fixed rate. With a profiler, the GET run is
// profiled (and its CPU time includes the profilers' share).
func measure(ctx context.Context, ns string, p *path, set settings, prof *profiler) (sample, error) {
	var s sample
	for _, test := range []string{"set", "get"} {
		stop := func() {}
		if prof != nil && test == "get" {
			stop = prof.start(ctx, p)
		}
		rss := sampleRSS(p.pids)
		cpu0 := cpuOf(p.pids)
		res, err := redisBenchmark(ctx, ns, p.addr, set.conns, set.requests, test)
		cpu := cpuOf(p.pids) - cpu0
		peak, anon := rss.stop()
		stop()
		if err != nil {
			return s, err
		}
		s.rssLoad, s.anonLoad = max(s.rssLoad, peak), max(s.anonLoad, anon)
		perReq := cpu / time.Duration(set.requests)
		if test == "set" {
			s.setRPS, s.setCPU = res.rps, perReq
		} else {
			s.getRPS, s.getCPU = res.rps, perReq
		}
	}
	stop := func() {}
	if prof != nil {
		stop = prof.count(ctx, p, "oneconn")
	}
	res, err := redisBenchmark(ctx, ns, p.addr, 1, set.latency, "get")
	stop()
	if err != nil {
		return s, err
	}
	s.oneP50, s.oneP99 = res.p50, res.p99
	fr, err := fixedRate(ctx, ns, p.addr, set.rate, set.rateConns, set.rateFor)
	if err != nil {
		return s, fmt.Errorf("fixed rate: %w", err)
	}
	s.rateP50, s.rateP99, s.rateP999 = fr.lat.percentile(50), fr.lat.percentile(99), fr.lat.percentile(99.9)
	s.rateAnswered = float64(len(fr.lat)) / float64(max(fr.due, 1))
	return s, nil
}

func rotate(paths []*path, r int) []*path {
	out := make([]*path, 0, len(paths))
	for i := range paths {
		out = append(out, paths[(i+r)%len(paths)])
	}
	return out
}

// mesh is a running local.Up of testdata/mesh.yaml.
type mesh struct {
	info     *local.Info
	out      *proxytest.SyncBuffer
	cancel   context.CancelFunc
	done     chan struct{}
	upErr    error
	stopOnce sync.Once
	stopErr  error
}

func startMesh(ctx context.Context, t *testing.T, bin, dir string, sidecarArgs []string) *mesh {
	t.Helper()
	meshFile, err := filepath.Abs("testdata/mesh.yaml")
	require.NoError(t, err)
	stateDir := filepath.Join(dir, "up")
	upCtx, cancel := context.WithCancel(ctx)
	m := &mesh{out: &proxytest.SyncBuffer{}, cancel: cancel, done: make(chan struct{})}
	ready := make(chan *local.Info, 1)
	go func() {
		defer close(m.done)
		m.upErr = local.Up(upCtx, local.Config{
			MeshFile: meshFile, Binary: bin, StateDir: stateDir, SidecarArgs: sidecarArgs,
			Subnet: netip.MustParsePrefix(subnet), Bridge: bridge,
			Out: m.out, Ready: func(i *local.Info) { ready <- i }, StartTimeout: time.Minute,
		})
	}()
	t.Cleanup(func() {
		if err := m.stop(); err != nil {
			t.Errorf("stopping the mesh: %v", err)
		}
		if t.Failed() {
			t.Logf("attestmesh up:\n%s", m.out.String())
			logTails(t, stateDir)
		}
	})
	select {
	case m.info = <-ready:
		t.Logf("attestmesh up:\n%s", m.out.String())
		return m
	case <-m.done:
		require.FailNow(t, "attestmesh up ended before it was ready", "%v\n%s", m.upErr, m.out.String())
	case <-ctx.Done():
		require.FailNow(t, "attestmesh up is not ready", "%v\n%s", ctx.Err(), m.out.String())
	}
	return nil
}

// stop cancels Up and waits for it to stop everything; it returns Up's error.
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

// pids lists the processes in the mesh's namespaces.
func (m *mesh) pids(t *testing.T) []int {
	t.Helper()
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
	return pids
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

func writeConfig(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// describeMachine says what the numbers ran on.
func describeMachine(ctx context.Context) []string {
	// version returns the first line of a program's output that starts with prefix.
	version := func(prefix, name string, args ...string) string {
		out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(line, prefix) {
				return strings.TrimSpace(line)
			}
		}
		return name + ": version unknown"
	}
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			if kib, err := strconv.ParseFloat(f[1], 64); err == nil {
				mem = fmt.Sprintf("%.0f GiB", kib/(1<<20))
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return []string{
		fmt.Sprintf("%s, %d CPUs, %s memory, Linux %s", model, runtime.NumCPU(), mem, strings.TrimSpace(string(kernel))),
		fmt.Sprintf("%s; %s; %s; %s", runtime.Version(), version("HAProxy version", "haproxy", "-v"),
			version("stunnel ", "stunnel4", "-version"), version("Redis server", "redis-server", "--version")),
	}
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
