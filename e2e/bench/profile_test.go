//go:build benchmesh

package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/attestmesh/attestmesh/controlplane/local"
)

// perfCounters are the events perf stat counts: every system call, those that move data or
// wait, and context switches. Counting costs little, unlike perf trace.
var perfCounters = strings.Join([]string{
	"raw_syscalls:sys_enter", "context-switches", "cpu-migrations",
	"syscalls:sys_enter_read", "syscalls:sys_enter_write", "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_sendto",
	"syscalls:sys_enter_readv", "syscalls:sys_enter_writev", "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait",
	"syscalls:sys_enter_poll", "syscalls:sys_enter_futex", "syscalls:sys_enter_nanosleep", "syscalls:sys_enter_sched_yield",
}, ",")

// admin is a sidecar's admin endpoint, reached from inside its namespace.
type admin struct {
	name, ns, addr string
}

// profiler records profiles of a path while it serves GETs in the first round: when perf is
// installed, perf record (kernel and user stacks) and perf stat (system calls by name and
// context switches) of the path's processes; for the sidecars, Go's CPU
// profile from their admin endpoints (--pprof) and their heap profile afterwards. The profilers
// cost CPU: the first round's numbers of a profiled run are not comparable.
type profiler struct {
	dir  string
	logf func(format string, args ...any)
}

// start begins recording p and returns the function that ends it.
func (pr *profiler) start(ctx context.Context, p *path) (stop func()) {
	var wg sync.WaitGroup
	base := filepath.Join(pr.dir, p.name+"-get")
	perfs := pr.perf(ctx, p,
		[]string{"record", "-q", "-g", "-F", "499", "-o", base + ".perf.data"},
		[]string{"stat", "-e", perfCounters, "-o", base + ".perf-stat.txt"})
	for _, a := range p.admins {
		wg.Go(func() {
			time.Sleep(500 * time.Millisecond)
			pr.fetch(ctx, a, "/debug/pprof/profile?seconds=3", fmt.Sprintf("%s-%s-get.cpu.pprof", p.name, a.name))
		})
	}
	return func() {
		wg.Wait()
		for _, a := range p.admins {
			pr.fetch(ctx, a, "/debug/pprof/heap", fmt.Sprintf("%s-%s.heap.pprof", p.name, a.name))
		}
		pr.stopPerf(perfs)
	}
}

// count runs perf stat on p's processes (system calls, context switches) until the function it
// returns is called, into PATH-RUN.perf-stat.txt: the one-connection run's wake-ups.
func (pr *profiler) count(ctx context.Context, p *path, run string) (stop func()) {
	perfs := pr.perf(ctx, p, []string{"stat", "-e", perfCounters, "-o", filepath.Join(pr.dir, p.name+"-"+run+".perf-stat.txt")})
	return func() { pr.stopPerf(perfs) }
}

// perf starts perf once per argument list, with -p for p's processes; none without perf.
func (pr *profiler) perf(ctx context.Context, p *path, argLists ...[]string) []*exec.Cmd {
	if _, err := exec.LookPath("perf"); err != nil || len(p.pids) == 0 {
		return nil
	}
	var pids []string
	for _, pid := range p.pids {
		pids = append(pids, strconv.Itoa(pid))
	}
	var perfs []*exec.Cmd
	for _, args := range argLists {
		args = append([]string{args[0], "-p", strings.Join(pids, ",")}, args[1:]...)
		cmd := exec.CommandContext(ctx, "perf", args...)
		if err := cmd.Start(); err != nil {
			pr.logf("perf %s: %v", args[0], err)
			continue
		}
		perfs = append(perfs, cmd)
	}
	return perfs
}

func (pr *profiler) stopPerf(perfs []*exec.Cmd) {
	for _, cmd := range perfs {
		_ = cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			pr.logf("%s: %v", strings.Join(cmd.Args[:2], " "), err)
		}
	}
}

func (pr *profiler) fetch(ctx context.Context, a admin, path, file string) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return local.DialIn(ctx, a.ns, network, addr)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.addr+path, nil)
	if err != nil {
		pr.logf("pprof %s: %v", a.name, err)
		return
	}
	resp, err := hc.Do(req)
	if err != nil {
		pr.logf("pprof %s: %v", a.name, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		pr.logf("pprof %s %s: %v %s", a.name, path, err, resp.Status)
		return
	}
	if err := os.WriteFile(filepath.Join(pr.dir, file), b, 0o600); err != nil {
		pr.logf("pprof: %v", err)
	}
}
