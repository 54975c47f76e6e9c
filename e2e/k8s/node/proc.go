//go:build e2e_k8s

package node

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// spawner starts every long-lived process from one OS thread that stays locked until the
// cluster is gone. The processes get SIGKILL when that thread ends (Pdeathsig), so a test
// binary that dies takes its cluster with it; and since no other goroutine can run on that
// thread, no unrelated thread exit (a goroutine that ends while locked to a thread after
// setns, say) can kill them early.
type spawner struct {
	reqs chan func()
	done chan struct{}
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		defer close(s.done)
		for f := range s.reqs {
			f()
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	s.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// close ends the thread; call it once every process it started has stopped.
func (s *spawner) close() {
	close(s.reqs)
	<-s.done
}

// process is one component, its output in logs/NAME.log.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, once done is closed
}

// run starts a component in its own process group.
func (c *Cluster) run(name, bin string, args ...string) (*process, error) {
	f, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: %s: %w", name, err)
	}
	// Stopped in order by teardown (SIGTERM, then SIGKILL), not by a context.
	cmd := exec.Command(bin, args...) //nolint:noctx // see above
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = componentEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.spawner.start(cmd); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("node: start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	c.log.Debug("started", "component", name, "pid", cmd.Process.Pid)
	return p, nil
}

func (c *Cluster) proc(name string) *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name]
}

// componentEnv is the environment of every component: the test's, with the system
// directories on PATH (iptables, mount, runc and the CNI plugins' helpers live there).
func componentEnv() []string {
	env := os.Environ()
	for i, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			env[i] = kv + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
			return env
		}
	}
	return append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group and SIGKILL when it has not exited after grace.
func (p *process) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return fmt.Errorf("node: %s did not stop within %s of SIGTERM; killed", p.name, grace)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("node: %s (pid %d) survives SIGKILL", p.name, pgid)
	}
}

// waitFor polls check every interval until it succeeds, ctx ends, or p (if not nil) exits.
// The error names what it waited for, with the tail of p's log.
func (c *Cluster) waitFor(ctx context.Context, p *process, what string, interval time.Duration, check func(context.Context) error) error {
	var last error
	began := time.Now()
	for {
		if p != nil && p.exited() {
			err := fmt.Errorf("%w while waiting for %s", errProcessExited, what)
			if p.err != nil {
				err = fmt.Errorf("%w: %w", err, p.err)
			}
			if last != nil {
				err = fmt.Errorf("%w (last check: %w)", err, last)
			}
			return c.componentErr(p.name, err)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			c.log.Debug("ready", "what", what, "waited", time.Since(began).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			name := "cluster"
			if p != nil {
				name = p.name
			}
			return c.componentErr(name, fmt.Errorf("%s: %w (last check: %w)", what, ctx.Err(), last))
		case <-time.After(interval):
		}
	}
}

// componentErr wraps err with the package prefix and the tail of the component's log.
func (c *Cluster) componentErr(name string, err error) error {
	tail := c.LogTail(name)
	if tail == "" {
		return fmt.Errorf("node: %s: %w", name, err)
	}
	return fmt.Errorf("node: %s: %w\n--- %s log (tail) ---\n%s", name, err, name, tail)
}

// tailFile returns the last n lines of a file, or "" when it cannot be read.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	b = bytes.TrimRight(b, "\n")
	for i, lines := len(b)-1, 0; i >= 0; i-- {
		if b[i] == '\n' {
			lines++
			if lines == n {
				b = b[i+1:]
				break
			}
		}
	}
	return string(lastBytes(b, 8000))
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// command runs a short-lived tool and returns its standard output; the error carries the
// command line and what it printed.
func command(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = componentEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("node: %s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(string(lastBytes(append(stderr.Bytes(), stdout.Bytes()...), 2000))))
	}
	return stdout.Bytes(), nil
}

// ports are the listeners' ports, picked free at start.
type ports struct {
	EtcdClient, EtcdPeer, APIServer, ControllerManager, Scheduler int
	Kubelet, KubeletHealthz, ProxyHealthz, ProxyMetrics           int
}

func pickPorts(ctx context.Context, nodeIP netip.Addr) (ports, error) {
	var p ports
	var err error
	loop := netip.MustParseAddr("127.0.0.1")
	for _, f := range []struct {
		dst  *int
		addr netip.Addr
	}{
		{&p.EtcdClient, loop}, {&p.EtcdPeer, loop}, {&p.ControllerManager, loop}, {&p.Scheduler, loop},
		{&p.KubeletHealthz, loop}, {&p.ProxyHealthz, loop}, {&p.ProxyMetrics, loop},
		{&p.APIServer, nodeIP}, {&p.Kubelet, nodeIP},
	} {
		if *f.dst, err = freePort(ctx, f.addr); err != nil {
			return p, err
		}
	}
	return p, nil
}

// freePort returns a TCP port on addr that was free a moment ago. It is picked below the
// kernel's ephemeral range: the components start one after another, and a port from that range
// may meanwhile be taken as the source port of some connection (kube-controller-manager once
// found its port so taken).
func freePort(ctx context.Context, addr netip.Addr) (int, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.ParseUint(f[0], 10, 16); err == nil {
				low = int(v)
			}
		}
	}
	var lc net.ListenConfig
	if low > 11000 {
		for range 100 {
			port := uint16(10000 + rand.IntN(low-10000)) //nolint:gosec // below low, itself a uint16; a test's port needs no strong randomness
			l, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(addr, port).String())
			if err == nil {
				_ = l.Close()
				return int(port), nil
			}
		}
	}
	l, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return 0, fmt.Errorf("node: free port on %s: %w", addr, err)
	}
	defer l.Close()
	tcp, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, fmt.Errorf("node: free port on %s: unexpected address %s", addr, l.Addr())
	}
	return tcp.Port, nil
}
