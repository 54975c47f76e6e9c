//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/attestmesh/attestmesh/e2e/e2etest"
	"github.com/stretchr/testify/require"
)

// proc is a process that the test starts in a process group of its own, so that a signal
// reaches everything it started (a launcher's app, etcd's children); its output goes to a log
// file that a restart appends to. Every proc is stopped when the test ends.
type proc struct {
	name string
	bin  string
	args []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startProc starts bin with args, logging to dir/name.log.
func startProc(t *testing.T, dir, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, bin: bin, args: args, log: filepath.Join(dir, name+".log")}
	require.NoError(t, p.start())
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- %s (last lines of %s) ---\n%s", name, p.log, p.tail(40))
		}
	})
	return p
}

func (p *proc) start() error {
	logFile, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...) //nolint:noctx // stopped by stop, in the test's cleanup
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return nil
}

// restart starts the process again with the same arguments; the last run must have ended.
func (p *proc) restart() error {
	if !p.exited() {
		return fmt.Errorf("%s still runs", p.name)
	}
	return p.start()
}

// signal sends sig to the process group.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

func (p *proc) exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the group and waits, at most 10 s, for the process to end.
func (p *proc) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing %s: %w", p.name, err)
	}
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s did not end within 10 s of SIGKILL", p.name)
	}
}

// stop ends the group: SIGCONT (it may be stopped), SIGTERM, and SIGKILL after 10 s.
func (p *proc) stop() {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return
	default:
	}
	_ = p.signal(syscall.SIGCONT)
	_ = p.signal(syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(10 * time.Second):
	}
	_ = p.signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// tail returns the last n lines of the log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// etcdBinary returns the real etcd server, of the version that go.mod requires, built from the
// module proxy once into ~/.cache/attestmesh/etcd.
func etcdBinary(ctx context.Context, t *testing.T) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", "go.etcd.io/etcd/server/v3").Output()
	require.NoError(t, err, "go list -m go.etcd.io/etcd/server/v3")
	version := strings.TrimSpace(string(out))
	home, err := os.UserHomeDir()
	require.NoError(t, err)
	dir := filepath.Join(home, ".cache", "attestmesh", "etcd")
	bin := filepath.Join(dir, "etcd-"+version)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	start := time.Now()
	tmp := bin + ".tmp"
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", tmp, "go.etcd.io/etcd/server/v3")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "building etcd %s:\n%s", version, b)
	require.NoError(t, os.Rename(tmp, bin))
	t.Logf("etcd %s built in %s into %s", version, time.Since(start).Round(time.Second), bin)
	return bin
}

// etcdMember is one member of the test's etcd cluster.
type etcdMember struct {
	name   string
	client string // host:port
	peer   string
	p      *proc
}

// etcdCluster is a real etcd cluster on loopback, one process per member.
type etcdCluster struct {
	members []*etcdMember
}

// startEtcdCluster starts n members, member i on 127.0.2.<i+1> (client port 22379, peer port
// 22380: fixed ports below the ephemeral range, on addresses of their own, so that nothing
// else on the machine takes them between picking and binding), and waits until every member
// reports itself healthy.
func startEtcdCluster(ctx context.Context, t *testing.T, bin, dir string, n int) *etcdCluster {
	t.Helper()
	c := &etcdCluster{}
	var initial []string
	for i := range n {
		host := fmt.Sprintf("127.0.2.%d", i+1)
		m := &etcdMember{name: fmt.Sprintf("etcd%d", i), client: host + ":22379", peer: host + ":22380"}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"=http://"+m.peer)
	}
	for _, m := range c.members {
		data := filepath.Join(dir, m.name)
		m.p = startProc(t, dir, m.name, bin,
			"--name", m.name, "--data-dir", data,
			"--listen-client-urls", "http://"+m.client, "--advertise-client-urls", "http://"+m.client,
			"--listen-peer-urls", "http://"+m.peer, "--initial-advertise-peer-urls", "http://"+m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "attestmesh-chaos", "--log-level", "warn")
	}
	for _, m := range c.members {
		require.NoError(t, c.waitHealthy(ctx, m, time.Minute), "%s\n%s", m.name, m.p.tail(20))
	}
	return c
}

// endpoints is the --store value: etcd://every member's client address.
func (c *etcdCluster) endpoints() string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.client)
	}
	return "etcd://" + strings.Join(eps, ",")
}

// waitHealthy polls the member's /health until it says true.
func (c *etcdCluster) waitHealthy(ctx context.Context, m *etcdMember, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		if m.p.exited() {
			return fmt.Errorf("%s exited", m.name)
		}
		body, err := e2etest.Get(ctx, "http://"+m.client+"/health")
		switch {
		case err != nil:
			last = fmt.Errorf("%s /health: %w", m.name, err)
		case strings.Contains(body, `"health":"true"`):
			return nil
		default:
			last = fmt.Errorf("%s /health: %s", m.name, body)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("not healthy within %s: %w", within, last)
}

// leader returns the member that the live members name as their leader.
func (c *etcdCluster) leader(ctx context.Context) (*etcdMember, error) {
	type status struct {
		Header struct {
			MemberID string `json:"member_id"`
		} `json:"header"`
		Leader string `json:"leader"`
	}
	ids := map[string]*etcdMember{}
	var leader string
	for _, m := range c.members {
		if m.p.exited() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		req, err := http.NewRequestWithContext(rctx, http.MethodPost, "http://"+m.client+"/v3/maintenance/status", strings.NewReader("{}"))
		if err != nil {
			cancel()
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("%s status: %w", m.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		var s status
		if err := json.Unmarshal(b, &s); err != nil || s.Leader == "" || s.Leader == "0" {
			return nil, fmt.Errorf("%s status: %s", m.name, bytes.TrimSpace(b))
		}
		ids[s.Header.MemberID] = m
		if leader != "" && leader != s.Leader {
			return nil, fmt.Errorf("members disagree on the leader: %s and %s", leader, s.Leader)
		}
		leader = s.Leader
	}
	if m, ok := ids[leader]; ok {
		return m, nil
	}
	return nil, fmt.Errorf("leader %s is none of the live members", leader)
}
