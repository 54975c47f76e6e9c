//go:build e2e

package e2e

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/session"
	"github.com/attestmesh/attestmesh/e2e/e2etest"
)

// The chaos test's workload and schedule.
const (
	chaosUpdates  = 1000 // session updates the client loop makes
	chaosSessions = 6    // sessions they spread over
	chaosWorkers  = 8    // concurrent clients
	// chaosPace is the least time between two updates: 1,000 updates take at least 55 s, so
	// that the load spans the whole schedule below.
	chaosPace       = 55 * time.Millisecond
	chaosKillCP     = 8 * time.Second  // SIGKILL a control-plane replica
	chaosKillLeader = 16 * time.Second // SIGKILL the etcd leader
	chaosStop       = 24 * time.Second // SIGSTOP another replica ...
	chaosStopFor    = 20 * time.Second // ... for this long, then SIGCONT
	chaosRestart    = 48 * time.Second // start the killed etcd member and replica again
	// The tunnel: redis-server behind the server's sidecar, reached through the client's.
	tunnelAppPort   = 26379
	tunnelLocalPort = 26380
	tunnelServerIP  = "127.0.3.1"
	tunnelClientIP  = "127.0.3.2"
	// tunnelTimeout bounds each exchange through the tunnel. The data plane does not wait for
	// the control plane; on a shared two-core machine, though, starting etcd and a replica
	// again has stalled every process for over 2 s.
	tunnelTimeout = 5 * time.Second
)

// replica is one `attestmesh controlplane` process of the chaos test. Replica i binds
// 127.0.1.<i+1> on fixed ports below the ephemeral range (nothing else takes them between
// picking and binding, and a restart gets the same addresses) and advertises that address.
type replica struct {
	i                                int
	host                             string
	mgmt, attest, xds, metrics, las  string
	dataDir                          string
	p                                *proc
	client                           *mgmtapi.Client
	killed, stopped, restarted, live bool
}

func (r *replica) String() string { return fmt.Sprintf("replica %d (%s)", r.i, r.host) }

// TestChaos runs three etcd members and three control-plane replicas on loopback, a sidecar
// tunnel (redis-server behind sidecars) and a client loop of 1,000 predecessor-checked session
// updates, reads and launcher attestations spread over the replicas. Meanwhile it SIGKILLs a
// replica and the etcd leader and SIGSTOPs another replica for 20 s. Then: every acknowledged
// update is in its session's history, the history of updates and reads is linearizable
// (porcupine), all replicas serve one CA, and the tunnel carried traffic throughout; it
// reports how fast the sidecars reconnected and noticed the stopped replica.
func TestChaos(t *testing.T) {
	if os.Geteuid() != 0 {
		e2etest.Prerequisite(t, "skipping: the launcher needs root for its private mount namespace (CI runs as root)")
	}
	if _, err := exec.LookPath(redisServer); err != nil {
		e2etest.Prerequisite(t, fmt.Sprintf("skipping: the tunnel runs %s (apt-get install -y redis-server)", redisServer))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute)
	defer cancel()
	start := time.Now()
	bin := e2etest.BuildAttestmesh(ctx, t)
	etcdBin := etcdBinary(ctx, t)
	t.Logf("attestmesh and etcd ready in %s", time.Since(start).Round(time.Millisecond))
	dir := t.TempDir()

	start = time.Now()
	cluster := startEtcdCluster(ctx, t, etcdBin, dir, 3)
	t.Logf("3 etcd members healthy in %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	replicas := startReplicas(ctx, t, bin, dir, cluster)
	t.Logf("3 control-plane replicas serving in %s (started together: they raced to create the CA)", time.Since(start).Round(time.Millisecond))
	caFile := filepath.Join(replicas[0].dataDir, "ca.pem")
	assertOneCA(ctx, t, replicas, "at start")

	c := &chaos{t: t, ctx: ctx, bin: bin, sidecarBin: controlplane.DefaultSidecarBinary(bin), dir: dir, caFile: caFile, cluster: cluster, replicas: replicas, hist: newHistory()}
	c.createSessions()
	c.startTunnel()
	c.placeSidecars()

	c.run()

	c.checkAfter()
}

// startReplicas starts three replicas on one etcd, together, and waits until each serves its
// management API and has written its CA bundle.
func startReplicas(ctx context.Context, t *testing.T, bin, dir string, cluster *etcdCluster) []*replica {
	t.Helper()
	key := bytesHex(32)
	var rs []*replica
	var xdsAddrs []string
	for i := range 3 {
		host := fmt.Sprintf("127.0.1.%d", i+1)
		r := &replica{i: i, host: host, mgmt: host + ":28081", attest: host + ":28765", xds: host + ":28000",
			metrics: host + ":29102", las: host + ":28766", dataDir: filepath.Join(dir, fmt.Sprintf("cp%d", i), "data"), live: true}
		rs = append(rs, r)
		xdsAddrs = append(xdsAddrs, r.xds)
	}
	// The replicas share one rollback anchor, as the chart's share one Secret: a replica with an
	// anchor of its own that records nothing refuses a store that others have written to.
	anchor := filepath.Join(dir, "store.generation")
	for _, r := range rs {
		// Each replica has its own copy of the one store key, as each machine of a real
		// installation has.
		keyFile := filepath.Join(dir, fmt.Sprintf("cp%d", r.i), "store.key")
		require.NoError(t, os.MkdirAll(filepath.Dir(keyFile), 0o700))
		require.NoError(t, os.WriteFile(keyFile, []byte(key), 0o600))
		r.p = startProc(t, dir, fmt.Sprintf("cp%d", r.i), bin, "controlplane",
			"--data-dir", r.dataDir, "--store", cluster.endpoints(), "--store-key-file", keyFile, "--store-anchor", anchor, "--simulation",
			"--mgmt-addr", r.mgmt, "--attest-addr", r.attest, "--xds-addr", r.xds, "--metrics-addr", r.metrics, "--las-addr", r.las,
			"--advertise-host", r.host, "--advertise-xds", strings.Join(xdsAddrs, ","),
			// The loop's clients share one identity; the per-client rate limit is not under test.
			"--client-rate", "-1")
	}
	for _, r := range rs {
		require.NoError(t, r.waitServing(ctx, time.Minute), "%s:\n%s", r, r.p.tail(30))
	}
	pool, err := ca.PoolFromPEM(mustRead(t, filepath.Join(rs[0].dataDir, "ca.pem")))
	require.NoError(t, err)
	id, err := mgmtapi.LoadOrCreateIdentity(filepath.Join(dir, "owner"))
	require.NoError(t, err)
	for _, r := range rs {
		r.client, err = mgmtapi.NewClient(mgmtapi.ClientConfig{URL: "https://" + r.mgmt, Roots: pool, Identity: id, Timeout: 5 * time.Second})
		require.NoError(t, err)
	}
	return rs
}

// waitServing waits until the replica has written its CA bundle and accepts connections on
// its management API.
func (r *replica) waitServing(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if r.p.exited() {
			return fmt.Errorf("%s exited", r)
		}
		if _, err := os.Stat(filepath.Join(r.dataDir, "ca.pem")); err == nil {
			var d net.Dialer
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			conn, err := d.DialContext(dctx, "tcp", r.mgmt)
			cancel()
			if err == nil {
				_ = conn.Close()
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not serving within %s", r, within)
}

// assertOneCA checks that every live replica serves the same CA bundle at /v1/ca, the one in
// its data directory, and that all data directories hold the same.
func assertOneCA(ctx context.Context, t *testing.T, rs []*replica, when string) {
	t.Helper()
	var first []byte
	for _, r := range rs {
		file := mustRead(t, filepath.Join(r.dataDir, "ca.pem"))
		if first == nil {
			first = file
		}
		assert.Equal(t, string(first), string(file), "%s: %s's ca.pem", when, r)
		if !r.live {
			continue
		}
		served := fetchCA(ctx, t, r, first)
		assert.Equal(t, string(first), served, "%s: %s's /v1/ca", when, r)
	}
	certs, err := ca.ParseCertsPEM(first)
	require.NoError(t, err)
	t.Logf("%s: one CA on every replica: %s (serial %s)", when, certs[0].Subject, certs[0].SerialNumber.Text(16))
}

// fetchCA reads /v1/ca without a client certificate, verifying the replica against bundle.
func fetchCA(ctx context.Context, t *testing.T, r *replica, bundle []byte) string {
	t.Helper()
	pool, err := ca.PoolFromPEM(bundle)
	require.NoError(t, err)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	var body string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+r.mgmt+"/v1/ca", nil)
		require.NoError(c, err)
		resp, err := hc.Do(req)
		require.NoError(c, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(c, err)
		require.Equal(c, http.StatusOK, resp.StatusCode, "%s", b)
		body = string(b)
	}, 30*time.Second, 200*time.Millisecond, "%s /v1/ca", r)
	return body
}

// chaos is the scenario's state.
type chaos struct {
	t        *testing.T
	ctx      context.Context
	bin, dir string
	// sidecarBin is the sidecar build beside bin, which the replicas accept for sidecars and
	// which runs the sidecars and launchers.
	sidecarBin string
	caFile     string
	trueMR     string // the simulated MRENCLAVE of /bin/true
	cluster    *etcdCluster
	replicas   []*replica
	hist       *history

	srvSidecar, cliSidecar *sidecarProc
	// The replicas the schedule kills and stops, and the one left alone, whose LAS the
	// attestation loop uses (the LAS stands for the machine's quoting enclave, which is not
	// the control plane's to lose).
	victim, frozen, survivor *replica

	// Times of the schedule, on the history's clock.
	tKill, tLeader, tStop, tCont, tRestart time.Duration
	killedMember                           *etcdMember
}

func (c *chaos) allAttest() string {
	var as []string
	for _, r := range c.replicas {
		as = append(as, r.attest)
	}
	return strings.Join(as, ",")
}

// createSessions creates the sessions the loop updates, the attestation loop's session and the
// tunnel's, and registers the tunnel's mesh.
func (c *chaos) createSessions() {
	t, ctx := c.t, c.ctx
	cl := c.replicas[0].client
	c.trueMR = mustMeasure(t, "/bin/true").Hex()
	for s := range chaosSessions {
		name := fmt.Sprintf("chaos-%d", s)
		doc := chaosDoc(name, "", c.trueMR, "create", 0)
		call := c.hist.now()
		resp, err := cl.Create(ctx, doc)
		require.NoError(t, err, "create %s", name)
		require.Equal(t, session.Hash(doc), resp.Hash)
		c.hist.update(0, name, "", resp.Hash, call, outcomeOK, c.replicas[0].String(), nil)
	}
	simulation := "security: {attestation: {mode: simulation}}\n"
	docs := []string{
		"name: chaos-attest\nversion: \"0.3\"\n" + simulation +
			fmt.Sprintf("services:\n  - {name: app, mrenclaves: [%s], command: /bin/true}\n", mustMeasure(t, "/bin/true").Hex()),
		"name: chaostun\nversion: \"0.3\"\n",
		"name: chaostun/srv\nversion: \"0.3\"\n" + simulation + fmt.Sprintf("services:\n  - name: srv\n    mrenclaves: [%s]\n"+
			"    command: %s --port %d --bind 127.0.0.1 --save \"\" --appendonly no\n", mustMeasure(t, redisServer).Hex(), redisServer, tunnelAppPort),
		"name: chaostun/cli\nversion: \"0.3\"\n" + simulation +
			fmt.Sprintf("services:\n  - {name: cli, mrenclaves: [%s], command: /bin/sleep 3600}\n", mustMeasure(t, "/bin/sleep").Hex()),
	}
	for _, d := range docs {
		_, err := cl.Create(ctx, []byte(d))
		require.NoError(t, err, "create:\n%s", d)
	}
	reg, err := (&mgmtapi.Registration{
		Mesh: fmt.Sprintf("name: chaostun\nsessions: [unused.yaml]\nservices:\n"+
			"  - {name: srv, config_id: chaostun/srv/srv, binary: %s, ports: [{port: %d}]}\n"+
			"  - {name: cli, config_id: chaostun/cli/cli, binary: /bin/sleep, connects: [{service: srv, port: %d, local_port: %d}]}\n",
			redisServer, tunnelAppPort, tunnelAppPort, tunnelLocalPort),
		Endpoints: map[string]string{"srv": tunnelServerIP, "cli": tunnelClientIP},
	}).Marshal()
	require.NoError(t, err)
	require.NoError(t, cl.PutMesh(ctx, "chaostun", reg))
}

// chaosDoc is a session document for the loop: unique by writer and sequence number.
func chaosDoc(name, predecessor, mr, writer string, seq int) []byte {
	d := fmt.Sprintf("name: %s\nversion: \"0.3\"\nservices:\n  - {name: app, mrenclaves: [%s], command: /bin/true, environment: {WRITER: %q, SEQ: \"%d\"}}\n",
		name, mr, writer, seq)
	if predecessor != "" {
		d = "predecessor: " + predecessor + "\n" + d
	}
	return []byte(d)
}

// sidecarProc is a sidecar and its app's launcher.
type sidecarProc struct {
	name     string
	configID string
	admin    string
	launcher *proc
	proxy    *proc
	restarts int

	mu     sync.Mutex
	events []adsEvent // changes of the ADS stream's state, as the admin endpoint shows it
}

type adsEvent struct {
	at        time.Duration
	connected bool
	lastError string
}

// startTunnel starts redis-server under its launcher with its sidecar, and the client's
// launcher (an idle app) with its sidecar, and waits until a PING crosses the tunnel.
func (c *chaos) startTunnel() {
	t := c.t
	common := []string{"--attest-addr", c.allAttest(), "--ca-file", c.caFile, "--las-addr", c.replicas[0].las}
	start := func(name, configID, binary, ip string) *sidecarProc {
		s := &sidecarProc{name: name, configID: configID, admin: ip + ":25000"}
		s.launcher = startProc(t, c.dir, name+"-launch", c.sidecarBin, append(append([]string{"launch", "--config-id", configID}, common...), "--", binary)...)
		s.proxy = startProc(t, c.dir, name+"-sidecar", c.sidecarBin, append([]string{"proxy", "--config-id", configID, "--admin-addr", s.admin}, common...)...)
		return s
	}
	c.srvSidecar = start("srv", "chaostun/srv/srv", redisServer, tunnelServerIP)
	c.cliSidecar = start("cli", "chaostun/cli/cli", "/bin/sleep", tunnelClientIP)
	begin := time.Now()
	require.EventuallyWithT(t, func(co *assert.CollectT) {
		assert.NoError(co, redisPing(c.ctx, 2*time.Second))
	}, 90*time.Second, 250*time.Millisecond, "a PING through the tunnel")
	t.Logf("tunnel carries PING after %s", time.Since(begin).Round(time.Millisecond))
}

// redisPing dials the client sidecar's outbound listener and expects +PONG.
func redisPing(ctx context.Context, timeout time.Duration) error {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", fmt.Sprintf("127.0.0.1:%d", tunnelLocalPort))
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// adsStatus reads the sidecar's ADS stream state from its admin endpoint.
func (s *sidecarProc) adsStatus(ctx context.Context) (connected bool, lastError string, err error) {
	body, err := e2etest.Get(ctx, "http://"+s.admin+"/config_dump")
	if err != nil {
		return false, "", err
	}
	var dump struct {
		XDS struct {
			Connected bool   `json:"connected"`
			LastError string `json:"last_error"`
		} `json:"xds"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		return false, "", err
	}
	return dump.XDS.Connected, dump.XDS.LastError, nil
}

// connectedSidecars is the replica's attestmesh_xds_connected_sidecars.
func (r *replica) connectedSidecars(ctx context.Context) (int, error) {
	body, err := e2etest.Get(ctx, "http://"+r.metrics+"/metrics")
	if err != nil {
		return 0, err
	}
	return int(e2etest.Sample(body, "attestmesh_xds_connected_sidecars")), nil
}

// placeSidecars makes the two sidecars follow ADS at two different replicas (restarting the
// client's sidecar, which then asks its launcher for a new grant, while they share one), and
// picks the schedule's replicas: the victim serves one sidecar, the frozen replica the other.
// Whichever replica a sidecar moves to after the kill, the SIGSTOP then takes one of them.
func (c *chaos) placeSidecars() {
	t, ctx := c.t, c.ctx
	var counts []int
	for attempt := 0; ; attempt++ {
		require.EventuallyWithT(t, func(co *assert.CollectT) {
			counts = counts[:0]
			total := 0
			for _, r := range c.replicas {
				n, err := r.connectedSidecars(ctx)
				require.NoError(co, err)
				counts = append(counts, n)
				total += n
			}
			assert.Equal(co, 2, total, "ADS streams over the replicas: %v", counts)
			// A restarted sidecar serves its listener once it has its configuration again.
			assert.NoError(co, redisPing(ctx, 2*time.Second), "a PING through the tunnel")
		}, 60*time.Second, 200*time.Millisecond)
		if slices.Max(counts) == 1 {
			break
		}
		require.Less(t, attempt, 8, "the sidecars kept landing on one replica: %v", counts)
		t.Logf("both sidecars follow one replica (%v): restarting the client's sidecar", counts)
		c.cliSidecar.proxy.stop()
		require.NoError(t, c.cliSidecar.proxy.restart())
		c.cliSidecar.restarts++
	}
	for i, n := range counts {
		switch {
		case n == 0:
			c.survivor = c.replicas[i]
		case c.victim == nil:
			c.victim = c.replicas[i]
		default:
			c.frozen = c.replicas[i]
		}
	}
	require.NotNil(t, c.survivor)
	t.Logf("ADS streams per replica %v: SIGKILL %s, SIGSTOP %s, %s left alone", counts, c.victim, c.frozen, c.survivor)
}

// loopStats are the client loop's counts.
type loopStats struct {
	updates atomic.Int64 // attempted
	reads   atomic.Int64 // attempted
	readOK  atomic.Int64
	byRep   [3][4]atomic.Int64 // updates per replica and outcome
	stalled atomic.Int64       // requests that took more than 2 s
}

// attestRecord is one launcher run of the attestation loop.
type attestRecord struct {
	at, took time.Duration
	ok       bool
	out      string
}

// tunnelRecord is one exchange through the tunnel.
type tunnelRecord struct {
	at, took time.Duration
	ok       bool
	fresh    bool // a new connection (else the long-lived one)
	err      string
}

// run drives the client loop, the attestation loop, the tunnel probes, the ADS watchers and
// the schedule together, and returns when 1,000 updates are done and the schedule is over.
func (c *chaos) run() {
	t, ctx := c.t, c.ctx
	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	var bg sync.WaitGroup

	// Observers: the sidecars' ADS state, every 50 ms; the tunnel, continuously.
	for _, s := range []*sidecarProc{c.srvSidecar, c.cliSidecar} {
		bg.Go(func() { c.watchADS(loopCtx, s) })
	}
	var tmu sync.Mutex
	var tunnel []tunnelRecord
	record := func(r tunnelRecord) { tmu.Lock(); tunnel = append(tunnel, r); tmu.Unlock() }
	bg.Go(func() { c.longConnection(loopCtx, record) })
	bg.Go(func() {
		for loopCtx.Err() == nil {
			at := time.Duration(c.hist.now())
			err := redisPing(loopCtx, tunnelTimeout)
			r := tunnelRecord{at: at, took: time.Duration(c.hist.now()) - at, ok: err == nil, fresh: true}
			if err != nil {
				r.err = err.Error()
			}
			if loopCtx.Err() == nil {
				record(r)
			}
			sleepCtx(loopCtx, 250*time.Millisecond)
		}
	})

	// The attestation loop: two launchers at a time, over all replicas.
	var amu sync.Mutex
	var attests []attestRecord
	for range 2 {
		bg.Go(func() {
			for loopCtx.Err() == nil {
				r := c.launchOnce(loopCtx)
				if loopCtx.Err() != nil && !r.ok {
					return
				}
				amu.Lock()
				attests = append(attests, r)
				amu.Unlock()
			}
		})
	}

	// The client loop.
	var stats loopStats
	known := make([]string, chaosSessions) // the last hash any client saw, per session
	var kmu sync.Mutex
	c.hist.mu.Lock()
	for s := range chaosSessions {
		known[s] = c.hist.acked[fmt.Sprintf("chaos-%d", s)][0]
	}
	c.hist.mu.Unlock()
	pace := time.NewTicker(chaosPace)
	defer pace.Stop()
	tokens := make(chan struct{})
	bg.Go(func() {
		defer close(tokens)
		for range chaosUpdates {
			select {
			case <-loopCtx.Done():
				return
			case <-pace.C:
			}
			select {
			case <-loopCtx.Done():
				return
			case tokens <- struct{}{}:
			}
		}
	})
	var workers sync.WaitGroup
	for w := range chaosWorkers {
		workers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano()))) //nolint:gosec // G404: workload choice
			seq := 0
			for range tokens {
				s := rng.IntN(chaosSessions)
				name := fmt.Sprintf("chaos-%d", s)
				kmu.Lock()
				pred := known[s]
				kmu.Unlock()
				seq++
				doc := chaosDoc(name, pred, c.trueMR, fmt.Sprintf("w%d", w), seq)
				r := c.replicas[rng.IntN(len(c.replicas))]
				call := c.hist.now()
				resp, err := r.client.Update(ctx, name, doc)
				o := classify(err)
				if time.Duration(c.hist.now()-call) > 2*time.Second {
					stats.stalled.Add(1)
				}
				next := session.Hash(doc)
				if o == outcomeOK && resp.Hash != next {
					t.Errorf("update of %s acknowledged with hash %s, want %s", name, resp.Hash, next)
				}
				c.hist.update(w, name, pred, next, call, o, r.String(), err)
				stats.updates.Add(1)
				stats.byRep[r.i][o].Add(1)
				if o == outcomeOK {
					kmu.Lock()
					if known[s] == pred {
						known[s] = next
					}
					kmu.Unlock()
				}
				// A read after anything but success, and after every third update: at a
				// random replica, as a client that lost track would.
				if o != outcomeOK || seq%3 == 0 {
					r := c.replicas[rng.IntN(len(c.replicas))]
					call := c.hist.now()
					stats.reads.Add(1)
					got, err := r.client.Get(ctx, name)
					if err == nil {
						c.hist.read(w, name, got.Hash, call)
						stats.readOK.Add(1)
						kmu.Lock()
						known[s] = got.Hash
						kmu.Unlock()
					}
				}
			}
		})
	}

	c.schedule()
	loopStart := time.Now()
	workers.Wait()
	t.Logf("client loop: %d updates done %s after the schedule ended", stats.updates.Load(), time.Since(loopStart).Round(time.Millisecond))
	// A little traffic after the last update, then stop the observers.
	sleepCtx(ctx, 2*time.Second)
	stopLoops()
	bg.Wait()

	c.reportLoop(&stats)
	c.reportAttestations(attests)
	c.reportTunnel(tunnel)
	c.reportADS()
}

// schedule runs the faults at their times; it returns after the restarts.
func (c *chaos) schedule() {
	t, ctx := c.t, c.ctx
	at := func(d time.Duration) {
		sleepCtx(ctx, d-time.Duration(c.hist.now()))
	}
	at(chaosKillCP)
	c.tKill = time.Duration(c.hist.now())
	require.NoError(t, c.victim.p.kill())
	c.victim.killed, c.victim.live = true, false
	t.Logf("%.1fs: SIGKILL %s", c.tKill.Seconds(), c.victim)

	at(chaosKillLeader)
	leader, err := c.cluster.leader(ctx)
	require.NoError(t, err, "finding the etcd leader")
	c.tLeader = time.Duration(c.hist.now())
	require.NoError(t, leader.p.kill())
	c.killedMember = leader
	t.Logf("%.1fs: SIGKILL the etcd leader %s (%s)", c.tLeader.Seconds(), leader.name, leader.client)
	go func() {
		// Who leads now, for the report.
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if m, err := c.cluster.leader(ctx); err == nil {
				t.Logf("%.1fs: etcd has a new leader, %s, %s after the kill", float64(c.hist.now())/1e9, m.name,
					(time.Duration(c.hist.now()) - c.tLeader).Round(time.Millisecond))
				return
			}
			sleepCtx(ctx, 50*time.Millisecond)
		}
	}()

	at(chaosStop)
	c.tStop = time.Duration(c.hist.now())
	require.NoError(t, c.frozen.p.signal(syscall.SIGSTOP))
	c.frozen.stopped = true
	t.Logf("%.1fs: SIGSTOP %s", c.tStop.Seconds(), c.frozen)
	at(chaosStop + chaosStopFor)
	c.tCont = time.Duration(c.hist.now())
	require.NoError(t, c.frozen.p.signal(syscall.SIGCONT))
	c.frozen.stopped = false
	t.Logf("%.1fs: SIGCONT %s", c.tCont.Seconds(), c.frozen)

	at(chaosRestart)
	c.tRestart = time.Duration(c.hist.now())
	require.NoError(t, c.killedMember.p.restart())
	require.NoError(t, c.victim.p.restart())
	c.victim.restarted = true
	t.Logf("%.1fs: started %s and %s again", c.tRestart.Seconds(), c.killedMember.name, c.victim)
	require.NoError(t, c.cluster.waitHealthy(ctx, c.killedMember, time.Minute), c.killedMember.p.tail(20))
	require.NoError(t, c.victim.waitServing(ctx, time.Minute), c.victim.p.tail(30))
	c.victim.live = true
	t.Logf("%.1fs: %s healthy again, %s serving again", float64(c.hist.now())/1e9, c.killedMember.name, c.victim)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// watchADS records every change of the sidecar's ADS state.
func (c *chaos) watchADS(ctx context.Context, s *sidecarProc) {
	last := true
	for ctx.Err() == nil {
		connected, lastErr, err := s.adsStatus(ctx)
		if err == nil && connected != last {
			s.mu.Lock()
			s.events = append(s.events, adsEvent{at: time.Duration(c.hist.now()), connected: connected, lastError: lastErr})
			s.mu.Unlock()
			last = connected
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// longConnection keeps one connection through the tunnel and sends ECHO on it every 20 ms;
// when it fails it records the failure and connects again.
func (c *chaos) longConnection(ctx context.Context, record func(tunnelRecord)) {
	var conn net.Conn
	var rd *bufio.Reader
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	for n := 0; ctx.Err() == nil; n++ {
		at := time.Duration(c.hist.now())
		err := func() error {
			if conn == nil {
				var d net.Dialer
				dctx, cancel := context.WithTimeout(ctx, tunnelTimeout)
				defer cancel()
				cn, err := d.DialContext(dctx, "tcp", fmt.Sprintf("127.0.0.1:%d", tunnelLocalPort))
				if err != nil {
					return err
				}
				conn, rd = cn, bufio.NewReader(cn)
			}
			payload := "chaos-" + strconv.Itoa(n)
			_ = conn.SetDeadline(time.Now().Add(tunnelTimeout))
			if _, err := fmt.Fprintf(conn, "*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n", len(payload), payload); err != nil {
				return err
			}
			want := fmt.Sprintf("$%d\r\n%s\r\n", len(payload), payload)
			got := make([]byte, len(want))
			if _, err := io.ReadFull(rd, got); err != nil {
				return err
			}
			if string(got) != want {
				return fmt.Errorf("ECHO answered %q, want %q", got, want)
			}
			return nil
		}()
		if ctx.Err() != nil {
			return
		}
		r := tunnelRecord{at: at, took: time.Duration(c.hist.now()) - at, ok: err == nil}
		if err != nil {
			r.err = err.Error()
			if conn != nil {
				_ = conn.Close()
				conn = nil
			}
		}
		record(r)
		sleepCtx(ctx, 20*time.Millisecond)
	}
}

// launchOnce runs one launcher of /bin/true over all replicas, with the survivor's LAS.
func (c *chaos) launchOnce(ctx context.Context) attestRecord {
	at := time.Duration(c.hist.now())
	lctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(lctx, c.sidecarBin, "launch", "--config-id", "chaos-attest/app", "--attest-addr", c.allAttest(),
		"--ca-file", c.caFile, "--las-addr", c.survivor.las, "--no-sidecar-grant", "--", "/bin/true")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return attestRecord{at: at, took: time.Duration(c.hist.now()) - at, ok: err == nil, out: string(out)}
}

func (c *chaos) reportLoop(stats *loopStats) {
	t := c.t
	h := c.hist
	h.mu.Lock()
	counts := maps.Clone(h.counts)
	h.mu.Unlock()
	t.Logf("session updates: %d made (+%d creates): %d acknowledged, %d conflicts (HTTP 409), %d of unknown outcome, %d refused (connection refused or 4xx); "+
		"%d reads, %d answered; %d requests took over 2 s",
		stats.updates.Load(), chaosSessions, counts[outcomeOK]-chaosSessions, counts[outcomeConflict], counts[outcomeUnknown], counts[outcomeRefused],
		stats.reads.Load(), stats.readOK.Load(), stats.stalled.Load())
	for _, r := range c.replicas {
		t.Logf("  updates at %s: ok %d, conflict %d, refused %d, unknown %d", r,
			stats.byRep[r.i][outcomeOK].Load(), stats.byRep[r.i][outcomeConflict].Load(), stats.byRep[r.i][outcomeRefused].Load(), stats.byRep[r.i][outcomeUnknown].Load())
	}
	assert.Equal(t, int64(chaosUpdates), stats.updates.Load(), "updates made")
	assert.Positive(t, stats.byRep[c.survivor.i][outcomeOK].Load(), "updates acknowledged by the survivor")
}

func (c *chaos) reportAttestations(rs []attestRecord) {
	t := c.t
	var ok, failed, duringStop int
	var slowest time.Duration
	var worst attestRecord
	for _, r := range rs {
		if r.ok {
			ok++
		} else {
			failed++
			t.Logf("launch at %.1fs failed after %s: %s", r.at.Seconds(), r.took.Round(time.Millisecond), lastLines(r.out, 3))
		}
		if r.at+r.took > c.tStop && r.at < c.tCont {
			duringStop++
		}
		if r.took > slowest {
			slowest, worst = r.took, r
		}
	}
	t.Logf("attestations (launcher, --attest-addr over the 3 replicas): %d made, %d ok, %d failed; %d overlapped the SIGSTOP; slowest %s (at %.1fs)",
		len(rs), ok, failed, duringStop, slowest.Round(time.Millisecond), worst.at.Seconds())
	for _, r := range c.replicas {
		if !r.live {
			continue
		}
		body, err := e2etest.Get(c.ctx, "http://"+r.metrics+"/metrics")
		if err != nil {
			continue
		}
		t.Logf("  %s counted %.0f successful attestations%s", r, sumSeries(body, `attestmesh_attestations_total{`, `result="ok"`),
			map[bool]string{true: " since its restart", false: ""}[r.restarted])
	}
	assert.Positive(t, ok, "successful attestations")
	assert.Zero(t, failed, "failed attestations")
}

// sumSeries adds the samples of the series that start with prefix and contain label.
func sumSeries(text, prefix, label string) float64 {
	var sum float64
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, prefix) && strings.Contains(line, label) {
			f := strings.Fields(line)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func (c *chaos) reportTunnel(rs []tunnelRecord) {
	t := c.t
	var echoes, echoFail, dials, dialFail int
	var maxGap, slowest time.Duration
	var lastOK time.Duration = -1
	var gapAt time.Duration
	for _, r := range rs {
		if r.fresh {
			dials++
			if !r.ok {
				dialFail++
				t.Logf("new connection through the tunnel at %.1fs failed: %s", r.at.Seconds(), r.err)
			}
			continue
		}
		echoes++
		if !r.ok {
			echoFail++
			t.Logf("ECHO on the long-lived connection at %.1fs failed: %s", r.at.Seconds(), r.err)
			continue
		}
		end := r.at + r.took
		if lastOK >= 0 && end-lastOK > maxGap {
			maxGap, gapAt = end-lastOK, lastOK
		}
		lastOK = end
		slowest = max(slowest, r.took)
	}
	t.Logf("tunnel: %d ECHOs on one long-lived connection, %d failed, slowest %s, longest time without an answer %s (from %.1fs); "+
		"%d new connections with PING, %d failed", echoes, echoFail, slowest.Round(time.Millisecond), maxGap.Round(time.Millisecond),
		gapAt.Seconds(), dials, dialFail)
	assert.Zero(t, echoFail, "the long-lived connection through the tunnel kept working")
	assert.Zero(t, dialFail, "new connections through the tunnel kept working")
	assert.Less(t, maxGap, tunnelTimeout, "the tunnel answered at least every %s", tunnelTimeout)
}

// reportADS derives from the sidecars' ADS state how long the reconnection after the kill
// took, and how long the SIGSTOP went unnoticed.
func (c *chaos) reportADS() {
	t := c.t
	type phase struct {
		name     string
		from, to time.Duration
	}
	for _, ph := range []phase{{"SIGKILL " + c.victim.String(), c.tKill, c.tLeader}, {"SIGSTOP " + c.frozen.String(), c.tStop, c.tRestart}} {
		affected := 0
		for _, s := range []*sidecarProc{c.srvSidecar, c.cliSidecar} {
			s.mu.Lock()
			events := slices.Clone(s.events)
			s.mu.Unlock()
			var down, up time.Duration = -1, -1
			var why string
			for _, e := range events {
				if e.at < ph.from || e.at >= ph.to {
					continue
				}
				if !e.connected && down < 0 {
					down, why = e.at, e.lastError
				}
				if e.connected && down >= 0 && up < 0 {
					up = e.at
				}
			}
			if down < 0 {
				continue
			}
			affected++
			if up < 0 {
				t.Errorf("%s: the %s sidecar lost its ADS stream %s after it and did not get it back", ph.name, s.name, (down - ph.from).Round(time.Millisecond))
				continue
			}
			t.Logf("%s: the %s sidecar lost its ADS stream %s after it (%s) and was connected again %s after it",
				ph.name, s.name, (down - ph.from).Round(time.Millisecond), why, (up - ph.from).Round(time.Millisecond))
			if strings.HasPrefix(ph.name, "SIGKILL") {
				assert.Less(t, up-ph.from, 2*time.Second, "the %s sidecar reconnected to a live replica within 2 s of the kill", s.name)
			} else {
				assert.Less(t, up-ph.from, chaosStopFor, "the %s sidecar left the stopped replica before it came back", s.name)
			}
		}
		assert.Positive(t, affected, "%s: a sidecar followed that replica, and its stream broke", ph.name)
	}
	total := 0
	for _, r := range c.replicas {
		if n, err := r.connectedSidecars(c.ctx); err == nil {
			total += n
		}
	}
	t.Logf("ADS streams at the end: %d over the replicas", total)
}

// checkAfter checks the store once everything is back: every replica serves the same current
// hash of every session, every acknowledged update is in its session's chain of predecessors,
// the history is linearizable, and one CA exists.
func (c *chaos) checkAfter() {
	t, ctx := c.t, c.ctx
	for _, r := range c.replicas {
		require.True(t, r.live, "%s live", r)
	}
	var found, acked, unknownApplied, unknown int
	for s := range chaosSessions {
		name := fmt.Sprintf("chaos-%d", s)
		var heads []string
		for _, r := range c.replicas {
			var got *mgmtapi.SessionResponse
			call := c.hist.now()
			require.EventuallyWithT(t, func(co *assert.CollectT) {
				var err error
				got, err = r.client.Get(ctx, name)
				require.NoError(co, err)
			}, 30*time.Second, 200*time.Millisecond, "%s at %s", name, r)
			c.hist.read(100+r.i, name, got.Hash, call)
			heads = append(heads, got.Hash)
		}
		assert.Equal(t, []string{heads[0], heads[0], heads[0]}, heads, "%s: every replica serves the same document", name)
		chain, err := c.hist.chain(heads[0])
		require.NoError(t, err, name)
		c.hist.mu.Lock()
		for _, h := range c.hist.acked[name] {
			acked++
			if chain[h] {
				found++
			} else {
				t.Errorf("%s: acknowledged document %s is not in the session's history", name, h)
			}
		}
		for _, h := range c.hist.unknown[name] {
			unknown++
			if chain[h] {
				unknownApplied++
				t.Logf("%s: an update of unknown outcome was applied: %s", name, c.hist.where[h])
			}
		}
		c.hist.mu.Unlock()
	}
	t.Logf("acknowledged writes (creates and updates): %d, found in their sessions' histories: %d; writes of unknown outcome: %d, of which applied: %d",
		acked, found, unknown, unknownApplied)
	assert.Equal(t, acked, found)

	c.hist.mu.Lock()
	ops := slices.Clone(c.hist.ops)
	c.hist.mu.Unlock()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(sessionModel.ToModel(), ops, 2*time.Minute)
	t.Logf("porcupine: %d operations (%d sessions), linearizable: %s, checked in %s", len(ops), chaosSessions, res, time.Since(start).Round(time.Millisecond))
	if res != porcupine.Ok {
		file := filepath.Join(os.TempDir(), "attestmesh-chaos-history.html")
		if err := porcupine.VisualizePath(sessionModel.ToModel(), info, file); err == nil {
			t.Logf("the history is drawn in %s", file)
		}
	}
	assert.Equal(t, porcupine.Ok, res, "the history of session updates and reads is linearizable")

	assertOneCA(ctx, t, c.replicas, "after the chaos")
	c.checkWatch()
}

// checkWatch creates a session at the survivor and measures how long each replica, among them
// the one that was stopped and the one that was killed and started again, takes to see it
// through the store's watch (its attestmesh_sessions gauge, recounted on every change it
// hears of).
func (c *chaos) checkWatch() {
	t, ctx := c.t, c.ctx
	count := func(r *replica) (float64, error) {
		body, err := e2etest.Get(ctx, "http://"+r.metrics+"/metrics")
		if err != nil {
			return 0, err
		}
		return e2etest.Sample(body, "attestmesh_sessions"), nil
	}
	var before float64
	require.EventuallyWithT(t, func(co *assert.CollectT) {
		var got []float64
		for _, r := range c.replicas {
			n, err := count(r)
			require.NoError(co, err)
			got = append(got, n)
		}
		assert.Equal(co, []float64{got[0], got[0], got[0]}, got, "attestmesh_sessions on the replicas")
		before = got[0]
	}, 10*time.Second, 100*time.Millisecond)
	_, err := c.survivor.client.Create(ctx, []byte("name: chaos-after\nversion: \"0.3\"\n"))
	require.NoError(t, err)
	written := time.Now()
	for _, r := range c.replicas {
		require.EventuallyWithT(t, func(co *assert.CollectT) {
			n, err := count(r)
			require.NoError(co, err)
			assert.InDelta(co, before+1, n, 0)
		}, 10*time.Second, 20*time.Millisecond, "%s sees the new session", r)
		took := time.Since(written)
		t.Logf("%s saw a session created at %s after %s", r, c.survivor, took.Round(time.Millisecond))
		assert.Less(t, took, time.Second, "%s follows the store's watch within a second", r)
	}
}

// bytesHex returns n random bytes as hex: a store key.
func bytesHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b) // crypto/rand does not fail
	return hex.EncodeToString(b)
}
