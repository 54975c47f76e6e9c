//go:build e2e_k8s

// Package k8s_test runs attestmesh on a real single-node Kubernetes cluster (package node):
// the control plane chart with the image `make image` builds, running as a pod; `attestmesh
// apply` of the Flask/Redis example with its images built from Debian's packages; `helm install
// flaskredis`; the example through the sidecars from the host; an intruder refused at Redis's
// sidecar; scaling and pod replacement followed by the control plane; a real Prometheus over
// the chart's dashboard; the launcher's isolation in a pod; the injector's refusals; and helm
// uninstall, after which the harness checks that nothing is left on the host. Run it with
// `make e2e-k8s`.
package k8s_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	kresource "k8s.io/cli-runtime/pkg/resource"
	"k8s.io/client-go/kubernetes"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/charts/image"
	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/injector"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/e2e/e2etest"
	"github.com/attestmesh/attestmesh/e2e/k8s/node"
)

const (
	cpNamespace  = "attestmesh-system"
	appNamespace = "flask-redis"
	cpImageRepo  = "localhost/attestmesh/attestmesh"
	cpImageTag   = "e2e"
	probeImage   = "localhost/attestmesh/probe:e2e"
	appRelease   = "flaskredis"
)

// suite is what the phases of the test share.
type suite struct {
	c         *node.Cluster
	cs        kubernetes.Interface
	bin       string // the attestmesh binary
	work      string // a copy of the example
	cpIP      netip.Addr
	caFile    string
	caPEM     []byte
	mgmt      *mgmtapi.Client
	apiCA     *x509.CertPool
	cpRel     *release.Release
	appRel    *release.Release
	prom      *prometheus
	recovered time.Duration
	edsAdd    time.Duration // a new Redis pod Ready -> an endpoint of the API's sidecar
	edsRemove time.Duration // Redis scaled down -> the removed pod gone from it
}

func TestFlaskRedisOnKubernetes(t *testing.T) {
	began := time.Now()
	c := node.Start(t, node.Options{})
	s := &suite{c: c, cs: c.Client()}
	t.Cleanup(func() { // before the cluster's teardown
		if t.Failed() {
			s.dumpLogs(t)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 25*time.Minute)
	defer cancel()

	s.images(ctx, t)
	t.Logf("images built and imported %s after the start", time.Since(began).Round(time.Second))
	s.installControlPlane(ctx, t)
	s.applyAndInstall(ctx, t)
	t.Logf("the example runs %s after the start", time.Since(began).Round(time.Second))

	ok := t.Run("API through the sidecars", s.api) &&
		t.Run("intruder refused at Redis's sidecar", s.intruder) &&
		t.Run("two API replicas, two SVIDs", s.scale) &&
		t.Run("EDS follows Redis replicas, keeps connections", s.eds) &&
		t.Run("Redis pod replaced", s.replaceRedis) &&
		t.Run("launcher's isolation in the pod", s.isolation) &&
		t.Run("Prometheus over the dashboard", s.prometheus) &&
		t.Run("injector refusals", s.refusals) &&
		t.Run("control plane's least privilege", s.leastPrivilege)
	if ok {
		t.Run("helm uninstall", s.uninstall)
	}
	t.Logf("closing note: EDS added a new Redis pod to the API's sidecar %s after it was Ready and removed one %s after the scale-down; the API answered GET from a new Redis pod %s after the old one was deleted; the whole test took %s before teardown",
		s.edsAdd.Round(10*time.Millisecond), s.edsRemove.Round(10*time.Millisecond), s.recovered.Round(100*time.Millisecond), time.Since(began).Round(time.Second))
}

// images builds the attestmesh image (as `make image`), the example's images from Debian's
// packages (as `make example-images`, root file systems cached) and the probe, and imports
// them into the node's containerd.
func (s *suite) images(ctx context.Context, t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	s.bin = e2etest.BuildAttestmesh(ctx, t)
	_, err := image.Build(image.Config{Binary: s.bin, SidecarBinary: controlplane.DefaultSidecarBinary(s.bin), Ref: cpImageRepo + ":" + cpImageTag, Version: "e2e", OutDir: filepath.Join(dir, "image")})
	require.NoError(t, err)
	s.c.ImportImage(t, filepath.Join(dir, "image", "attestmesh.tar")) //nolint:contextcheck // the harness bounds its commands by the test

	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		e2etest.Prerequisite(t, "the example's images need mmdebstrap (apt-get install mmdebstrap)")
	}
	home, err := os.UserHomeDir()
	require.NoError(t, err)
	s.work = t.TempDir()
	require.NoError(t, os.CopyFS(s.work, os.DirFS(filepath.Join("..", "..", "examples", "flask-redis"))))
	for _, img := range []struct {
		name, ref string
		pkgs      []string
	}{
		{"redis", "localhost/flaskredis/redis:1", []string{"redis-server"}},
		{"api", "localhost/flaskredis/api:1", []string{"python3", "python3-flask", "python3-redis"}},
	} {
		out := filepath.Join(s.work, "images", img.name+".tar")
		_, err := image.BuildDebian(ctx, image.DebianConfig{Ref: img.ref, Packages: img.pkgs,
			CacheDir: filepath.Join(home, ".cache", "attestmesh", "images"), Out: out, Log: t.Output()})
		require.NoError(t, err)
		s.c.ImportImage(t, out) //nolint:contextcheck // the harness bounds its commands by the test
	}
	s.c.ImportImage(t, node.GoImage(t, "github.com/attestmesh/attestmesh/e2e/k8s/probe", probeImage)) //nolint:contextcheck // the harness bounds its commands by the test
}

// installControlPlane installs charts/attestmesh with the image built here: the control plane
// runs as a pod, with its store on a PersistentVolume, patches its CA into its webhook
// configuration and follows the cluster. The cluster has no DNS: the Service gets a fixed
// ClusterIP that pods use instead of its name.
func (s *suite) installControlPlane(ctx context.Context, t *testing.T) {
	t.Helper()
	// The StatefulSet's claim binds to this volume (the node has no provisioner). The control
	// plane runs as uid 65532: every directory on the way must let it through (t.TempDir's do
	// not).
	data, err := os.MkdirTemp("", "attestmesh-e2e-store-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(data) })
	require.NoError(t, os.Chmod(data, 0o777)) //nolint:gosec // the store's volume, for uid 65532
	_, err = s.cs.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "attestmesh-e2e-store"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: data}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	s.cpIP = s.c.ServiceCIDR().Addr().Next().Next().Next().Next() // .4: kubernetes has .1
	s.cpRel = helmInstall(ctx, t, s.c, cpNamespace, "attestmesh", filepath.Join("..", "..", "charts", "attestmesh"), map[string]any{
		"image":    map[string]any{"repository": cpImageRepo, "tag": cpImageTag, "pullPolicy": "IfNotPresent"},
		"service":  map[string]any{"clusterIP": s.cpIP.String()},
		"logLevel": "debug",
		"store":    map[string]any{"key": map[string]any{"keepOnUninstall": false}, "anchor": map[string]any{"keepOnUninstall": false}},
	})
	objs := requireAllExist(t, s.c, s.cpRel)
	assert.Contains(t, objs, "StatefulSet/attestmesh")
	waitPodReady(ctx, t, s.cs, cpNamespace, "app.kubernetes.io/component=controlplane", "")

	// The control plane patched its CA into its webhook configuration: that is where users get it.
	const mwc = "attestmesh-system-attestmesh-injector"
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, err := s.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, mwc, metav1.GetOptions{})
		require.NoError(c, err)
		assert.NotEmpty(c, got.Webhooks[0].ClientConfig.CABundle)
		s.caPEM = got.Webhooks[0].ClientConfig.CABundle
	}, time.Minute, 500*time.Millisecond, "the caBundle of %s", mwc)
	// As docs/kubernetes.md says: attest the control plane (in simulation its MRENCLAVE is the
	// SHA-256 of the binary in its image) and pin the CA bundle that verify writes; it is the
	// one the control plane patched into its webhook configuration.
	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	mr, err := measureFile(s.bin)
	require.NoError(t, err)
	// (Retried while kube-proxy programs the new Service's ClusterIP.)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		verify := exec.CommandContext(ctx, s.bin, "controlplane", "verify", "--addr", netip.AddrPortFrom(s.cpIP, 8081).String(), //nolint:gosec // the binary this test built
			"--simulation", "--mrenclave", hex.EncodeToString(mr[:]), "--out", s.caFile)
		out, err := verify.CombinedOutput()
		require.NoError(c, err, "attestmesh controlplane verify: %s", out)
	}, time.Minute, time.Second, "attestmesh controlplane verify")
	pinned, err := os.ReadFile(s.caFile)
	require.NoError(t, err)
	require.Equal(t, string(s.caPEM), string(pinned), "verify pins the CA the control plane patched into its webhook configuration")
	pool, err := ca.PoolFromPEM(s.caPEM)
	require.NoError(t, err)
	id, err := mgmtapi.LoadOrCreateIdentity(filepath.Join(s.work, ".id"))
	require.NoError(t, err)
	s.mgmt, err = mgmtapi.NewClient(mgmtapi.ClientConfig{URL: s.mgmtURL(), Roots: pool, Identity: id})
	require.NoError(t, err)
}

func (s *suite) mgmtURL() string { return "https://" + netip.AddrPortFrom(s.cpIP, 8081).String() }

// applyAndInstall runs `attestmesh apply` on the example with its images and `helm install
// flaskredis target/helm`, and waits for every pod to be Running and Ready.
func (s *suite) applyAndInstall(ctx context.Context, t *testing.T) {
	t.Helper()
	chart := filepath.Join(s.work, "target", "helm")
	cmd := exec.CommandContext(ctx, s.bin, "apply", "-f", filepath.Join(s.work, "mesh.yaml"), //nolint:gosec // the binary this test built
		"--images", filepath.Join(s.work, "images"), "--controlplane", s.mgmtURL(), "--ca-file", s.caFile,
		"--identity-dir", filepath.Join(s.work, ".id"), "--chart-dir", chart)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "attestmesh apply: %s", out)
	t.Logf("attestmesh apply:\n%s", out)
	assert.Contains(t, string(out), "helm install flaskredis "+chart)

	s.appRel = helmInstall(ctx, t, s.c, appNamespace, appRelease, chart, nil)
	objs := requireAllExist(t, s.c, s.appRel)
	for _, o := range []string{"Deployment/flaskredis-redis", "Deployment/flaskredis-api", "Service/redis", "Service/api", "ConfigMap/flaskredis-api-fspf"} {
		assert.Contains(t, objs, o)
	}
	for _, svc := range []string{"redis", "api"} {
		p := waitPodReady(ctx, t, s.cs, appNamespace, "app.kubernetes.io/name="+svc, "")
		requireInjected(t, p, s.cpIP)
	}
	caPEM, err := s.mgmt.Public(ctx, "flask-redis/flask", "api_ca_cert")
	require.NoError(t, err)
	s.apiCA, err = ca.PoolFromPEM(caPEM)
	require.NoError(t, err)
}

// requireInjected checks what the injector made of a running pod.
func requireInjected(t *testing.T, p *corev1.Pod, cpIP netip.Addr) {
	t.Helper()
	assert.Equal(t, "true", p.Annotations[injector.AnnotationInjected])
	assert.Equal(t, "true", p.Labels[injector.LabelInjected])
	require.Len(t, p.Spec.InitContainers, 2)
	side := p.Spec.InitContainers[1]
	assert.Equal(t, injector.SidecarName, side.Name)
	assert.Contains(t, strings.Join(side.Command, " "), "--attest-addr "+netip.AddrPortFrom(cpIP, 18765).String())
	assert.Contains(t, strings.Join(side.Command, " "), "--inbound-ip $(ATTESTMESH_POD_IP)")
	app := p.Spec.Containers[0]
	assert.Equal(t, []string{injector.BinPath, "launch"}, app.Command[:2])
	require.NotNil(t, app.SecurityContext)
	assert.Contains(t, app.SecurityContext.Capabilities.Add, corev1.Capability("SYS_ADMIN"))
	for _, st := range slices.Concat(p.Status.InitContainerStatuses[1:], p.Status.ContainerStatuses) {
		assert.True(t, st.Ready, "container %s of %s is ready", st.Name, p.Name)
	}
}

// apiClient reaches the API over HTTPS, verifying it with the exported api_ca_cert and the
// DNS name api, whatever address it dials.
func (s *suite) apiClient(addr netip.AddrPort) *http.Client {
	require := func(a netip.Addr) bool { return s.c.PodCIDR().Contains(a) || s.c.ServiceCIDR().Contains(a) }
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.apiCA, ServerName: "api", MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			if !require(addr.Addr()) {
				return nil, fmt.Errorf("refusing to send traffic to %s: not on the cluster's networks", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr.String())
		},
	}}
}

// call sends one request to the API and returns the status and the body.
func call(ctx context.Context, hc *http.Client, method, path string, form url.Values) (int, string, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://api:4996"+path, body)
	if err != nil {
		return 0, "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b), err
}

func (s *suite) apiService(ctx context.Context, t *testing.T) netip.AddrPort {
	t.Helper()
	svc, err := s.cs.CoreV1().Services(appNamespace).Get(ctx, "api", metav1.GetOptions{})
	require.NoError(t, err)
	return netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 4996)
}

func patient(id string) url.Values {
	return url.Values{"fname": {"Ada"}, "lname": {"Lovelace"}, "address": {"12 St James Square"}, "city": {"London"},
		"iban": {"GB33BUKB20201555555555"}, "ssn": {"123-45-6789"}, "email": {"ada@example.org"}, "id": {id}}
}

// api: POST, GET and score through the API's Service, from the host, verified with the
// exported api_ca_cert and DNS name api; Flask reaches Redis only through the sidecars.
func (s *suite) api(t *testing.T) {
	ctx := t.Context()
	hc := s.apiClient(s.apiService(ctx, t))
	var code int
	var body string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		code, body, err = call(ctx, hc, http.MethodPost, "/patient/patient-1", patient("patient-1"))
		require.NoError(c, err)
		assert.Equal(c, http.StatusCreated, code, body)
	}, time.Minute, time.Second, "POST /patient/patient-1")
	var rec map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &rec))
	code, body, err := call(ctx, hc, http.MethodGet, "/patient/patient-1", nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code, body)
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	assert.Equal(t, rec, got)
	code, body, err = call(ctx, hc, http.MethodGet, "/score/patient-1", nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, fmt.Sprint(rec["score"]))
	code, _, err = call(ctx, hc, http.MethodPost, "/patient/patient-1", patient("patient-1"))
	require.NoError(t, err)
	assert.Equal(t, http.StatusForbidden, code, "the id is taken")
}

func (s *suite) podOf(ctx context.Context, t *testing.T, svc string) *corev1.Pod {
	t.Helper()
	return waitPodReady(ctx, t, s.cs, appNamespace, "app.kubernetes.io/name="+svc, "")
}

func podAddr(p *corev1.Pod, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(p.Status.PodIP), port)
}

// intruder: a pod that holds a real SVID of the mesh, for a service that no mesh route lets
// reach Redis, dials Redis's sidecar: the sidecar refuses it in the handshake and counts the
// denial. A plaintext connection from the host is refused too, and counted as a handshake
// failure.
func (s *suite) intruder(t *testing.T) {
	ctx := t.Context()
	redis := s.podOf(ctx, t, "redis")
	redisAddr := podAddr(redis, 6379)
	metricsURL := "http://" + podAddr(redis, 15000).String() + "/metrics"
	denials := `attestmesh_sidecar_authz_denials_total{listener="inbound|6379"}`
	before := e2etest.Scrape(ctx, t, metricsURL)

	svidPEM, keyPEM := s.intruderSVID(ctx, t)
	grace := int64(1)
	_, err := s.cs.CoreV1().Pods(appNamespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "intruder", Labels: map[string]string{"app": "intruder"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "probe", Image: probeImage, ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{{Name: "PROBE_CERT", Value: svidPEM}, {Name: "PROBE_KEY", Value: keyPEM}},
			}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	probe := waitPodRunning(ctx, t, s.cs, appNamespace, "intruder")
	answer := getEventually(ctx, t, s.c, "http://"+podAddr(probe, 8080).String()+"/tls?addr="+url.QueryEscape(redisAddr.String()))
	assert.Contains(t, answer, "refused: remote error: tls: bad certificate", "Redis's sidecar refuses the intruder's SPIFFE ID")
	waitMetric(ctx, t, metricsURL, denials, e2etest.Sample(before, denials)+1)
	require.NoError(t, s.cs.CoreV1().Pods(appNamespace).Delete(ctx, "intruder", metav1.DeleteOptions{}))

	plaintext := `attestmesh_sidecar_tls_handshake_failures_total{listener="inbound|6379",reason="plaintext"}`
	assert.NotContains(t, plaintextPing(ctx, redisAddr), "PONG", "a plaintext PING never reaches Redis")
	waitMetric(ctx, t, metricsURL, plaintext, e2etest.Sample(before, plaintext)+1)
}

// intruderSVID creates a session of its own whose service no mesh route lets reach Redis and
// attests as its sidecar through the control plane's attestation API and LAS: a real SVID from
// the mesh's CA, for the wrong SPIFFE ID. (It reaches the LAS from the host because the bridge
// CNI does not enforce the chart's NetworkPolicy; on a cluster that does, only injected pods
// could, and the intruder would be an injected pod of its own session.) It also makes one
// attestation that the control plane refuses, for the dashboard's refusal panels.
func (s *suite) intruderSVID(ctx context.Context, t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	mr := [32]byte{1, 2, 3}
	_, err := s.mgmt.Create(ctx, []byte("name: e2e\nversion: \"0.3\"\n"))
	require.NoError(t, err)
	_, err = s.mgmt.Create(ctx, fmt.Appendf(nil, `name: e2e/intruder
version: "0.3"
security:
  attestation:
    mode: simulation
    tolerate: [debug-mode, hyperthreading, outdated-tcb, software-hardening-needed]
services:
  - name: intruder
    mrenclaves: [%x]
    command: /probe
`, mr))
	require.NoError(t, err)
	bundle, err := ca.ParseCertsPEM(s.caPEM)
	require.NoError(t, err)
	client, err := attestapi.Dial(attestapi.ClientConfig{
		Addr: netip.AddrPortFrom(s.cpIP, 18765).String(), Bundle: bundle,
		Quotes: sim.Client{Addr: netip.AddrPortFrom(s.cpIP, 18766).String()},
	})
	require.NoError(t, err)
	defer client.Close()
	appKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, err = client.Attest(ctx, attestapi.Request{ConfigID: "e2e/intruder/intruder", Role: attestationpb.Role_ROLE_APP,
		Key: appKey, Evidence: attestapi.Evidence{MREnclave: [32]byte{9}}})
	require.Error(t, err, "a measurement the session does not allow is refused")
	app, err := client.Attest(ctx, attestapi.Request{ConfigID: "e2e/intruder/intruder", Role: attestationpb.Role_ROLE_APP,
		Key: appKey, Evidence: attestapi.Evidence{MREnclave: mr}})
	require.NoError(t, err)
	// The injected sidecars run the image's sidecar build, whose measurement the control
	// plane (the file beside its own in the image) accepts.
	sidecarMR, err := measureFile(controlplane.DefaultSidecarBinary(s.bin))
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	res, err := client.Attest(ctx, attestapi.Request{ConfigID: "e2e/intruder/intruder", Role: attestationpb.Role_ROLE_SIDECAR,
		Key: key, Evidence: attestapi.Evidence{MREnclave: sidecarMR}, SidecarGrant: app.SidecarGrant})
	require.NoError(t, err)
	require.Equal(t, "spiffe://attestmesh.local/e2e/intruder/intruder", res.ID.String())
	var chain []byte
	for _, c := range res.SVID {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return string(chain), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// svidSerial is the serial of the SVID a sidecar serves with (its admin /config_dump).
func svidSerial(ctx context.Context, t *testing.T, c *node.Cluster, p *corev1.Pod) string {
	t.Helper()
	body := getEventually(ctx, t, c, "http://"+podAddr(p, 15000).String()+"/config_dump")
	var dump struct {
		Node    map[string]string `json:"node"`
		Secrets struct {
			SVID struct {
				Serial string `json:"serial"`
			} `json:"svid"`
		} `json:"secrets"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &dump), body)
	require.NotEmpty(t, dump.Secrets.SVID.Serial, body)
	return dump.Node["id"] + " serial " + dump.Secrets.SVID.Serial
}

// scale: the API scaled to two replicas; both serve the record (through their own sidecars to
// Redis), and each sidecar holds an SVID of its own.
func (s *suite) scale(t *testing.T) {
	ctx := t.Context()
	_, err := s.cs.AppsV1().Deployments(appNamespace).Patch(ctx, "flaskredis-api", types.MergePatchType,
		[]byte(`{"spec":{"replicas":2}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	var pods []corev1.Pod
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		list, err := s.cs.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=api"})
		require.NoError(c, err)
		pods = pods[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				pods = append(pods, p)
			}
		}
		assert.Len(c, pods, 2)
	}, 3*time.Minute, time.Second, "two Ready API pods")
	serials := map[string]bool{}
	for i := range pods {
		p := &pods[i]
		serials[svidSerial(ctx, t, s.c, p)] = true
		hc := s.apiClient(podAddr(p, 4996))
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			code, body, err := call(ctx, hc, http.MethodGet, "/patient/patient-1", nil)
			require.NoError(c, err)
			assert.Equal(c, http.StatusOK, code, body)
		}, time.Minute, time.Second, "pod %s serves the record", p.Name)
	}
	assert.Len(t, serials, 2, "each replica's sidecar has its own SVID: %v", serials)
}

// replaceRedis deletes the Redis pod: its Deployment makes a new one with a new IP, the control
// plane gives the API's sidecars the new endpoint, and the API answers again without any manual
// step. Redis keeps its data in memory only (the session turns persistence off), so the record
// is gone: the API's 404 is an answer from the new Redis pod (the old one, while it terminates,
// still answers 200), and that is when the API counts as recovered; a new record goes through.
func (s *suite) replaceRedis(t *testing.T) {
	ctx := t.Context()
	old := s.podOf(ctx, t, "redis")
	hc := s.apiClient(s.apiService(ctx, t))
	deleted := time.Now()
	require.NoError(t, s.cs.CoreV1().Pods(appNamespace).Delete(ctx, old.Name, metav1.DeleteOptions{}))
	failures := map[string]int{}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		code, body, err := call(ctx, hc, http.MethodGet, "/patient/patient-1", nil)
		if err != nil {
			failures[err.Error()]++
		} else if code != http.StatusOK && code != http.StatusNotFound {
			failures[strconv.Itoa(code)]++
		}
		require.NoError(c, err)
		assert.Equal(c, http.StatusNotFound, code, "an answer from the new, empty Redis: %s", body)
	}, 3*time.Minute, 100*time.Millisecond, "the API answers GET from the new Redis pod")
	s.recovered = time.Since(deleted)
	t.Logf("the API answered GET from the new Redis pod %s after the old one was deleted (answers other than 200 and 404 meanwhile: %v)",
		s.recovered.Round(100*time.Millisecond), failures)
	next := s.podOf(ctx, t, "redis")
	assert.NotEqual(t, old.Status.PodIP, next.Status.PodIP, "the new pod has a new IP")
	for _, c := range next.Status.Conditions {
		if c.Type == corev1.PodReady {
			t.Logf("the new Redis pod %s was created %s and Ready %s after the delete (the API server's times, to the second)",
				next.Name, next.CreationTimestamp.Sub(deleted).Round(time.Second), c.LastTransitionTime.Sub(deleted).Round(time.Second))
		}
	}
	code, body, err := call(ctx, hc, http.MethodPost, "/patient/patient-2", patient("patient-2"))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, code, body)
	code, body, err = call(ctx, hc, http.MethodGet, "/patient/patient-2", nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code, body)
}

// isolation: the launcher mounts the injected files and the decrypted code on tmpfs in a mount
// namespace of its own. The app sees them; the app container's other processes, the pod's
// other containers and the node's disk do not.
func (s *suite) isolation(t *testing.T) {
	ctx := t.Context()
	api := s.podOf(ctx, t, "api")
	pids := map[string]int{}
	for _, st := range slices.Concat(api.Status.InitContainerStatuses, api.Status.ContainerStatuses) {
		if st.State.Running == nil {
			continue
		}
		pids[st.Name] = s.taskPID(ctx, t, strings.TrimPrefix(st.ContainerID, "containerd://"))
	}
	require.Contains(t, pids, injector.SidecarName)
	require.Contains(t, pids, "api")
	app := appProcess(t, pids["api"], "/attestmesh/fspf/api/rest_api.py")
	root := func(pid int, p string) string { return filepath.Join("/proc", strconv.Itoa(pid), "root", p) }

	// The app itself: its certificate, its key and its code in clear.
	key, err := os.ReadFile(root(app, "/tls/flask.key"))
	require.NoError(t, err, "the app sees its injected key")
	require.Contains(t, string(key), "PRIVATE KEY")
	code, err := os.ReadFile(root(app, "/attestmesh/fspf/api/rest_api.py"))
	require.NoError(t, err)
	require.Contains(t, string(code), "def create_patient", "the app sees its decrypted code")
	var st syscall.Statfs_t
	require.NoError(t, syscall.Statfs(root(app, "/tls"), &st))
	assert.Equal(t, int64(0x01021994), st.Type, "the injected files are on tmpfs") // TMPFS_MAGIC

	// Everyone else in the pod: the app container's own namespace (where kubectl exec lands) and
	// the sidecar see an empty in-memory volume, or nothing, and the code encrypted.
	_, err = os.Stat(root(pids["api"], "/tls/flask.key"))
	require.ErrorIs(t, err, fs.ErrNotExist, "the app container's namespace does not see the key")
	enc, err := os.ReadFile(root(pids["api"], "/attestmesh/fspf/api/rest_api.py"))
	require.NoError(t, err)
	assert.NotContains(t, string(enc), "def create_patient", "outside the app's namespace the code is ciphertext")
	_, err = os.Stat(root(pids[injector.SidecarName], "/tls/flask.key"))
	require.ErrorIs(t, err, fs.ErrNotExist, "the sidecar container does not see the key")

	// The node's disk: neither the key nor the clear code in any file the cluster wrote since the
	// pod started (tmpfs mounts are memory, not disk, and skipped).
	keyLine := pemBody(string(key))
	since := api.Status.StartTime.Add(-time.Minute)
	for _, dir := range []string{s.c.Root(), "/var/lib/kubelet", "/var/lib/containerd", "/run/containerd"} {
		found := grepDisk(t, dir, since, keyLine, "def create_patient(patient_id)")
		assert.Empty(t, found, "secrets on the node's disk under %s", dir)
	}
}

// taskPID is the host PID of a container's task (ctr tasks ls).
func (s *suite) taskPID(ctx context.Context, t *testing.T, id string) int {
	t.Helper()
	out, err := exec.CommandContext(ctx, "ctr", "--address", s.c.ContainerdAddress(), "-n", "k8s.io", "tasks", "ls").Output()
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			require.NoError(t, err)
			return pid
		}
	}
	require.FailNow(t, "no task for container "+id, "%s", out)
	return 0
}

// appProcess finds the host PID of the launcher's child (the app) whose command line contains
// arg.
func appProcess(t *testing.T, launcher int, arg string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), arg) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: the fields after the last ')'.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(launcher) {
			return pid
		}
	}
	require.FailNow(t, fmt.Sprintf("no child of the launcher (pid %d) runs %s", launcher, arg))
	return 0
}

func pemBody(p string) string {
	lines := strings.Split(strings.TrimSpace(p), "\n")
	require := len(lines) > 2
	if !require {
		return p
	}
	return lines[1]
}

// grepDisk lists the regular files under dir, not on tmpfs, modified after since, that contain
// any of needles.
func grepDisk(t *testing.T, dir string, since time.Time, needles ...string) []string {
	t.Helper()
	var found []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil //nolint:nilerr // a file that went away
		}
		if d.IsDir() {
			var st syscall.Statfs_t
			if syscall.Statfs(p, &st) == nil && (st.Type == 0x01021994 || st.Type == 0x9fa0) { // tmpfs, procfs
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.ModTime().Before(since) || fi.Size() > 64<<20 {
			return nil //nolint:nilerr // gone, old or too big to be ours
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil //nolint:nilerr // gone
		}
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				found = append(found, p)
			}
		}
		return nil
	})
	return found
}

// refusals: the injector still refuses what it cannot inject, and leaves other pods alone.
func (s *suite) refusals(t *testing.T) {
	ctx := t.Context()
	for _, tt := range []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"no command", &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "nocommand", Annotations: map[string]string{injector.AnnotationConfigID: "flask-redis/redis/redis"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "redis", Image: "localhost/flaskredis/redis:1"}}},
		}, `container "redis" has no command`},
		{"unknown config ID", &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "unknown", Annotations: map[string]string{injector.AnnotationConfigID: "nosuch/session/svc"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "a:1", Command: []string{"/a"}}}},
		}, `config ID "nosuch/session/svc"`},
		{"the injector's label", &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "label", Labels: map[string]string{injector.LabelInjected: "true"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "a:1", Command: []string{"/a"}}}},
		}, "only the injector sets it"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.cs.CoreV1().Pods(appNamespace).Create(ctx, tt.pod, metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), `admission webhook "inject.attestmesh.io" denied the request`)
			assert.Contains(t, err.Error(), tt.want)
			_, err = s.cs.CoreV1().Pods(appNamespace).Get(ctx, tt.pod.Name, metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "a refused pod is not stored")
		})
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain", Annotations: map[string]string{"team": "records"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr(false),
			Containers:                   []corev1.Container{{Name: "probe", Image: probeImage, ImagePullPolicy: corev1.PullNever}},
		},
	}
	got, err := s.cs.CoreV1().Pods(appNamespace).Create(ctx, p, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"team": "records"}, got.Annotations, "not opted in: unchanged")
	assert.Empty(t, got.Spec.InitContainers)
	assert.Empty(t, got.Spec.Volumes)
	// The LAS NetworkPolicy trusts the injector's label; the webhook sees pods only at
	// creation, so the chart's ValidatingAdmissionPolicy refuses adding it later.
	patch := []byte(`{"metadata":{"labels":{"` + injector.LabelInjected + `":"true"}}}`)
	_, err = s.cs.CoreV1().Pods(appNamespace).Patch(ctx, "plain", types.MergePatchType, patch, metav1.PatchOptions{})
	require.Error(t, err, "a label added after creation is refused")
	assert.Contains(t, err.Error(), "the label attestmesh.io/injected is set by the attestmesh injector when a pod is created and cannot be changed")
	other := []byte(`{"metadata":{"labels":{"team":"records"}}}`)
	_, err = s.cs.CoreV1().Pods(appNamespace).Patch(ctx, "plain", types.MergePatchType, other, metav1.PatchOptions{})
	require.NoError(t, err, "other labels change as before")
	require.NoError(t, s.cs.CoreV1().Pods(appNamespace).Delete(ctx, "plain", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}))
}

// leastPrivilege: the control plane's ServiceAccount reads pods and EndpointSlices and patches
// its own webhook configuration and anchor Secret; it reads no Secret and changes no pod.
func (s *suite) leastPrivilege(t *testing.T) {
	ctx := t.Context()
	tr, err := s.cs.CoreV1().ServiceAccounts(cpNamespace).CreateToken(ctx, "attestmesh", &authTokenRequest, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg := s.c.RESTConfig()
	cfg.BearerToken, cfg.BearerTokenFile, cfg.CertData, cfg.KeyData, cfg.CertFile, cfg.KeyFile = tr.Status.Token, "", nil, nil, "", ""
	sa, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	_, err = sa.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err, "it follows pods")
	_, err = sa.DiscoveryV1().EndpointSlices(appNamespace).List(ctx, metav1.ListOptions{})
	require.NoError(t, err, "and EndpointSlices")
	_, err = sa.CoreV1().Secrets(cpNamespace).List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "no secrets (%v)", err)
	_, err = sa.CoreV1().Secrets(cpNamespace).Get(ctx, "attestmesh-store-key", metav1.GetOptions{})
	assert.True(t, apierrors.IsForbidden(err), "not even its store key (%v)", err)
	err = sa.CoreV1().Pods(appNamespace).Delete(ctx, "nosuchpod", metav1.DeleteOptions{})
	assert.True(t, apierrors.IsForbidden(err), "changes no pod (%v)", err)
	_, err = sa.CoreV1().Services(appNamespace).List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "no Services: it needs none (%v)", err)
	_, err = sa.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "only its own webhook configuration (%v)", err)
}

// uninstall removes both releases, then what helm keeps on purpose (the claim and the volume),
// and checks that nothing of theirs is left in the API; the harness checks the host.
func (s *suite) uninstall(t *testing.T) {
	ctx := t.Context()
	if s.prom != nil {
		s.prom.stop(t)
	}
	helmUninstall(t, s.c, appNamespace, appRelease, s.appRel)
	helmUninstall(t, s.c, cpNamespace, "attestmesh", s.cpRel)
	require.NoError(t, s.cs.CoreV1().PersistentVolumeClaims(cpNamespace).Delete(ctx, "data-attestmesh-0", metav1.DeleteOptions{}))
	require.NoError(t, s.cs.CoreV1().PersistentVolumes().Delete(ctx, "attestmesh-e2e-store", metav1.DeleteOptions{}))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, ns := range []string{appNamespace, cpNamespace} {
			pods, err := s.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			require.NoError(c, err)
			assert.Empty(c, pods.Items, "pods in %s", ns)
		}
	}, 2*time.Minute, time.Second, "every pod gone after helm uninstall")
}

// --- helpers ---

// dumpLogs logs the tail of every container's log (and of its previous run) in the test's
// namespaces.
func (s *suite) dumpLogs(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
	defer cancel()
	tail := int64(60)
	for _, ns := range []string{cpNamespace, appNamespace} {
		pods, err := s.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		for _, p := range pods.Items {
			for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
				for _, previous := range []bool{false, true} {
					b, err := s.cs.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, Previous: previous, TailLines: &tail}).DoRaw(ctx)
					if err == nil && len(b) > 0 {
						t.Logf("--- %s/%s %s (previous %v) ---\n%s", ns, p.Name, c.Name, previous, b)
					}
				}
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

func helmConfig(t *testing.T, c *node.Cluster, namespace string) *action.Configuration {
	t.Helper()
	kc := c.Kubeconfig()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace = &kc, &namespace
	cfg := new(action.Configuration)
	require.NoError(t, cfg.Init(flags, namespace, "secret", func(format string, v ...any) { t.Logf("helm: "+format, v...) }))
	return cfg
}

func helmInstall(ctx context.Context, t *testing.T, c *node.Cluster, namespace, name, chartDir string, values map[string]any) *release.Release {
	t.Helper()
	ch, err := loader.Load(chartDir)
	require.NoError(t, err)
	install := action.NewInstall(helmConfig(t, c, namespace))
	install.ReleaseName, install.Namespace, install.CreateNamespace = name, namespace, true
	install.Timeout = 2 * time.Minute
	rel, err := install.RunWithContext(ctx, ch, values)
	require.NoError(t, err, "helm install %s", chartDir)
	require.Equal(t, release.StatusDeployed, rel.Info.Status)
	return rel
}

// requireAllExist checks that every object of the release's manifest is in the API server and
// returns them as Kind/name.
func requireAllExist(t *testing.T, c *node.Cluster, rel *release.Release) []string {
	t.Helper()
	cfg := helmConfig(t, c, rel.Namespace)
	resources, err := cfg.KubeClient.Build(bytes.NewBufferString(rel.Manifest), false)
	require.NoError(t, err)
	require.NotEmpty(t, resources)
	var names []string
	require.NoError(t, resources.Visit(func(info *kresource.Info, err error) error {
		if err != nil {
			return err
		}
		names = append(names, info.Mapping.GroupVersionKind.Kind+"/"+info.Name)
		return info.Get()
	}))
	slices.Sort(names)
	t.Logf("release %s: %d objects accepted: %s", rel.Name, len(names), strings.Join(names, ", "))
	return names
}

func helmUninstall(t *testing.T, c *node.Cluster, namespace, name string, rel *release.Release) {
	t.Helper()
	cfg := helmConfig(t, c, namespace)
	un := action.NewUninstall(cfg)
	un.Wait, un.Timeout = true, 2*time.Minute
	resp, err := un.Run(name)
	require.NoError(t, err)
	assert.Empty(t, resp.Info, "nothing kept")
	resources, err := cfg.KubeClient.Build(bytes.NewBufferString(rel.Manifest), false)
	require.NoError(t, err)
	require.NoError(t, resources.Visit(func(info *kresource.Info, err error) error {
		if err != nil {
			return err
		}
		err = info.Get()
		assert.True(t, apierrors.IsNotFound(err), "%s/%s still there after helm uninstall (%v)", info.Mapping.GroupVersionKind.Kind, info.Name, err)
		return nil
	}))
}

// waitPodRunning waits for the named pod to run with an IP.
func waitPodRunning(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		p, err = cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		require.NoError(c, err)
		assert.Equal(c, corev1.PodRunning, p.Status.Phase)
		assert.NotEmpty(c, p.Status.PodIP)
	}, 2*time.Minute, 200*time.Millisecond, "pod %s/%s running", ns, name)
	return p
}

func waitMetric(ctx context.Context, t *testing.T, u, series string, want float64) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.GreaterOrEqual(c, e2etest.Sample(e2etest.Scrape(ctx, c, u), series), want)
	}, 30*time.Second, 200*time.Millisecond, "%s at %s reaches %v", series, u, want)
}
