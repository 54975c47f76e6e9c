//go:build e2e_k8s

package k8s_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/controlplane/injector"
	"github.com/attestmesh/attestmesh/e2e/e2etest"
)

var authTokenRequest = authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))}}

func measureFile(p string) ([32]byte, error) {
	m, err := measure.File(p)
	return [32]byte(m), err
}

// prometheus is Debian's Prometheus on the host, scraping the control plane's metrics port and
// every injected pod's sidecar admin port in the cluster. Debian builds Prometheus without its
// Kubernetes service discovery, so the test serves it the same targets over HTTP service
// discovery (http_sd_configs), from the API server's list of running pods at every refresh:
// what kubernetes_sd_configs with role pod and the relabeling in docs/kubernetes.md select.
type prometheus struct {
	base   string
	cancel context.CancelFunc
	exited chan error
	log    string
}

// targetGroup is one entry of Prometheus's HTTP service discovery.
type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// podTargets lists the scrape targets among the running pods of the test's namespaces: the
// control plane's metrics port 9102 and the sidecar admin port 15000 of every injected pod.
func podTargets(ctx context.Context, cs kubernetes.Interface) ([]targetGroup, error) {
	groups := []targetGroup{}
	for _, ns := range []string{cpNamespace, appNamespace} {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
				continue
			}
			var port uint16
			switch {
			case p.Labels["app.kubernetes.io/component"] == "controlplane":
				port = 9102
			case p.Labels[injector.LabelInjected] == "true":
				port = 15000
			default:
				continue
			}
			groups = append(groups, targetGroup{
				Targets: []string{netip.AddrPortFrom(netip.MustParseAddr(p.Status.PodIP), port).String()},
				Labels:  map[string]string{"namespace": ns, "pod": p.Name, "service": p.Labels["app.kubernetes.io/name"]},
			})
		}
	}
	return groups, nil
}

func startPrometheus(ctx context.Context, t *testing.T, cs kubernetes.Interface) *prometheus {
	t.Helper()
	if _, err := exec.LookPath("prometheus"); err != nil {
		e2etest.Prerequisite(t, "needs Debian's prometheus")
	}
	var lc net.ListenConfig
	sdLn, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sd := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		groups, err := podTargets(r.Context(), cs)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(groups)
	})}
	go func() { _ = sd.Serve(sdLn) }()
	t.Cleanup(func() { _ = sd.Close() })

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: attestmesh
    http_sd_configs:
      - url: http://%s/targets
        refresh_interval: 1s
`, sdLn.Addr())
	cfgFile := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o600))
	out, err := exec.CommandContext(ctx, "promtool", "check", "config", cfgFile).CombinedOutput()
	require.NoError(t, err, "promtool check config:\n%s", out)
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	listen := ln.Addr().String()
	require.NoError(t, ln.Close())
	p := &prometheus{base: "http://" + listen, exited: make(chan error, 1), log: filepath.Join(dir, "prometheus.log")}
	logFile, err := os.Create(p.log)
	require.NoError(t, err)
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	cmd := exec.CommandContext(pctx, "prometheus", "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	require.NoError(t, cmd.Start())
	go func() {
		p.exited <- cmd.Wait()
		logFile.Close()
	}()
	t.Cleanup(func() { p.stop(t) })
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := e2etest.Get(ctx, p.base+"/-/ready")
		assert.NoError(c, err)
	}, 30*time.Second, 100*time.Millisecond, "prometheus ready at %s", p.base)
	return p
}

// stop ends Prometheus once (a clean SIGTERM).
func (p *prometheus) stop(t *testing.T) {
	t.Helper()
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	if err := <-p.exited; err != nil && !errors.Is(err, context.Canceled) {
		b, _ := os.ReadFile(p.log)
		t.Errorf("prometheus: %v\n%s", err, b)
	}
}

// query runs an instant query and returns the number of series and the raw result.
func (p *prometheus) query(ctx context.Context, q string) (int, string, error) {
	body, err := e2etest.Get(ctx, p.base+"/api/v1/query?query="+url.QueryEscape(q))
	if err != nil {
		return 0, "", err
	}
	var resp struct {
		Status string `json:"status"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		return 0, "", fmt.Errorf("query %s: %w", q, err)
	}
	if resp.Status != "success" {
		return 0, "", fmt.Errorf("query %s: %s", q, body)
	}
	return len(resp.Data.Result), body, nil
}

// dashboardQueries are the expressions of the chart's Grafana dashboard.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "charts", "attestmesh", "files", "dashboard.json"))
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &d))
	out := map[string]string{}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			out[fmt.Sprintf("%s [%d]", p.Title, i)] = tg.Expr
		}
	}
	require.NotEmpty(t, out)
	return out
}

// prometheus: a real Prometheus scrapes the control plane and every sidecar in the cluster, and
// every query of the chart's dashboard returns data.
func (s *suite) prometheus(t *testing.T) {
	ctx := t.Context()
	s.prom = startPrometheus(ctx, t, s.cs)
	p := s.prom
	// Traffic for the rate() panels, while Prometheus watches.
	hc := s.apiClient(s.apiService(ctx, t))
	queries := dashboardQueries(t)
	// The refusals of the intruder phase were counted by a Redis pod that has been replaced
	// since: a plaintext connection gives the current one a handshake failure to count.
	redis := podAddr(s.podOf(ctx, t, "redis"), 6379)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, _, _ = call(ctx, hc, "GET", "/patient/patient-2", nil)
		plaintextPing(ctx, redis)
		n, body, err := p.query(ctx, `up == 1`)
		require.NoError(c, err)
		assert.GreaterOrEqual(c, n, 4, "the control plane and three sidecars are up: %s", body)
		for name, q := range queries {
			n, body, err := p.query(ctx, q)
			require.NoError(c, err, name)
			assert.Positive(c, n, "%s: %s returns no data: %s", name, q, body)
		}
	}, 2*time.Minute, 2*time.Second, "every dashboard query returns data from Prometheus at %s", p.base)
	t.Logf("%d dashboard queries return data", len(queries))
}

// plaintextPing sends a Redis PING in plaintext to a sidecar's inbound listener, which refuses
// it (a handshake failure, reason plaintext), and returns what came back.
func plaintextPing(ctx context.Context, addr netip.AddrPort) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return ""
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Write([]byte("PING\r\n"))
	reply, _ := io.ReadAll(conn)
	return string(reply)
}
