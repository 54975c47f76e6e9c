//go:build e2e_k8s

package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// cniBinDir is where Debian's containernetworking-plugins installs the plugins.
	cniBinDir = "/usr/lib/cni"
	// cniNetwork names the CNI network (and prefixes containerd's CNI cache files).
	cniNetwork = "attestmesh-node"
	// PauseImage is the sandbox image Start builds from ./pause and imports.
	PauseImage = "localhost/attestmesh/pause:e2e"
)

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.BinDir, name) }

func (c *Cluster) apiServerURL() string {
	return "https://" + netip.AddrPortFrom(c.nodeIP, uint16(c.ports.APIServer)).String() //nolint:gosec // a port from the kernel
}

func loopbackURL(scheme string, port int) string {
	return scheme + "://" + netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String() //nolint:gosec // a port from the kernel
}

// writeConfigs writes containerd's, the CNI network's, the kubelet's and kube-proxy's
// configuration: the example files in notes/k8s-node with this cluster's paths and addresses.
func (c *Cluster) writeConfigs() error {
	for _, d := range []string{"containerd/root", "containerd/state", "containerd/opt", "containerd/certs.d/_default",
		"run/containerd", "run/runc", "run/cni-ipam", "kubelet/pki", "apiserver"} {
		if err := os.MkdirAll(c.path(d), 0o750); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	for path, content := range map[string]string{
		c.path("conf", "containerd.toml"):                         c.containerdConfig(),
		c.path("containerd", "certs.d", "_default", "hosts.toml"): registryHosts,
		c.path("cni", "net.d", "10-"+cniNetwork+".conflist"):      c.cniConfig(),
		c.path("conf", "kubelet.yaml"):                            c.kubeletConfig(),
		c.path("conf", "kube-proxy.yaml"):                         c.kubeProxyConfig(),
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	return nil
}

// registryHosts is containerd's hosts.toml for every registry (certs.d/_default): every pull
// goes to a closed loopback port and fails at once, never to the network; images are
// imported. containerd 1.6 ignores a hosts.toml without a [host] table (and falls back to the
// registry's own address), hence the table.
const registryHosts = `server = "http://127.0.0.1:1"

[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
`

func (c *Cluster) containerdConfig() string {
	r := c.root
	return fmt.Sprintf(`version = 2
root = "%[1]s/containerd/root"
state = "%[1]s/containerd/state"
[grpc]
  address = "%[2]s"
[ttrpc]
  address = "%[2]s.ttrpc"
[debug]
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%[3]s"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # root lacks CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj (the sandbox wants -998)
  restrict_oom_score_adj = true
  # pods' network namespaces under the private state dir, not /run/netns
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "%[1]s/run/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "%[4]s"
    conf_dir = "%[1]s/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "%[1]s/containerd/certs.d"
`, r, c.ContainerdAddress(), PauseImage, cniBinDir)
}

func (c *Cluster) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    }
  ]
}
`, cniNetwork, c.opts.Bridge, c.opts.PodCIDR.String(), c.nodeIP.String(), c.path("run", "cni-ipam"))
}

func (c *Cluster) kubeletConfig() string {
	sock := "unix://" + c.ContainerdAddress()
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
healthzBindAddress: 127.0.0.1
healthzPort: %[3]d
readOnlyPort: 0
tlsCertFile: %[4]s/pki/kubelet.crt
tlsPrivateKeyFile: %[4]s/pki/kubelet.key
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: %[5]s
imageServiceEndpoint: %[5]s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[4]s/pki/ca.crt}
authorization: {mode: AlwaysAllow}
podLogsDir: %[4]s/pod-logs
staticPodPath: %[4]s/manifests
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: ""
clusterDomain: cluster.local
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
maxPods: 50
serializeImagePulls: false
registerNode: true
nodeStatusUpdateFrequency: 5s
fileCheckFrequency: 5s
syncFrequency: 10s
`, c.nodeIP, c.ports.Kubelet, c.ports.KubeletHealthz, c.root, sock)
}

// kubeProxyConfig is iptables mode, node ports only on the bridge, no localhost node ports
// (they would set net.ipv4.conf.all.route_localnet), and conntrack left as the host has it.
func (c *Cluster) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: %[1]s/conf/kube-proxy.kubeconfig
hostnameOverride: %[2]s
bindAddress: %[3]s
healthzBindAddress: 127.0.0.1:%[4]d
metricsBindAddress: 127.0.0.1:%[5]d
clusterCIDR: %[6]s
detectLocalMode: ClusterCIDR
nodePortAddresses: [%[6]s]
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
  masqueradeAll: false
  minSyncPeriod: 0s
  syncPeriod: 30s
`, c.root, c.opts.NodeName, c.nodeIP, c.ports.ProxyHealthz, c.ports.ProxyMetrics, c.opts.PodCIDR)
}

// httpClient trusts the cluster's CA.
func (c *Cluster) httpClient() (*http.Client, error) {
	pem, err := os.ReadFile(c.path("pki", "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}, nil
}

// get succeeds when url answers 200 (and, if want is not empty, a body that contains it).
func (c *Cluster) get(ctx context.Context, url, token, want string) error {
	client, err := c.httpClient()
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("node: GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	p, err := c.run("etcd", c.bin("etcd"),
		"--data-dir", c.path("etcd", "data"),
		"--listen-client-url", loopbackURL("http", c.ports.EtcdClient),
		"--listen-peer-url", loopbackURL("http", c.ports.EtcdPeer))
	if err != nil {
		return err
	}
	return c.waitFor(ctx, p, "etcd /health", 100*time.Millisecond, func(ctx context.Context) error {
		return c.get(ctx, loopbackURL("http", c.ports.EtcdClient)+"/health", "", `"health":"true"`)
	})
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	pki := func(f string) string { return c.path("pki", f) }
	p, err := c.run("kube-apiserver", c.bin("kube-apiserver"),
		"--etcd-servers="+loopbackURL("http", c.ports.EtcdClient),
		"--bind-address="+c.nodeIP.String(),
		"--advertise-address="+c.nodeIP.String(),
		"--secure-port="+strconv.Itoa(c.ports.APIServer),
		"--endpoint-reconciler-type=lease",
		"--service-cluster-ip-range="+c.opts.ServiceCIDR.String(),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--token-auth-file="+pki("tokens.csv"),
		"--client-ca-file="+pki("ca.crt"),
		// The front proxy: kube-system/extension-apiserver-authentication carries its CA to the
		// controller manager's and scheduler's delegated authentication (and aggregated APIs).
		"--requestheader-client-ca-file="+pki("ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+pki("front-proxy-client.crt"),
		"--proxy-client-key-file="+pki("front-proxy-client.key"),
		"--tls-cert-file="+pki("apiserver.crt"),
		"--tls-private-key-file="+pki("apiserver.key"),
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki("sa.pub"),
		"--service-account-signing-key-file="+pki("sa.key"),
		"--cert-dir="+c.path("apiserver"),
		"--profiling=false")
	if err != nil {
		return err
	}
	return c.waitFor(ctx, p, "kube-apiserver /readyz", 250*time.Millisecond, func(ctx context.Context) error {
		return c.get(ctx, c.apiServerURL()+"/readyz", c.tokens.Admin, "ok")
	})
}

func (c *Cluster) startControllerManager(ctx context.Context) error {
	kc := c.path("conf", "kube-controller-manager.kubeconfig")
	p, err := c.run("kube-controller-manager", c.bin("kube-controller-manager"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(c.ports.ControllerManager),
		"--cert-dir="+c.path("kube-controller-manager"),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+c.path("pki", "sa.key"),
		"--root-ca-file="+c.path("pki", "ca.crt"),
		"--cluster-name=attestmesh-node",
		"--allocate-node-cidrs=false",
		"--profiling=false")
	if err != nil {
		return err
	}
	return c.waitFor(ctx, p, "kube-controller-manager /healthz", 250*time.Millisecond, func(ctx context.Context) error {
		return c.insecureLoopbackGet(ctx, c.ports.ControllerManager)
	})
}

func (c *Cluster) startScheduler(ctx context.Context) error {
	kc := c.path("conf", "kube-scheduler.kubeconfig")
	p, err := c.run("kube-scheduler", c.bin("kube-scheduler"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(c.ports.Scheduler),
		"--cert-dir="+c.path("kube-scheduler"),
		"--leader-elect=false",
		"--profiling=false")
	if err != nil {
		return err
	}
	return c.waitFor(ctx, p, "kube-scheduler /healthz", 250*time.Millisecond, func(ctx context.Context) error {
		return c.insecureLoopbackGet(ctx, c.ports.Scheduler)
	})
}

// insecureLoopbackGet polls /healthz of a component that serves a self-signed certificate
// (the controller manager and the scheduler write one into their --cert-dir) on 127.0.0.1.
func (c *Cluster) insecureLoopbackGet(ctx context.Context, port int) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a readiness poll on loopback
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loopbackURL("https", port)+"/healthz", nil)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("node: healthz: %s", resp.Status)
	}
	return nil
}

// startContainerd builds and writes the pause image, runs containerd and imports the image.
func (c *Cluster) startContainerd(ctx context.Context) error {
	pauseTar := c.path("images", "pause.tar")
	if err := buildGoImage(ctx, pauseTar, "github.com/attestmesh/attestmesh/e2e/k8s/node/pause", PauseImage); err != nil {
		return err
	}
	p, err := c.run("containerd", "containerd", "--config", c.path("conf", "containerd.toml"))
	if err != nil {
		return err
	}
	if err := c.waitFor(ctx, p, "containerd's socket", 100*time.Millisecond, func(ctx context.Context) error {
		_, err := command(ctx, nil, "ctr", "--address", c.ContainerdAddress(), "version")
		return err
	}); err != nil {
		return err
	}
	if err := c.importImage(ctx, pauseTar); err != nil {
		return c.componentErr("containerd", err)
	}
	return nil
}

func (c *Cluster) startKubelet(ctx context.Context) error {
	p, err := c.run("kubelet", c.bin("kubelet"),
		"--config="+c.path("conf", "kubelet.yaml"),
		"--kubeconfig="+c.path("conf", "kubelet.kubeconfig"),
		"--hostname-override="+c.opts.NodeName,
		"--node-ip="+c.nodeIP.String(),
		"--root-dir="+c.path("kubelet"),
		"--cert-dir="+c.path("kubelet", "pki"))
	if err != nil {
		return err
	}
	if err := c.waitFor(ctx, p, "kubelet /healthz", 100*time.Millisecond, func(ctx context.Context) error {
		return c.get(ctx, loopbackURL("http", c.ports.KubeletHealthz)+"/healthz", "", "ok")
	}); err != nil {
		return err
	}
	return c.waitFor(ctx, p, "Node "+c.opts.NodeName+" Ready", 250*time.Millisecond, func(ctx context.Context) error {
		n, err := c.client.CoreV1().Nodes().Get(ctx, c.opts.NodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node: not Ready: %s: %s", cond.Reason, cond.Message)
			}
		}
		return errors.New("node: no Ready condition yet")
	})
}

func (c *Cluster) startKubeProxy(ctx context.Context) error {
	p, err := c.run("kube-proxy", c.bin("kube-proxy"), "--config="+c.path("conf", "kube-proxy.yaml"))
	if err != nil {
		return err
	}
	return c.waitFor(ctx, p, "kube-proxy /healthz", 250*time.Millisecond, func(ctx context.Context) error {
		return c.get(ctx, loopbackURL("http", c.ports.ProxyHealthz)+"/healthz", "", "")
	})
}

// waitDefaultServiceAccount waits for the controller manager to create the default
// ServiceAccount (pods cannot be admitted to the default namespace before) and to publish
// kube-root-ca.crt (the kubelet needs it for every pod's token volume).
func (c *Cluster) waitDefaultServiceAccount(ctx context.Context) error {
	return c.waitFor(ctx, c.proc("kube-controller-manager"), "ServiceAccount default/default and ConfigMap kube-root-ca.crt", 250*time.Millisecond, func(ctx context.Context) error {
		if _, err := c.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("node: %w", err)
		}
		if _, err := c.client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("node: %w", err)
		}
		return nil
	})
}
