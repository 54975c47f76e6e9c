//go:build e2e_k8s

package k8s_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// binaries returns the directory that holds kube-apiserver and etcd, building them once with
// build-k8s.sh (into $HOME/.cache/attestmesh/k8s/bin unless ATTESTMESH_K8S_BIN says
// otherwise). The test skips, saying why, when they cannot be built (no module proxy, ...).
func binaries(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ATTESTMESH_K8S_BIN")
	if dir == "" {
		home, err := os.UserHomeDir()
		require.NoError(t, err)
		dir = filepath.Join(home, ".cache", "attestmesh", "k8s", "bin")
	}
	if exists(filepath.Join(dir, "kube-apiserver")) && exists(filepath.Join(dir, "etcd")) {
		return dir
	}
	t.Logf("building kube-apiserver and etcd into %s (first time: several minutes)", dir)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nice", "-n", "10", "./build-k8s.sh")
	cmd.Env = append(os.Environ(), "OUT="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := out
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		t.Skipf("skipping: cannot build kube-apiserver and etcd (needs the Go module proxy; set ATTESTMESH_K8S_BIN to prebuilt binaries): %v\n%s", err, tail)
	}
	return dir
}

func exists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs a process with its output in dir/name.log; cleanup stops it (SIGTERM, then
// SIGKILL after 10 s) and waits for it.
func start(t *testing.T, dir, name string, bin string, args ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	require.NoError(t, err)
	cmd := exec.Command(bin, args...) //nolint:gosec,noctx // the test's own binaries; stopped in cleanup
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("--- %s log (tail) ---\n%s", name, b)
			}
		}
	})
}

// cluster is a real etcd and kube-apiserver on loopback.
type cluster struct {
	kubeconfig string
	rest       *rest.Config
}

func startCluster(t *testing.T, bin string) *cluster {
	t.Helper()
	dir := t.TempDir()
	etcdPort, peerPort, apiPort := freePort(t), freePort(t), freePort(t)
	start(t, dir, "etcd", filepath.Join(bin, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-url", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--listen-peer-url", fmt.Sprintf("http://127.0.0.1:%d", peerPort))

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sa.key"),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sa.pub"),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600))
	tok := make([]byte, 16)
	_, err = rand.Read(tok)
	require.NoError(t, err)
	token := hex.EncodeToString(tok)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokens.csv"),
		[]byte(token+`,admin,admin-uid,"system:masters"`+"\n"), 0o600))
	certDir := filepath.Join(dir, "certs")
	start(t, dir, "kube-apiserver", filepath.Join(bin, "kube-apiserver"),
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--secure-port="+strconv.Itoa(apiPort),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=10.96.0.0/24",
		"--authorization-mode=RBAC",
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--cert-dir="+certDir)

	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	waitReady(t, server, token)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
`, server, filepath.Join(certDir, "apiserver.crt"), token), 0o600))
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	return &cluster{kubeconfig: kubeconfig, rest: cfg}
}

// waitReady polls /readyz until the API server answers ok (at most 90 s).
func waitReady(t *testing.T, server, token string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		// Only to poll readiness before the serving certificate exists on disk.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback readiness poll
	}}
	deadline := time.Now().Add(90 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, server+"/readyz", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("readyz: %s", resp.Status)
		}
		last = err
		time.Sleep(500 * time.Millisecond)
	}
	require.NoError(t, errors.Join(errors.New("kube-apiserver not ready after 90s"), last))
}
