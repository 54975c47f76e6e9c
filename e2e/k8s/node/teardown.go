//go:build e2e_k8s

package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// teardown stops the cluster in the order that leaves nothing behind, removes what is left,
// and fails the test for anything that remains (see the package documentation).
func (c *Cluster) teardown(t *testing.T) {
	t.Helper()
	began := time.Now()
	// t.Context() is canceled before cleanups run; teardown has its own bound.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 5*time.Minute)
	defer cancel()
	if t.Failed() {
		for _, name := range Components() {
			if tail := c.LogTail(name); tail != "" {
				t.Logf("--- %s log (tail) ---\n%s", name, tail)
			}
		}
	}
	step := func(what string, f func() error) {
		s := time.Now()
		if err := f(); err != nil {
			t.Logf("node: teardown: %s: %v", what, err)
		}
		c.log.Debug("teardown", "step", what, "took", time.Since(s).Round(time.Millisecond))
	}
	if api := c.proc("kube-apiserver"); api != nil && !api.exited() {
		step("delete workloads and pods, wait for containerd's tasks", func() error { return c.drain(ctx) })
	}
	for _, name := range []string{"kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		if p := c.proc(name); p != nil {
			step("stop "+name, func() error { return p.stop(15 * time.Second) })
		}
	}
	if p := c.proc("containerd"); p != nil {
		if !p.exited() {
			step("kill what is left through ctr", func() error { return c.removeContainers(ctx) })
		}
		step("stop containerd", func() error { return p.stop(15 * time.Second) })
		step("stop containerd's shims", func() error { return stopShims(c.ContainerdAddress()) })
	}
	c.spawner.close() // every process it started has stopped
	c.saveLogs(t)

	if c.snap != nil {
		st := &runState{Root: c.root, Bridge: c.opts.Bridge, Snapshot: c.snap}
		var removed []string
		step("remove mounts, netns, links, cgroups, chains, files; restore sysctls", func() error {
			var err error
			removed, err = clean(ctx, st, false)
			return err
		})
		c.log.Debug("teardown removed", "what", strings.Join(removed, "; "))
		leaks := findLeaks(ctx, st, false)
		for _, l := range leaks {
			t.Errorf("node: left behind after teardown: %s", l)
		}
		if len(leaks) == 0 {
			if err := removeState(); err != nil {
				t.Errorf("node: %v", err)
			}
		}
	}
	releaseLock(c.lock)
	t.Logf("node: teardown took %s", time.Since(began).Round(time.Millisecond))
}

// saveLogs copies the components' logs to the test's artifact directory (kept with
// go test -artifacts).
func (c *Cluster) saveLogs(t *testing.T) {
	t.Helper()
	if c.artifacts == "" || c.root == "" {
		return
	}
	logs, _ := filepath.Glob(c.path("logs", "*.log"))
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			dst := filepath.Join(c.artifacts, "k8s-node-"+filepath.Base(l))
			_ = os.WriteFile(dst, b, 0o600) //nolint:gosec // the name of one of our own log files
		}
	}
}

// drain stops the controllers from making pods (cordon, delete the workload objects),
// deletes every pod with a short grace period, and waits until the API holds no pod and
// containerd runs no task.
func (c *Cluster) drain(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cs := c.client
	var errs []error
	keep := func(err error) {
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	_, err := cs.CoreV1().Nodes().Patch(ctx, c.opts.NodeName, types.MergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{})
	keep(err)
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("node: drain: %w", err)
	}
	bg := metav1.DeletePropagationBackground
	del := metav1.DeleteOptions{PropagationPolicy: &bg}
	all := metav1.ListOptions{}
	for _, ns := range nss.Items {
		n := ns.Name
		keep(cs.AppsV1().Deployments(n).DeleteCollection(ctx, del, all))
		keep(cs.AppsV1().StatefulSets(n).DeleteCollection(ctx, del, all))
		keep(cs.AppsV1().DaemonSets(n).DeleteCollection(ctx, del, all))
		keep(cs.AppsV1().ReplicaSets(n).DeleteCollection(ctx, del, all))
		keep(cs.CoreV1().ReplicationControllers(n).DeleteCollection(ctx, del, all))
		keep(cs.BatchV1().CronJobs(n).DeleteCollection(ctx, del, all))
		keep(cs.BatchV1().Jobs(n).DeleteCollection(ctx, del, all))
	}
	grace := int64(2)
	for _, ns := range nss.Items {
		keep(cs.CoreV1().Pods(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace}, all))
	}
	err = c.waitFor(ctx, c.proc("kubelet"), "no pods and no containerd tasks", 250*time.Millisecond, func(ctx context.Context) error {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("node: %d pods left, e.g. %s/%s", len(pods.Items), pods.Items[0].Namespace, pods.Items[0].Name)
		}
		tasks, err := c.ctr(ctx, "-n", "k8s.io", "tasks", "ls", "-q")
		if err != nil {
			return err
		}
		if len(tasks) > 0 {
			return fmt.Errorf("node: %d containerd tasks left", len(tasks))
		}
		return nil
	})
	if err != nil && !errors.Is(err, errProcessExited) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ctr runs ctr on the cluster's containerd and returns the lines it printed.
func (c *Cluster) ctr(ctx context.Context, args ...string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := command(ctx, nil, "ctr", append([]string{"--address", c.ContainerdAddress()}, args...)...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

// removeContainers kills and deletes every task and container containerd still has, in every
// namespace.
func (c *Cluster) removeContainers(ctx context.Context) error {
	namespaces, err := c.ctr(ctx, "namespaces", "ls", "-q")
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range namespaces {
		tasks, err := c.ctr(ctx, "-n", ns, "tasks", "ls", "-q")
		if err != nil {
			errs = append(errs, err)
		}
		for _, id := range tasks {
			_, _ = c.ctr(ctx, "-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", id)
			if _, err := c.ctr(ctx, "-n", ns, "tasks", "delete", "--force", id); err != nil {
				errs = append(errs, err)
			}
		}
		containers, err := c.ctr(ctx, "-n", ns, "containers", "ls", "-q")
		if err != nil {
			errs = append(errs, err)
		}
		for _, id := range containers {
			if _, err := c.ctr(ctx, "-n", ns, "containers", "delete", id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// stopShims kills the containerd shims that serve the given containerd socket (their
// -address), by PID, and waits for them to go.
func stopShims(sock string) error {
	find := func() []int {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
			if !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
				continue
			}
			for i := 0; i+1 < len(args); i++ {
				if args[i] == "-address" && args[i+1] == sock {
					pids = append(pids, pid)
				}
			}
		}
		return pids
	}
	for range 50 {
		pids := find()
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("node: containerd shims still running: %v", find())
}
