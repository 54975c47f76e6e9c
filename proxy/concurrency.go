package proxy

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// SetConcurrency sets how many threads run the sidecar's Go code at once (GOMAXPROCS), once,
// at start; it is process-wide, so only the command line calls it. n > 0 sets it. n == 0 keeps
// Go's choice, except under a CPU limit of one CPU or less, where it is 1: Go rounds such a
// limit up to 2, and a sidecar with two Ps on at most one CPU's worth of time pays for wake-ups
// and hand-offs between threads without finishing anything sooner. The GOMAXPROCS
// environment variable, when set, wins over both. It returns the value in force and why.
func SetConcurrency(n int) (int, string) {
	if env := os.Getenv("GOMAXPROCS"); env != "" {
		return runtime.GOMAXPROCS(0), "GOMAXPROCS=" + env
	}
	if n > 0 {
		runtime.GOMAXPROCS(n)
		return n, "--concurrency"
	}
	if limit, ok := cgroupCPULimit(); ok && limit <= 1 {
		runtime.GOMAXPROCS(1)
		return 1, fmt.Sprintf("CPU limit %.2f", limit)
	}
	return runtime.GOMAXPROCS(0), "Go's default"
}

// cgroupCPULimit returns this process's cgroup CPU limit in CPUs (quota/period), from cgroup
// v2's cpu.max or v1's cpu.cfs_quota_us and cpu.cfs_period_us; false when there is none or it
// cannot be read.
func cgroupCPULimit() (float64, bool) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", parts[2], "cpu.max")); err == nil {
				if l, ok := parseCPUMax(string(b)); ok {
					return l, true
				}
			}
		case hasController(parts[1], "cpu"):
			for _, mnt := range []string{"cpu", "cpu,cpuacct", "cpuacct,cpu"} {
				dir := filepath.Join("/sys/fs/cgroup", mnt, parts[2])
				q, err1 := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
				p, err2 := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
				if err1 == nil && err2 == nil {
					return parseCFS(string(q), string(p))
				}
			}
		}
	}
	return 0, false
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// parseCPUMax reads cgroup v2's cpu.max: "max 100000" (no limit) or "QUOTA PERIOD".
func parseCPUMax(s string) (float64, bool) {
	f := strings.Fields(s)
	if len(f) != 2 || f[0] == "max" {
		return 0, false
	}
	return ratio(f[0], f[1])
}

// parseCFS reads cgroup v1's quota (-1: no limit) and period.
func parseCFS(quota, period string) (float64, bool) {
	if strings.TrimSpace(quota) == "-1" {
		return 0, false
	}
	return ratio(strings.TrimSpace(quota), strings.TrimSpace(period))
}

func ratio(quota, period string) (float64, bool) {
	q, err1 := strconv.ParseFloat(quota, 64)
	p, err2 := strconv.ParseFloat(period, 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 || math.IsInf(q/p, 0) {
		return 0, false
	}
	return q / p, true
}
