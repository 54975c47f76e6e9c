//go:build e2e_k8s

package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attestmesh/attestmesh/e2e/e2etest"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Version is the Kubernetes release the harness runs (built by build-k8s.sh).
const Version = "v1.37.2"

// Options says how to run the cluster; the zero value is a good default.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
	// kube-proxy. Empty means $ATTESTMESH_K8S_BIN, else $HOME/.cache/attestmesh/k8s/bin; Start
	// runs build-k8s.sh when they are missing there (the first build takes 20+ minutes).
	BinDir string
	// NodeName is the node's name (and the kubelet's user, system:node:NodeName). Default
	// attestmesh-node.
	NodeName string
	// PodCIDR is the bridge's subnet: the host takes its first address (NodeIP), pods the rest.
	// Default 10.232.0.0/24 (10.231.0.0/24 is `attestmesh up`'s, 10.233.0.0/24 the e2e mesh test's).
	PodCIDR netip.Prefix
	// ServiceCIDR is where ClusterIPs come from. Default 10.96.0.0/24.
	ServiceCIDR netip.Prefix
	// Bridge is the name of the CNI bridge. Default amk8s0.
	Bridge string
	// Logger receives the harness's progress; nil means the test's output.
	Logger *slog.Logger
	// StartTimeout bounds Start once the binaries exist. Default 4 minutes.
	StartTimeout time.Duration
}

func (o Options) withDefaults(t *testing.T) (Options, error) {
	t.Helper()
	if o.BinDir == "" {
		o.BinDir = os.Getenv("ATTESTMESH_K8S_BIN")
	}
	if o.BinDir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return o, fmt.Errorf("node: %w", err)
		}
		o.BinDir = filepath.Join(home, ".cache", "attestmesh", "k8s", "bin")
	}
	if o.NodeName == "" {
		o.NodeName = "attestmesh-node"
	}
	if !o.PodCIDR.IsValid() {
		o.PodCIDR = netip.MustParsePrefix("10.232.0.0/24")
	}
	if !o.ServiceCIDR.IsValid() {
		o.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/24")
	}
	if o.Bridge == "" {
		o.Bridge = "amk8s0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 4 * time.Minute
	}
	o.PodCIDR, o.ServiceCIDR = o.PodCIDR.Masked(), o.ServiceCIDR.Masked()
	switch {
	case !o.PodCIDR.Addr().Is4() || o.PodCIDR.Bits() > 28:
		return o, fmt.Errorf("node: pod CIDR %s: want an IPv4 prefix of /28 or wider", o.PodCIDR)
	case !o.ServiceCIDR.Addr().Is4() || o.ServiceCIDR.Bits() > 28:
		return o, fmt.Errorf("node: service CIDR %s: want an IPv4 prefix of /28 or wider", o.ServiceCIDR)
	case o.PodCIDR.Overlaps(o.ServiceCIDR):
		return o, fmt.Errorf("node: pod CIDR %s overlaps service CIDR %s", o.PodCIDR, o.ServiceCIDR)
	case len(o.Bridge) > 15 || strings.ContainsAny(o.Bridge, " /"):
		return o, fmt.Errorf("node: bridge name %q: want at most 15 bytes, no spaces or slashes", o.Bridge)
	}
	return o, nil
}

// Timings say how long each stage took, from the start of Start.
type Timings struct {
	EtcdReady       time.Duration // etcd answers /health
	APIServerReady  time.Duration // kube-apiserver answers /readyz
	ContainerdReady time.Duration // containerd serves its socket and holds the pause image
	NodeReady       time.Duration // the Node is Ready
	Ready           time.Duration // everything: kube-proxy synced, default ServiceAccount and kube-root-ca.crt exist
}

func (tm Timings) String() string {
	return fmt.Sprintf("etcd ready %s, apiserver ready %s, containerd ready %s, node Ready %s, cluster ready %s",
		tm.EtcdReady.Round(time.Millisecond), tm.APIServerReady.Round(time.Millisecond),
		tm.ContainerdReady.Round(time.Millisecond), tm.NodeReady.Round(time.Millisecond),
		tm.Ready.Round(time.Millisecond))
}

// Cluster is a running single-node cluster. Its methods are safe for concurrent use.
type Cluster struct {
	opts    Options
	log     *slog.Logger
	root    string // private root of every component; removed by teardown
	nodeIP  netip.Addr
	ports   ports
	tokens  tokens
	spawner *spawner
	lock    *os.File
	snap    *hostState
	// artifacts receives the components' logs at teardown (kept with go test -artifacts).
	artifacts string

	kubeconfig string
	rest       *rest.Config
	client     kubernetes.Interface
	timings    Timings

	mu    sync.Mutex
	procs map[string]*process
}

// Start runs a cluster for the test and registers its teardown and leak check with
// t.Cleanup. It skips the test when the machine cannot run one (not root, a package missing,
// binaries that cannot be built) and fails it when the cluster does not come up within
// Options.StartTimeout, with the tail of the failing component's log.
func Start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	opts, err := opts.withDefaults(t)
	require.NoError(t, err)
	if reason := missingPrerequisite(); reason != "" {
		e2etest.Prerequisite(t, "node: skipping: "+reason)
	}
	ensureBinaries(t, opts.BinDir)
	began := time.Now()
	c := &Cluster{
		opts:   opts,
		log:    opts.Logger.With("subsystem", "k8s-node"),
		nodeIP: opts.PodCIDR.Addr().Next(),
		procs:  map[string]*process{},
	}
	lockCtx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	lock, err := acquireLock(lockCtx, c.log)
	require.NoError(t, err)
	c.lock = lock
	c.spawner = newSpawner()
	c.artifacts = t.ArtifactDir() // before teardown is registered: its own cleanup runs after
	t.Cleanup(func() { c.teardown(t) })

	ctx, cancel := context.WithTimeout(t.Context(), opts.StartTimeout)
	defer cancel()
	require.NoError(t, c.recoverCrashed(ctx))
	c.snap, err = snapshotHost(ctx, opts.Bridge)
	require.NoError(t, err)
	root, err := os.MkdirTemp("", "attestmesh-k8s-node-")
	require.NoError(t, err)
	c.root = root
	require.NoError(t, writeState(runState{
		PID: os.Getpid(), Root: c.root, BinDir: opts.BinDir, Bridge: opts.Bridge,
		PodCIDR: opts.PodCIDR.String(), ServiceCIDR: opts.ServiceCIDR.String(), Snapshot: c.snap,
	}))
	require.NoError(t, c.start(ctx, began))
	c.log.Info("cluster ready", "timings", c.timings.String(), "nodeIP", c.nodeIP, "podCIDR", opts.PodCIDR,
		"apiserver", c.rest.Host, "root", c.root)
	return c
}

// RESTConfig returns a copy of the admin's client configuration (system:masters).
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.rest) }

// Kubeconfig is the path of the admin's kubeconfig (for kubectl and helm).
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// Client is a clientset with the admin's credentials.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// NodeName is the name of the only node.
func (c *Cluster) NodeName() string { return c.opts.NodeName }

// NodeIP is the host's address on the bridge: the pods' gateway, the node's InternalIP, and
// where kube-apiserver and the kubelet listen. Pods reach services on the host here.
func (c *Cluster) NodeIP() netip.Addr { return c.nodeIP }

// PodCIDR is the subnet pods get their addresses from.
func (c *Cluster) PodCIDR() netip.Prefix { return c.opts.PodCIDR }

// ServiceCIDR is the subnet ClusterIPs come from.
func (c *Cluster) ServiceCIDR() netip.Prefix { return c.opts.ServiceCIDR }

// Bridge is the name of the pods' bridge.
func (c *Cluster) Bridge() string { return c.opts.Bridge }

// Timings says how long Start took to reach each stage.
func (c *Cluster) Timings() Timings { return c.timings }

// Root is the directory every component keeps its state in (removed by teardown).
func (c *Cluster) Root() string { return c.root }

// ContainerdAddress is the path of the private containerd's socket (for ctr --address).
func (c *Cluster) ContainerdAddress() string { return c.path("run", "containerd", "containerd.sock") }

// Components names the processes the cluster runs, for LogTail.
func Components() []string {
	return []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet", "kube-proxy"}
}

// LogTail returns the last lines of a component's log (see Components); empty after
// teardown.
func (c *Cluster) LogTail(name string) string { return tailFile(c.path("logs", name+".log"), 40) }

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.root}, elem...)...)
}

// start brings the cluster up, in order; it returns the first failure with the tail of the
// failing component's log.
func (c *Cluster) start(ctx context.Context, began time.Time) error {
	since := func() time.Duration { return time.Since(began) }
	for _, d := range []string{"logs", "pki", "etcd", "conf", "manifests", "kubelet", "pod-logs",
		"containerd", "run", "cni/net.d", "images"} {
		if err := os.MkdirAll(c.path(d), 0o750); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	if err := c.setupNetwork(ctx); err != nil {
		return err
	}
	var err error
	if c.ports, err = pickPorts(ctx, c.nodeIP); err != nil {
		return err
	}
	if err := c.writeCredentials(); err != nil {
		return err
	}
	if err := c.writeConfigs(); err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { // etcd, then the API server
		if err := c.startEtcd(gctx); err != nil {
			return err
		}
		c.timings.EtcdReady = since()
		c.log.Info("etcd ready", "after", c.timings.EtcdReady.Round(time.Millisecond))
		if err := c.startAPIServer(gctx); err != nil {
			return err
		}
		c.timings.APIServerReady = since()
		c.log.Info("kube-apiserver ready", "after", c.timings.APIServerReady.Round(time.Millisecond), "url", c.rest.Host)
		return nil
	})
	g.Go(func() error { // meanwhile: the pause image and containerd
		if err := c.startContainerd(gctx); err != nil {
			return err
		}
		c.timings.ContainerdReady = since()
		c.log.Info("containerd ready", "after", c.timings.ContainerdReady.Round(time.Millisecond))
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}

	g, gctx = errgroup.WithContext(ctx)
	g.Go(func() error { return c.startControllerManager(gctx) })
	g.Go(func() error { return c.startScheduler(gctx) })
	g.Go(func() error { return c.startKubeProxy(gctx) })
	g.Go(func() error {
		if err := c.startKubelet(gctx); err != nil {
			return err
		}
		c.timings.NodeReady = since()
		c.log.Info("node Ready", "after", c.timings.NodeReady.Round(time.Millisecond), "node", c.opts.NodeName)
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	if err := c.waitDefaultServiceAccount(ctx); err != nil {
		return err
	}
	c.timings.Ready = since()
	return nil
}

// missingPrerequisite says why this machine cannot run a node, or "".
func missingPrerequisite() string {
	if os.Geteuid() != 0 {
		return "a Kubernetes node needs root"
	}
	if runtime.GOOS != "linux" {
		return "a Kubernetes node needs Linux"
	}
	var missing []string
	for _, tool := range []struct{ bin, pkg string }{
		{"containerd", "containerd"}, {"containerd-shim-runc-v2", "containerd"}, {"ctr", "containerd"},
		{"runc", "runc"}, {"iptables", "iptables"}, {"iptables-save", "iptables"}, {"iptables-restore", "iptables"},
		{"ip6tables-save", "iptables"}, {"ip6tables-restore", "iptables"}, {"conntrack", "conntrack"},
		{"nft", "nftables"}, {"nfacct", "nfacct"}, {"ip", "iproute2"}, {"mount", "mount"},
	} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", tool.bin, tool.pkg))
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, plugin)); err != nil {
			missing = append(missing, fmt.Sprintf("%s/%s (Debian package containernetworking-plugins)", cniBinDir, plugin))
		}
	}
	if len(missing) > 0 {
		return "missing " + strings.Join(missing, ", ")
	}
	return ""
}

// binaryNames are what build-k8s.sh builds.
func binaryNames() []string {
	return []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"}
}

// ensureBinaries builds the cluster's binaries with build-k8s.sh unless they are in dir; it
// skips the test, saying why, when they cannot be built.
func ensureBinaries(t *testing.T, dir string) {
	t.Helper()
	var missing []string
	for _, b := range binaryNames() {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || !fi.Mode().IsRegular() {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return
	}
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		e2etest.Prerequisite(t, "node: skipping: cannot locate build-k8s.sh")
	}
	script := filepath.Join(filepath.Dir(self), "..", "build-k8s.sh")
	t.Logf("node: building %s into %s with %s (the first build takes 20+ minutes on 2 cores)",
		strings.Join(missing, ", "), dir, script)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = filepath.Dir(script)
	cmd.Env = append(os.Environ(), "OUT="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		e2etest.Prerequisite(t, fmt.Sprintf("node: skipping: cannot build the Kubernetes binaries (needs the Go module proxy; or set ATTESTMESH_K8S_BIN to prebuilt ones): %v\n%s",
			err, lastBytes(out, 3000)))
	}
}

// errProcessExited is returned by waits whose process died.
var errProcessExited = errors.New("exited")

// newClient builds the admin's client from the kubeconfig.
func (c *Cluster) newClient() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return fmt.Errorf("node: kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Timeout = 30 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("node: client: %w", err)
	}
	c.rest, c.client = cfg, client
	return nil
}
