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
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/attestmesh/attestmesh/e2e/k8s/node"
)

const echoImage = "localhost/attestmesh/echo:e2e"

// TestNode runs a real single-node cluster (node.Start) and checks that pods run and are
// reachable: a Deployment of a static Go HTTP server and its Service, reached from the host at
// the pod IP and the ClusterIP; from the pod, the host at NodeIP, the Service itself (hairpin)
// and the API server through the kubernetes Service; an image that was not imported fails to
// pull at a closed loopback port; the EndpointSlice follows the pod when it is replaced.
// Teardown and its leak check (registered by Start) must pass.
func TestNode(t *testing.T) {
	began := time.Now()
	c := node.Start(t, node.Options{})
	t.Logf("cluster up in %s: %s", time.Since(began).Round(time.Millisecond), c.Timings())
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cs := c.Client()

	c.ImportImage(t, node.GoImage(t, "github.com/attestmesh/attestmesh/e2e/k8s/node/echo", echoImage))

	// A service on the host, at NodeIP (the pods' gateway), for the pod to reach.
	hostLn, err := net.Listen("tcp", netip.AddrPortFrom(c.NodeIP(), 0).String())
	require.NoError(t, err)
	hostSrv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "host-ok "+r.RemoteAddr)
	})}
	go func() { _ = hostSrv.Serve(hostLn) }()
	t.Cleanup(func() { _ = hostSrv.Close() })

	const ns = "default"
	created := time.Now()
	_, err = cs.AppsV1().Deployments(ns).Create(ctx, echoDeployment(), metav1.CreateOptions{})
	require.NoError(t, err)
	svc, err := cs.CoreV1().Services(ns).Create(ctx, echoService(), metav1.CreateOptions{})
	require.NoError(t, err)
	pod := waitPodReady(ctx, t, cs, ns, "app=echo", "")
	t.Logf("pod %s Ready %s after the Deployment was created", pod.Name, time.Since(created).Round(time.Millisecond))
	podIP := netip.MustParseAddr(pod.Status.PodIP)
	require.True(t, c.PodCIDR().Contains(podIP), "pod IP %s outside the pod CIDR %s", podIP, c.PodCIDR())
	clusterIP := netip.MustParseAddr(svc.Spec.ClusterIP)
	require.True(t, c.ServiceCIDR().Contains(clusterIP), "ClusterIP %s outside the service CIDR %s", clusterIP, c.ServiceCIDR())
	podURL := "http://" + netip.AddrPortFrom(podIP, 8080).String()
	svcURL := "http://" + netip.AddrPortFrom(clusterIP, 80).String()

	// From the host: the pod IP, then the ClusterIP (kube-proxy's rules).
	var who struct{ Hostname, PodIP, Remote string }
	require.NoError(t, json.Unmarshal([]byte(getEventually(ctx, t, c, podURL+"/")), &who))
	assert.Equal(t, pod.Name, who.Hostname)
	assert.Equal(t, podIP.String(), who.PodIP)
	require.NoError(t, json.Unmarshal([]byte(getEventually(ctx, t, c, svcURL+"/")), &who))
	assert.Equal(t, pod.Name, who.Hostname, "the ClusterIP reaches the pod")

	// The EndpointSlice lists the pod, ready.
	waitEndpointSlice(ctx, t, cs, ns, "echo", podIP, netip.Addr{})

	// From the pod: the host at NodeIP, the Service's ClusterIP (back to itself: hairpin), and
	// the API server through the kubernetes Service with the pod's ServiceAccount.
	hostURL := "http://" + hostLn.Addr().String() + "/"
	assert.Equal(t, "200\nhost-ok "+podIP.String(), strings.Split(getEventually(ctx, t, c, podURL+"/get?url="+url.QueryEscape(hostURL)), ":")[0])
	assert.Equal(t, "200\nok\n", getEventually(ctx, t, c, podURL+"/get?url="+url.QueryEscape(svcURL+"/healthz")))
	version := getEventually(ctx, t, c, podURL+"/kube")
	assert.True(t, strings.HasPrefix(version, "200\n"), version)
	assert.Contains(t, version, `"gitVersion": "`+node.Version+`"`)

	// The API server reaches the kubelet (logs, exec and port-forward go that way).
	_, err = cs.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	require.NoError(t, err, "pod logs through the API server")

	// An image that was not imported is not pulled from anywhere but a closed loopback port.
	// (A localhost/ reference: should that ever regress, the pull still stays on loopback.)
	requirePullStaysLocal(ctx, t, cs, ns)

	// Replace the pod: the Deployment's new pod gets a new IP and the EndpointSlice follows.
	replaced := time.Now()
	require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}))
	next := waitPodReady(ctx, t, cs, ns, "app=echo", pod.Name)
	t.Logf("replacement pod %s Ready %s after the delete", next.Name, time.Since(replaced).Round(time.Millisecond))
	nextIP := netip.MustParseAddr(next.Status.PodIP)
	require.NotEqual(t, podIP, nextIP, "the new pod has a new IP")
	require.True(t, c.PodCIDR().Contains(nextIP))
	waitEndpointSlice(ctx, t, cs, ns, "echo", nextIP, podIP)
	require.NoError(t, json.Unmarshal([]byte(getEventually(ctx, t, c, svcURL+"/")), &who))
	assert.Equal(t, next.Name, who.Hostname, "the ClusterIP follows the new pod")
}

// requirePullStaysLocal creates a pod whose image was never imported and waits for the
// kubelet's pull to fail at 127.0.0.1:1, where the node's containerd sends every pull.
func requirePullStaysLocal(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "not-imported"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "x", Image: "localhost/attestmesh/not-imported:e2e", ImagePullPolicy: corev1.PullIfNotPresent,
		}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var messages []string
	for {
		events, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod.Name})
		if err == nil {
			messages = messages[:0]
			for _, e := range events.Items {
				messages = append(messages, e.Message)
				if e.Reason == "Failed" && strings.Contains(e.Message, "127.0.0.1:1") {
					require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}))
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			require.FailNow(t, "the pull of an image that was not imported did not fail at 127.0.0.1:1", "events: %q", messages)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func echoDeployment() *appsv1.Deployment {
	labels := map[string]string{"app": "echo"}
	one, grace := int32(1), int64(5)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name:            "echo",
						Image:           echoImage,
						ImagePullPolicy: corev1.PullNever,
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						Env: []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"},
						}}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

func echoService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
}

// waitPodReady waits for a Running, Ready pod that matches selector and is not named
// notName; on timeout it fails with the pods' status and events.
func waitPodReady(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, selector, notName string) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last string
	for {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil {
			last = ""
			for i := range pods.Items {
				p := &pods.Items[i]
				if p.Name == notName || p.DeletionTimestamp != nil {
					continue
				}
				if p.Status.Phase == corev1.PodRunning && podReady(p) && p.Status.PodIP != "" {
					return p
				}
				last += fmt.Sprintf("%s: %s %+v; ", p.Name, p.Status.Phase, p.Status.ContainerStatuses)
			}
		}
		select {
		case <-ctx.Done():
			events, _ := cs.CoreV1().Events(ns).List(context.WithoutCancel(ctx), metav1.ListOptions{})
			var ev []string
			if events != nil {
				for _, e := range events.Items {
					ev = append(ev, fmt.Sprintf("%s %s: %s", e.InvolvedObject.Name, e.Reason, e.Message))
				}
			}
			require.FailNow(t, "no Ready pod "+selector, "pods: %s\nevents:\n%s", last, strings.Join(ev, "\n"))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitEndpointSlice waits until the Service's EndpointSlices list want as ready (and gone is
// not listed).
func waitEndpointSlice(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, service string, want, gone netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var seen []string
	for {
		list, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
		if err == nil {
			seen = seen[:0]
			found, stale := false, false
			for _, s := range list.Items {
				for _, e := range s.Endpoints {
					ready := e.Conditions.Ready != nil && *e.Conditions.Ready
					for _, a := range e.Addresses {
						seen = append(seen, fmt.Sprintf("%s ready=%v", a, ready))
						found = found || (a == want.String() && ready)
						stale = stale || (gone.IsValid() && a == gone.String())
					}
				}
			}
			if found && !stale {
				return
			}
		}
		select {
		case <-ctx.Done():
			require.FailNow(t, "EndpointSlice of "+service, "want %s ready (and not %s), have %v", want, gone, seen)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// getEventually GETs a URL on the cluster's networks (a pod IP or a ClusterIP; never any other
// address) until it answers 200 (kube-proxy may take a moment to program a new Service), and
// returns the body.
func getEventually(ctx context.Context, t *testing.T, c *node.Cluster, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	ap, err := netip.ParseAddrPort(u.Host)
	require.NoError(t, err)
	require.True(t, c.PodCIDR().Contains(ap.Addr()) || c.ServiceCIDR().Contains(ap.Addr()),
		"refusing to send traffic to %s: not on the cluster's networks", ap.Addr())
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
		require.NoError(t, err)
		resp, err := client.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && rerr == nil {
				return string(body)
			}
			err = errors.Join(fmt.Errorf("%s: %s", resp.Status, body), rerr)
		}
		last = err
		select {
		case <-ctx.Done():
			require.FailNow(t, "GET "+rawURL, "%v\n--- kube-proxy log (tail) ---\n%s", last, c.LogTail("kube-proxy"))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
