//go:build benchmesh

package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/attestmesh/attestmesh/e2e/e2etest"
)

// daemon is a process the benchmark started in a namespace.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startIn runs argv in namespace ns with its output in dir/name.log. `ip netns exec` execs the
// program without a fork of its own, so the process is the program.
func startIn(dir, name, ns string, argv ...string) (*daemon, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...) //nolint:noctx // stopped by stop: SIGTERM, then SIGKILL
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		_ = f.Close()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and, after five seconds, SIGKILL to the process group. Safe to call twice.
func (d *daemon) stop() {
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-d.pid(), syscall.SIGKILL)
		<-d.done
	}
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat (100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuOf returns the CPU time (user and system, every thread, live or ended) of the processes.
func cpuOf(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		// After the command: state (field 3) ... utime (14), stime (15).
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		sum += time.Duration(ut+st) * clockTick
	}
	return sum
}

// rss returns VmRSS of pid in KiB (0 if it is gone).
func rss(pid int) int64 { return statusKiB(pid, "VmRSS:") }

// statusKiB returns a field of /proc/PID/status that counts KiB ("VmRSS:", "RssAnon:").
func statusKiB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// rssOf returns the largest RSS of the processes, in KiB.
func rssOf(pids []int) int64 {
	var m int64
	for _, pid := range pids {
		m = max(m, rss(pid))
	}
	return m
}

// anonOf returns the largest anonymous RSS of the processes, in KiB: their own memory, without
// the pages of their executable and libraries that the page cache holds (and other processes
// running the same binary share).
func anonOf(pids []int) int64 {
	var m int64
	for _, pid := range pids {
		m = max(m, statusKiB(pid, "RssAnon:"))
	}
	return m
}

// rssSampler records the peak of rssOf every 50 ms until stopped.
type rssSampler struct {
	quit chan struct{}
	peak chan [2]int64 // RSS, anonymous RSS
}

func sampleRSS(pids []int) *rssSampler {
	s := &rssSampler{quit: make(chan struct{}), peak: make(chan [2]int64, 1)}
	go func() {
		var peak, anon int64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			peak, anon = max(peak, rssOf(pids)), max(anon, anonOf(pids))
			select {
			case <-s.quit:
				s.peak <- [2]int64{max(peak, rssOf(pids)), max(anon, anonOf(pids))}
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop returns the peaks of RSS and anonymous RSS.
func (s *rssSampler) stop() (rss, anon int64) {
	close(s.quit)
	p := <-s.peak
	return p[0], p[1]
}

// alive reports whether pid exists and is not a zombie.
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

// mentioning lists the live processes whose command line holds sub.
func mentioning(sub string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !alive(pid) {
			continue
		}
		if strings.Contains(cmdline(pid), sub) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// sweep kills the processes in the benchmark's namespaces and those that mention its
// directory, then removes its namespaces and links: whatever a failed run left behind.
func sweep(t *testing.T, dir string) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	run := func(args ...string) string {
		out, _ := exec.CommandContext(ctx, "ip", args...).Output()
		return string(out)
	}
	var left []string
	for _, ns := range e2etest.Ours(context.WithoutCancel(t.Context()), t, bridge, "netns", "list") {
		for _, f := range strings.Fields(run("netns", "pids", ns)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				left = append(left, fmt.Sprintf("process %d", pid))
			}
		}
		run("netns", "del", ns)
		left = append(left, "namespace "+ns)
	}
	for _, pid := range mentioning(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		left = append(left, fmt.Sprintf("process %d", pid))
	}
	for _, name := range e2etest.Ours(context.WithoutCancel(t.Context()), t, bridge, "-o", "link", "show") {
		run("link", "del", name)
		left = append(left, "link "+name)
	}
	if len(left) > 0 {
		t.Logf("removed what the run left behind: %s", strings.Join(left, ", "))
	}
}
