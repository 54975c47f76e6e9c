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

// admin is a sidecar's admin endpoint, reached from inside its namespace.
type admin struct {
	name, ns, addr string
}

// profiler records profiles of a path while it serves GETs in the first round: perf (kernel
// and user stacks) of the path's processes when perf is installed, and for the sidecars Go's CPU
// profile from their admin endpoints (--pprof) and their heap profile afterwards.
type profiler struct {
	dir  string
	logf func(format string, args ...any)
}

// start begins recording p and returns the function that ends it.
func (pr *profiler) start(ctx context.Context, p *path) (stop func()) {
	var wg sync.WaitGroup
	var perf *exec.Cmd
	if _, err := exec.LookPath("perf"); err == nil && len(p.pids) > 0 {
		var pids []string
		for _, pid := range p.pids {
			pids = append(pids, strconv.Itoa(pid))
		}
		out := filepath.Join(pr.dir, p.name+"-get.perf.data")
		perf = exec.CommandContext(ctx, "perf", "record", "-q", "-g", "-F", "499", "-p", strings.Join(pids, ","), "-o", out)
		perf.Cancel = func() error { return perf.Process.Signal(os.Interrupt) }
		if err := perf.Start(); err != nil {
			pr.logf("perf record: %v", err)
			perf = nil
		}
	}
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
		if perf != nil {
			_ = perf.Process.Signal(syscall.SIGINT)
			if err := perf.Wait(); err != nil {
				pr.logf("perf record: %v", err)
			}
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
