//go:build e2e_k8s

package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// stateDir holds the lock that lets one cluster run at a time, and the state of the
	// running one, which the next Start uses to clean up after a run that crashed.
	stateDir = "/run/attestmesh-k8s-node"
	// rootPrefix starts the name of every cluster's root directory (in os.TempDir()).
	rootPrefix = "attestmesh-k8s-node-"
	// guardIn and guardFwd are the harness's own chains (filter table): pods reach the host
	// only at NodeIP, and nothing is forwarded between the bridge and any other interface.
	guardIn  = "ATTESTMESH-NODE-IN"
	guardFwd = "ATTESTMESH-NODE-FWD"
)

// cgroupNames are the cgroups the kubelet (kubepods) and containerd (k8s.io, its namespace)
// create at the top of every cgroup v1 hierarchy.
func cgroupNames() []string { return []string{"kubepods", "kubepods.slice", "k8s.io"} }

// watchedPaths are where the kubelet, containerd, runc and the CNI plugins write outside the
// cluster's root whatever their configuration says (shim sockets in /run/containerd/s, CNI
// results in /var/lib/cni, log links in /var/log/containers, netns in /run/netns) or would,
// if a setting slipped.
func watchedPaths() []string {
	return []string{"/run/netns", "/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/log/pods",
		"/var/lib/kubelet", "/var/lib/containerd", "/opt/containerd", "/etc/cni", "/run/kubernetes",
		"/etc/kubernetes", "/var/lib/kube-proxy"}
}

// hostState is what the host looked like before the cluster started: teardown removes what is
// new, and the leak check reports what is still new after it.
type hostState struct {
	Netns    []string            `json:"netns"`
	Links    []string            `json:"links"`
	Mounts   []string            `json:"mounts"`
	Cgroups  []string            `json:"cgroups"`
	IPTables []string            `json:"iptables"` // our chains and rules that existed already
	NFTables []string            `json:"nftables"`
	NFAcct   []string            `json:"nfacct"` // nfnetlink_acct counters (kube-proxy makes two)
	Sysctls  map[string]string   `json:"sysctls"`
	Files    map[string][]string `json:"files"` // watched path → entries; absent paths are not keys
}

func snapshotHost(ctx context.Context, bridge string) (*hostState, error) {
	s := &hostState{Files: map[string][]string{}}
	var err error
	if s.Netns, err = listNetns(); err != nil {
		return nil, err
	}
	links, err := listLinks(ctx)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		s.Links = append(s.Links, l.Name)
	}
	if s.Mounts, err = mountPoints(); err != nil {
		return nil, err
	}
	s.Cgroups = ourCgroups()
	if s.IPTables, err = ourIPTables(ctx, bridge); err != nil {
		return nil, err
	}
	if s.NFTables, err = nftTables(ctx); err != nil {
		return nil, err
	}
	if s.NFAcct, err = nfacctObjects(ctx); err != nil {
		return nil, err
	}
	s.Sysctls = readSysctls(sysctlPaths(s.Links))
	for _, p := range watchedPaths() {
		if entries, ok := listTree(p); ok {
			s.Files[p] = entries
		}
	}
	return s, nil
}

// runState is written to stateDir/state.json while a cluster runs.
type runState struct {
	PID         int        `json:"pid"`
	Root        string     `json:"root"`
	BinDir      string     `json:"binDir"`
	Bridge      string     `json:"bridge"`
	PodCIDR     string     `json:"podCIDR"`
	ServiceCIDR string     `json:"serviceCIDR"`
	Snapshot    *hostState `json:"snapshot"`
}

func writeState(s runState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("node: state: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, "state.json"), b, 0o600); err != nil {
		return fmt.Errorf("node: state: %w", err)
	}
	return nil
}

func readState() (*runState, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: state: %w", err)
	}
	var s runState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("node: state %s: %w", filepath.Join(stateDir, "state.json"), err)
	}
	return &s, nil
}

func removeState() error {
	if err := os.Remove(filepath.Join(stateDir, "state.json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// acquireLock takes the machine-wide lock (one cluster at a time: the bridge, the kubepods
// cgroups and the KUBE chains are global), waiting for another test's cluster until ctx ends.
// A process that dies releases it.
func acquireLock(ctx context.Context, log *slog.Logger) (*os.File, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(stateDir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	waited := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) //nolint:gosec // a file descriptor fits an int
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("node: lock %s: %w", f.Name(), err)
		}
		if !waited {
			log.Info("another cluster runs on this machine; waiting for it", "lock", f.Name())
			waited = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("node: another cluster holds %s (one per machine): %w", f.Name(), ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func releaseLock(f *os.File) {
	if f != nil {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN) //nolint:gosec // a file descriptor fits an int
		_ = f.Close()
	}
}

// recoverCrashed cleans up after a run that did not finish (its process died holding the
// lock, which it no longer holds): from its state file when there is one, else by name.
func (c *Cluster) recoverCrashed(ctx context.Context) error {
	st, err := readState()
	if err != nil {
		return err
	}
	if st == nil {
		st = &runState{Bridge: c.opts.Bridge}
	} else {
		c.log.Warn("a previous cluster did not finish; cleaning up after it", "pid", st.PID, "root", st.Root)
	}
	if st.Bridge == "" {
		st.Bridge = c.opts.Bridge
	}
	cleaned, err := clean(ctx, st, true)
	for _, what := range cleaned {
		c.log.Warn("removed a leftover of a previous run", "what", what)
	}
	if err != nil {
		return fmt.Errorf("node: cleaning up after a previous run: %w", err)
	}
	if err := removeState(); err != nil {
		return err
	}
	// What is left now is not ours to remove, but it would be taken for ours.
	if leaks := findLeaks(ctx, st, true); len(leaks) > 0 {
		return fmt.Errorf("node: leftovers of a previous run that cannot be removed: %s", strings.Join(leaks, "; "))
	}
	return nil
}

// setupNetwork creates the bridge with NodeIP (so that the API server and the kubelet can
// listen there before the first pod), routes the service CIDR to it (so that a ClusterIP
// without a kube-proxy rule stays on the machine), and installs the guard chains.
func (c *Cluster) setupNetwork(ctx context.Context) error {
	br := c.opts.Bridge
	prefix := fmt.Sprintf("%s/%d", c.nodeIP, c.opts.PodCIDR.Bits())
	for _, args := range [][]string{
		{"link", "add", br, "type", "bridge"},
		{"addr", "add", prefix, "dev", br},
		{"link", "set", br, "up"},
		{"route", "add", c.opts.ServiceCIDR.String(), "dev", br, "src", c.nodeIP.String()},
	} {
		if _, err := command(ctx, nil, "ip", args...); err != nil {
			return err
		}
		if args[0] == "link" && args[1] == "add" {
			// No IPv6 on the bridge: pods are IPv4 only, and must not reach the host by link-local.
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+br+"/disable_ipv6", []byte("1\n"), 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("node: %w", err)
			}
		}
	}
	rules := fmt.Sprintf(`*filter
:%[1]s - [0:0]
:%[2]s - [0:0]
-A %[1]s -d %[3]s/32 -j RETURN
-A %[1]s -j DROP
-A %[2]s -i %[4]s -o %[4]s -j RETURN
-A %[2]s -j DROP
-I INPUT 1 -i %[4]s -j %[1]s
-I FORWARD 1 -i %[4]s -j %[2]s
-I FORWARD 1 -o %[4]s -j %[2]s
COMMIT
`, guardIn, guardFwd, c.nodeIP, br)
	if _, err := command(ctx, []byte(rules), "iptables-restore", "--noflush"); err != nil {
		return err
	}
	return nil
}

// clean removes what a cluster leaves on the host: its processes (and everything in the
// kubepods and k8s.io cgroups), mounts under its root and the watched paths, the cni-* network
// namespaces, the bridge and veths, the cgroups, our iptables chains and rules, the nftables
// tables iptables created, the files in the watched paths and the root; and it restores the
// sysctls. With anyRoot it also takes every root named like a cluster's (after a crash). It
// returns what it removed.
func clean(ctx context.Context, st *runState, anyRoot bool) ([]string, error) {
	var done []string
	var errs []error
	note := func(format string, a ...any) { done = append(done, fmt.Sprintf(format, a...)) }
	isRoot := rootMatcher(st.Root, anyRoot)

	// Processes: the components and shims (named by their root in their arguments), and
	// whatever still runs in the pods' cgroups.
	for range 3 {
		procs := ourProcesses(isRoot)
		if len(procs) == 0 {
			break
		}
		for _, p := range procs {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
			note("process %d (%s)", p.pid, p.cmd)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Mounts, deepest first, lazily.
	for range 5 {
		mounts, err := ourMounts(st.Snapshot, isRoot)
		if err != nil {
			errs = append(errs, err)
			break
		}
		if len(mounts) == 0 {
			break
		}
		for _, m := range mounts {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("node: umount %s: %w", m, err))
				continue
			}
			note("mount %s", m)
		}
	}

	// Network namespaces the CNI plugin made (only those that are new: others are not ours).
	if st.Snapshot != nil {
		netns, _ := listNetns()
		for _, ns := range netns {
			if strings.HasPrefix(ns, "cni-") && !slices.Contains(st.Snapshot.Netns, ns) {
				p := filepath.Join("/run/netns", ns)
				_ = unix.Unmount(p, unix.MNT_DETACH)
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, fmt.Errorf("node: %w", err))
					continue
				}
				note("network namespace %s", ns)
			}
		}
	}

	// The bridge's veths, then the bridge.
	if links, err := listLinks(ctx); err != nil {
		errs = append(errs, err)
	} else {
		for _, l := range links {
			newVeth := l.Kind == "veth" && st.Snapshot != nil && !slices.Contains(st.Snapshot.Links, l.Name)
			if l.Master == st.Bridge || newVeth {
				if _, err := command(ctx, nil, "ip", "link", "del", l.Name); err != nil {
					errs = append(errs, err)
					continue
				}
				note("link %s", l.Name)
			}
		}
		for _, l := range links {
			if l.Name == st.Bridge {
				if _, err := command(ctx, nil, "ip", "link", "del", l.Name); err != nil {
					errs = append(errs, err)
					continue
				}
				note("bridge %s", l.Name)
			}
		}
	}

	// Cgroups, in every hierarchy.
	var had []string
	if st.Snapshot != nil {
		had = st.Snapshot.Cgroups
	}
	for _, cg := range ourCgroups() {
		if slices.Contains(had, cg) {
			continue
		}
		if err := removeCgroupTree(cg); err != nil {
			errs = append(errs, err)
			continue
		}
		note("cgroup %s", cg)
	}

	// iptables and ip6tables: our chains and the rules that jump to them or name the bridge.
	removed, err := removeIPTables(ctx, st.Bridge)
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range removed {
		note("%s", r)
	}
	// The tables iptables-nft created for them, now empty.
	if st.Snapshot != nil {
		tables, err := nftTables(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, tbl := range tables {
			if slices.Contains(st.Snapshot.NFTables, tbl) {
				continue
			}
			if empty, err := nftTableEmpty(ctx, tbl); err != nil || !empty {
				continue // not ours to drop; the leak check reports it
			}
			if _, err := command(ctx, nil, "nft", append([]string{"delete", "table"}, strings.Fields(tbl)...)...); err != nil {
				errs = append(errs, err)
				continue
			}
			note("nftables %s", tbl)
		}
	}

	// kube-proxy's nfacct counters (the KUBE-FORWARD and KUBE-NODEPORTS rules that used them
	// are gone): those that are new, or after a crash without a snapshot, kube-proxy's by name.
	if objects, err := nfacctObjects(ctx); err != nil {
		errs = append(errs, err)
	} else {
		for _, o := range objects {
			if (st.Snapshot != nil && slices.Contains(st.Snapshot.NFAcct, o)) ||
				(st.Snapshot == nil && !slices.Contains(kubeProxyNFAcct(), o)) {
				continue
			}
			if _, err := command(ctx, nil, "nfacct", "delete", o); err != nil {
				errs = append(errs, err)
				continue
			}
			note("nfacct %s", o)
		}
	}

	// Sysctls: ip_forward first (writing it resets every interface's forwarding), then the rest.
	if st.Snapshot != nil {
		for range 2 {
			paths := slices.Sorted(maps.Keys(st.Snapshot.Sysctls))
			sort.SliceStable(paths, func(i, j int) bool {
				return strings.HasSuffix(paths[i], "/ip_forward") && !strings.HasSuffix(paths[j], "/ip_forward")
			})
			for _, p := range paths {
				want := st.Snapshot.Sysctls[p]
				got, ok := readSysctl(p)
				if !ok || got == want {
					continue
				}
				if err := os.WriteFile(p, []byte(want+"\n"), 0o600); err != nil {
					errs = append(errs, fmt.Errorf("node: restore %s to %s: %w", p, want, err))
					continue
				}
				note("sysctl %s: %s → %s", sysctlName(p), got, want)
			}
		}
	}

	// Files in the watched paths (CNI results, log links, shim sockets, the netns directory).
	if st.Snapshot != nil {
		for _, p := range watchedPaths() {
			before, existed := st.Snapshot.Files[p]
			now, exists := listTree(p)
			if !exists {
				continue
			}
			if !existed {
				if err := removeUnmounted(p); err != nil {
					errs = append(errs, err)
					continue
				}
				note("%s", p)
				continue
			}
			for _, e := range newTopEntries(before, now) {
				removed, err := removeStale(ctx, filepath.Join(p, e))
				if err != nil {
					errs = append(errs, err)
				}
				for _, r := range removed {
					note("%s", r)
				}
			}
		}
	}

	// The roots.
	for _, r := range roots(isRoot) {
		if err := removeUnmounted(r); err != nil {
			errs = append(errs, err)
			continue
		}
		note("directory %s", r)
	}
	return done, errors.Join(errs...)
}

// findLeaks reports what of a cluster is still on the host, compared with the snapshot.
func findLeaks(ctx context.Context, st *runState, anyRoot bool) []string {
	var leaks []string
	add := func(format string, a ...any) { leaks = append(leaks, fmt.Sprintf(format, a...)) }
	isRoot := rootMatcher(st.Root, anyRoot)
	for _, p := range ourProcesses(isRoot) {
		add("process %d (%s)", p.pid, p.cmd)
	}
	if mounts, err := ourMounts(st.Snapshot, isRoot); err != nil {
		add("mounts: %v", err)
	} else {
		for _, m := range mounts {
			add("mount %s", m)
		}
	}
	if links, err := listLinks(ctx); err != nil {
		add("links: %v", err)
	} else {
		for _, l := range links {
			if l.Name == st.Bridge || l.Master == st.Bridge ||
				(l.Kind == "veth" && st.Snapshot != nil && !slices.Contains(st.Snapshot.Links, l.Name)) {
				add("link %s", l.Name)
			}
		}
	}
	var had hostState
	if st.Snapshot != nil {
		had = *st.Snapshot
	}
	if netns, err := listNetns(); err == nil && st.Snapshot != nil {
		for _, ns := range netns {
			if strings.HasPrefix(ns, "cni-") && !slices.Contains(had.Netns, ns) {
				add("network namespace %s", ns)
			}
		}
	}
	for _, cg := range ourCgroups() {
		if !slices.Contains(had.Cgroups, cg) {
			add("cgroup %s", cg)
		}
	}
	if rules, err := ourIPTables(ctx, st.Bridge); err != nil {
		add("iptables: %v", err)
	} else {
		for _, r := range rules {
			if !slices.Contains(had.IPTables, r) {
				add("%s", r)
			}
		}
	}
	if st.Snapshot != nil {
		if tables, err := nftTables(ctx); err == nil {
			for _, tbl := range tables {
				if !slices.Contains(had.NFTables, tbl) {
					add("nftables table %s", tbl)
				}
			}
		}
		if objects, err := nfacctObjects(ctx); err == nil {
			for _, o := range objects {
				if !slices.Contains(had.NFAcct, o) {
					add("nfacct counter %s", o)
				}
			}
		}
		for p, want := range had.Sysctls {
			if got, ok := readSysctl(p); ok && got != want {
				add("sysctl %s = %s (was %s)", sysctlName(p), got, want)
			}
		}
		for _, p := range watchedPaths() {
			before, existed := had.Files[p]
			now, exists := listTree(p)
			switch {
			case !exists:
			case !existed:
				add("%s (did not exist)", p)
			default:
				for _, e := range newTopEntries(before, now) {
					if stale := staleFiles(ctx, filepath.Join(p, e)); len(stale) > 0 {
						add("%s", filepath.Join(p, e))
					}
				}
			}
		}
	}
	for _, r := range roots(isRoot) {
		add("directory %s", r)
	}
	return leaks
}

// rootMatcher matches paths in a cluster's root: st.Root, or with anyRoot every directory
// named like one in os.TempDir().
func rootMatcher(root string, anyRoot bool) func(string) bool {
	tmp := filepath.Join(os.TempDir(), rootPrefix)
	return func(p string) bool {
		if root != "" && (p == root || strings.HasPrefix(p, root+"/")) {
			return true
		}
		return anyRoot && strings.HasPrefix(p, tmp)
	}
}

func roots(isRoot func(string) bool) []string {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), rootPrefix+"*"))
	var out []string
	for _, m := range matches {
		if isRoot(m) {
			out = append(out, m)
		}
	}
	return out
}

type proc struct {
	pid int
	cmd string
}

// ourProcesses are the processes whose arguments name a cluster root (every component does,
// and containerd's shims by their -address), and those in our cgroups (the pods').
func ourProcesses(isRoot func(string) bool) []proc {
	self := os.Getpid()
	inCgroups := map[int]bool{}
	for _, cg := range ourCgroups() {
		_ = filepath.WalkDir(cg, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil //nolint:nilerr // a cgroup that went away while walking
			}
			for _, pid := range cgroupPids(p) {
				inCgroups[pid] = true
			}
			return nil
		})
	}
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		ours := inCgroups[pid]
		for _, a := range args {
			if ours {
				break
			}
			// --flag=/path, -address /path, or a path in a config option
			if i := strings.IndexByte(a, '/'); i >= 0 && isRoot(strings.TrimSuffix(a[i:], ",")) {
				ours = true
			}
		}
		if ours {
			out = append(out, proc{pid: pid, cmd: lastString(strings.Join(args, " "), 160)})
		}
	}
	return out
}

func lastString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func cgroupPids(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ourCgroups are the kubepods and k8s.io cgroups at the top of every hierarchy.
func ourCgroups() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	hierarchies := []string{"/sys/fs/cgroup"} // cgroup v2, or the tmpfs of v1 holds none
	for _, e := range entries {
		if e.IsDir() && e.Type()&fs.ModeSymlink == 0 {
			hierarchies = append(hierarchies, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	for _, h := range hierarchies {
		for _, n := range cgroupNames() {
			p := filepath.Join(h, n)
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				out = append(out, p)
			}
		}
	}
	return out
}

// removeCgroupTree kills what runs in a cgroup tree and removes it, deepest first.
func removeCgroupTree(root string) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	slices.Reverse(dirs) // WalkDir is lexical, parents first
	var errs []error
	for _, d := range dirs {
		var err error
		for range 50 {
			for _, pid := range cgroupPids(d) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			if err = unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("node: rmdir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// mountPoints lists the mount points in /proc/self/mountinfo, in its order.
func mountPoints() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return parseMountinfo(string(b)), nil
}

func parseMountinfo(s string) []string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		out = append(out, unescapeMount(f[4]))
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ourMounts are the mount points under a cluster root, or new under a watched path, deepest
// first.
func ourMounts(snap *hostState, isRoot func(string) bool) ([]string, error) {
	all, err := mountPoints()
	if err != nil {
		return nil, err
	}
	var had []string
	if snap != nil {
		had = snap.Mounts
	}
	seen := map[string]bool{}
	var out []string
	for _, m := range all {
		if seen[m] {
			continue
		}
		ours := isRoot(m)
		if !ours && snap != nil && !slices.Contains(had, m) {
			for _, w := range watchedPaths() {
				if m == w || strings.HasPrefix(m, w+"/") {
					ours = true
				}
			}
		}
		if ours {
			seen[m] = true
			out = append(out, m)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return strings.Count(out[i], "/") > strings.Count(out[j], "/")
	})
	return out, nil
}

// removeUnmounted removes a tree unless something is still mounted in it (RemoveAll would
// descend into the mount and delete what is there).
func removeUnmounted(p string) error {
	mounts, err := mountPoints()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if m == p || strings.HasPrefix(m, p+"/") {
			return fmt.Errorf("node: not removing %s: %s is still mounted", p, m)
		}
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// liveSocket says whether path is a unix socket that something listens on: another
// containerd's shim, say (the system's, in /run/containerd/s), not ours to remove; ours have
// all exited when this is asked. A socket taken for dead is removed, so the probe does not end
// with ctx (a teardown that ran out of time): it keeps ctx's values and has its own second.
func liveSocket(ctx context.Context, path string) bool {
	fi, err := os.Lstat(path) //nolint:gosec // a path found under the watched directories
	if err != nil || fi.Mode()&fs.ModeSocket == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// staleFiles are the files in a tree (or the path itself) that are not live sockets.
func staleFiles(ctx context.Context, root string) []string {
	var out []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !liveSocket(ctx, p) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// removeStale removes a tree that a cluster left, except live sockets (and the directories
// that hold them), and never what is mounted in it.
func removeStale(ctx context.Context, root string) ([]string, error) {
	var live bool
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && liveSocket(ctx, p) {
			live = true
		}
		return nil
	})
	if !live {
		if err := removeUnmounted(root); err != nil {
			return nil, err
		}
		return []string{root}, nil
	}
	stale := staleFiles(ctx, root)
	var errs []error
	for _, f := range stale {
		if err := os.Remove(f); err != nil {
			errs = append(errs, fmt.Errorf("node: %w", err))
		}
	}
	return stale, errors.Join(errs...)
}

// listTree lists a directory's entries (relative, up to three levels deep), or reports that
// the path does not exist.
func listTree(root string) ([]string, bool) {
	fi, err := os.Lstat(root)
	if err != nil {
		return nil, false
	}
	out := []string{}
	if !fi.IsDir() {
		return out, true
	}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if err == nil {
			out = append(out, rel)
		}
		if d != nil && d.IsDir() && strings.Count(rel, "/") >= 2 {
			return filepath.SkipDir
		}
		return nil
	})
	return out, true
}

// newTopEntries are the entries of now that are not in before and whose parent is (so that
// a new directory is reported once, not with everything in it).
func newTopEntries(before, now []string) []string {
	had := map[string]bool{}
	for _, e := range before {
		had[e] = true
	}
	var out []string
	for _, e := range now {
		if had[e] {
			continue
		}
		parent := filepath.Dir(e)
		if parent == "." || had[parent] {
			out = append(out, e)
		}
	}
	return out
}

func listNetns() ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out, nil
}

type link struct {
	Name   string
	Master string
	Kind   string
}

func listLinks(ctx context.Context) ([]link, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := command(ctx, nil, "ip", "-j", "-d", "link", "show")
	if err != nil {
		return nil, err
	}
	var raw []struct {
		IfName   string `json:"ifname"`
		Master   string `json:"master"`
		LinkInfo struct {
			InfoKind string `json:"info_kind"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("node: ip -j link: %w", err)
	}
	links := make([]link, 0, len(raw))
	for _, r := range raw {
		links = append(links, link{Name: r.IfName, Master: r.Master, Kind: r.LinkInfo.InfoKind})
	}
	return links, nil
}

// sysctlPaths are the settings the kubelet, kube-proxy and the CNI bridge plugin may change:
// the kubelet's kernel tunables, forwarding (everywhere: writing ip_forward sets every
// interface's), route_localnet and the other per-interface defaults, the bridge netfilter
// switches, and conntrack's limits and timeouts.
func sysctlPaths(links []string) []string {
	paths := []string{
		"/proc/sys/vm/overcommit_memory", "/proc/sys/vm/panic_on_oom",
		"/proc/sys/kernel/panic", "/proc/sys/kernel/panic_on_oops",
		"/proc/sys/kernel/keys/root_maxkeys", "/proc/sys/kernel/keys/root_maxbytes",
		"/proc/sys/net/ipv4/ip_forward",
		"/proc/sys/net/ipv6/conf/all/forwarding", "/proc/sys/net/ipv6/conf/default/forwarding",
		"/sys/module/nf_conntrack/parameters/hashsize",
	}
	for _, l := range links {
		paths = append(paths, "/proc/sys/net/ipv4/conf/"+l+"/forwarding", "/proc/sys/net/ipv4/conf/"+l+"/route_localnet")
	}
	for _, dir := range []string{"/proc/sys/net/ipv4/conf/all", "/proc/sys/net/ipv4/conf/default",
		"/proc/sys/net/bridge", "/proc/sys/net/netfilter"} {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil //nolint:nilerr // a setting this kernel does not have
			}
			if fi, err := d.Info(); err == nil && fi.Mode().Perm()&0o200 != 0 && fi.Mode().Perm()&0o044 != 0 {
				paths = append(paths, p)
			}
			return nil
		})
	}
	return paths
}

func readSysctl(p string) (string, bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", false
	}
	return strings.Join(strings.Fields(string(b)), " "), true
}

func readSysctls(paths []string) map[string]string {
	m := map[string]string{}
	for _, p := range paths {
		if v, ok := readSysctl(p); ok {
			m[p] = v
		}
	}
	return m
}

func sysctlName(p string) string {
	if rest, ok := strings.CutPrefix(p, "/proc/sys/"); ok {
		return strings.ReplaceAll(rest, "/", ".")
	}
	return p
}

// ourChain says whether an iptables chain is the cluster's: the kubelet's and kube-proxy's
// KUBE-*, the CNI plugins' CNI-*, and the harness's guards.
func ourChain(name string) bool {
	return strings.HasPrefix(name, "KUBE-") || strings.HasPrefix(name, "CNI-") || strings.HasPrefix(name, "ATTESTMESH-NODE")
}

// ourRule says whether an iptables-save rule ("-A CHAIN ...") is the cluster's: in one of our
// chains, jumping to one, or matching the bridge.
func ourRule(line, bridge string) bool {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "-A" {
		return false
	}
	if ourChain(f[1]) {
		return true
	}
	for i := 2; i+1 < len(f); i++ {
		switch f[i] {
		case "-j", "-g", "--jump", "--goto":
			if ourChain(f[i+1]) {
				return true
			}
		case "-i", "-o", "--in-interface", "--out-interface":
			if f[i+1] == bridge {
				return true
			}
		}
	}
	return false
}

type iptTable struct {
	family string // iptables or ip6tables
	name   string
	chains []string // user-defined chains
	rules  []string // "-A CHAIN ..." lines
}

func parseIPTablesSave(family, out string) []iptTable {
	var tables []iptTable
	var cur *iptTable
	for line := range strings.SplitSeq(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			tables = append(tables, iptTable{family: family, name: line[1:]})
			cur = &tables[len(tables)-1]
		case cur == nil:
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) >= 2 && f[1] == "-" {
				cur.chains = append(cur.chains, f[0])
			}
		case strings.HasPrefix(line, "-A "):
			cur.rules = append(cur.rules, line)
		}
	}
	return tables
}

func saveIPTables(ctx context.Context) ([]iptTable, error) {
	var tables []iptTable
	for _, family := range []string{"iptables", "ip6tables"} {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := command(ctx, nil, family+"-save")
		cancel()
		if err != nil {
			return nil, err
		}
		tables = append(tables, parseIPTablesSave(family, string(out))...)
	}
	return tables, nil
}

// ourIPTables lists our chains and rules as "FAMILY TABLE chain NAME" and "FAMILY TABLE RULE".
func ourIPTables(ctx context.Context, bridge string) ([]string, error) {
	tables, err := saveIPTables(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range tables {
		for _, ch := range t.chains {
			if ourChain(ch) {
				out = append(out, fmt.Sprintf("%s -t %s chain %s", t.family, t.name, ch))
			}
		}
		for _, r := range t.rules {
			if ourRule(r, bridge) {
				out = append(out, fmt.Sprintf("%s -t %s %s", t.family, t.name, r))
			}
		}
	}
	return out, nil
}

// cleanupScript is an iptables-restore --noflush script that removes our rules from other
// chains, then flushes and deletes our chains; "" when the table holds nothing of ours.
func cleanupScript(t iptTable, bridge string) string {
	var decl, del, drop []string
	for _, ch := range t.chains {
		if ourChain(ch) {
			decl = append(decl, ":"+ch+" - [0:0]") // declaring a chain in --noflush mode flushes it
			drop = append(drop, "-X "+ch)
		}
	}
	for _, r := range t.rules {
		f := strings.Fields(r)
		if ourRule(r, bridge) && !ourChain(f[1]) {
			del = append(del, "-D"+strings.TrimPrefix(r, "-A"))
		}
	}
	if len(decl)+len(del) == 0 {
		return ""
	}
	lines := append([]string{"*" + t.name}, decl...)
	lines = append(lines, del...)
	lines = append(lines, drop...)
	lines = append(lines, "COMMIT", "")
	return strings.Join(lines, "\n")
}

func removeIPTables(ctx context.Context, bridge string) ([]string, error) {
	tables, err := saveIPTables(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, t := range tables {
		script := cleanupScript(t, bridge)
		if script == "" {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := command(cctx, []byte(script), t.family+"-restore", "--noflush")
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%w\nscript:\n%s", err, script))
			continue
		}
		n := strings.Count(script, "\n-X ")
		removed = append(removed, fmt.Sprintf("%s -t %s: %d chains and the rules that used them", t.family, t.name, n))
	}
	return removed, errors.Join(errs...)
}

// nftTables lists the nftables tables as "FAMILY NAME" (iptables-nft keeps iptables' tables
// there).
func nftTables(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := command(ctx, nil, "nft", "list", "tables")
	if err != nil {
		return nil, err
	}
	var tables []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "table "); ok {
			tables = append(tables, rest)
		}
	}
	return tables, nil
}

// kubeProxyNFAcct are the nfacct counters kube-proxy (iptables mode) creates.
func kubeProxyNFAcct() []string {
	return []string{"ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"}
}

// nfacctObjects lists the nfnetlink_acct counters by name (`nfacct list` prints
// "{ pkts = N, bytes = N } = NAME;").
func nfacctObjects(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := command(ctx, nil, "nfacct", "list")
	if err != nil {
		return nil, err
	}
	return parseNFAcct(string(out)), nil
}

func parseNFAcct(out string) []string {
	var names []string
	for line := range strings.SplitSeq(out, "\n") {
		if i := strings.LastIndex(line, "} = "); i >= 0 {
			names = append(names, strings.TrimSuffix(strings.TrimSpace(line[i+4:]), ";"))
		}
	}
	return names
}

// nftTableEmpty says whether a table holds no rules, sets or user chains (only the base
// chains iptables-nft made for it).
func nftTableEmpty(ctx context.Context, table string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := command(ctx, nil, "nft", append([]string{"list", "table"}, strings.Fields(table)...)...)
	if err != nil {
		return false, err
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "", line == "}", strings.HasPrefix(line, "table "), strings.HasPrefix(line, "type "),
			strings.HasPrefix(line, "chain "):
		default:
			return false, nil
		}
		if strings.HasPrefix(line, "chain ") && !isBaseChain(line) {
			return false, nil
		}
	}
	return true, nil
}

func isBaseChain(line string) bool {
	name := strings.Fields(line)[1]
	switch name {
	case "INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING":
		return true
	}
	return false
}
