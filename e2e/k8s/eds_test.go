//go:build e2e_k8s

package k8s_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/attestmesh/attestmesh/e2e/e2etest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// eds: Redis scaled to two replicas and back to one, while an API pod keeps its pooled
// connection to the first Redis pod through its sidecar. The control plane gives the API's
// sidecar the new pod as an endpoint within seconds, and takes it out again when it goes; the
// connection to the pod that stays is never dropped: every GET through that API pod still
// finds the record (the new Redis pod has no data, so an answer from it would be a 404) and the
// sidecar's outbound connection counter does not move.
func (s *suite) eds(t *testing.T) {
	ctx := t.Context()
	api := s.podOf(ctx, t, "api")
	first := s.podOf(ctx, t, "redis")
	hc := s.apiClient(podAddr(api, 4996))
	metricsURL := "http://" + podAddr(api, 15000).String() + "/metrics"
	outbound := map[string]string{"listener": "outbound|flaskredis.redis|6379"} // the mesh flaskredis's service redis

	getRecord := func(n int) {
		t.Helper()
		for range n {
			code, body, err := call(ctx, hc, http.MethodGet, "/patient/patient-1", nil)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code, "the record, from the Redis pod that stays: %s", body)
		}
	}
	getRecord(3) // the API's pool holds its connection now
	opened := sampleLabels(e2etest.Scrape(ctx, t, metricsURL), "attestmesh_sidecar_connections_total", outbound)
	require.Positive(t, opened, "the API's sidecar has opened connections to Redis")

	scaleRedis := func(n int) {
		t.Helper()
		_, err := s.cs.AppsV1().Deployments(appNamespace).Patch(ctx, "flaskredis-redis", types.MergePatchType,
			[]byte(`{"spec":{"replicas":`+strconv.Itoa(n)+`}}`), metav1.PatchOptions{})
		require.NoError(t, err)
	}

	scaleRedis(2)
	second := waitPodReadyFast(ctx, t, s, "app.kubernetes.io/name=redis", first.Name)
	readyAt := time.Now()
	added := waitEndpoints(ctx, t, s, api, func(ips []string) bool { return slices.Contains(ips, second.Status.PodIP) })
	addLatency := time.Since(readyAt)
	assert.Contains(t, added, first.Status.PodIP, "the pod that stays is still an endpoint")
	getRecord(10)

	scaleRedis(1)
	goneAt := time.Now()
	remaining := waitEndpoints(ctx, t, s, api, func(ips []string) bool { return !slices.Contains(ips, second.Status.PodIP) })
	removeLatency := time.Since(goneAt)
	assert.Equal(t, []string{first.Status.PodIP}, remaining, "the first Redis pod stays")
	getRecord(10)
	assert.InDelta(t, opened, sampleLabels(e2etest.Scrape(ctx, t, metricsURL), "attestmesh_sidecar_connections_total", outbound), 0,
		"no new connection to Redis: the pooled one was never dropped")
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		p, err := s.cs.CoreV1().Pods(appNamespace).Get(ctx, second.Name, metav1.GetOptions{})
		if err == nil {
			assert.NotNil(c, p.DeletionTimestamp, "the second Redis pod goes")
		}
	}, time.Minute, 200*time.Millisecond)
	t.Logf("EDS: a new Redis pod was an endpoint of the API's sidecar %s after it was Ready; a removed one was gone %s after the scale-down; the pooled connection to the pod that stays carried %d+10 GETs meanwhile",
		addLatency.Round(10*time.Millisecond), removeLatency.Round(10*time.Millisecond), 10)
	s.edsAdd, s.edsRemove = addLatency, removeLatency
	assert.Less(t, addLatency, 10*time.Second, "EDS follows a new pod within seconds")
	assert.Less(t, removeLatency, 10*time.Second, "EDS follows a removed pod within seconds")
}

// waitPodReadyFast is waitPodReady polling every 50 ms, so that the time it returns at is
// close to the pod's readiness.
func waitPodReadyFast(ctx context.Context, t *testing.T, s *suite, selector, notName string) *corev1.Pod {
	t.Helper()
	var ready *corev1.Pod
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		list, err := s.cs.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		require.NoError(c, err)
		for i := range list.Items {
			p := &list.Items[i]
			if p.Name != notName && p.DeletionTimestamp == nil && podReady(p) && p.Status.PodIP != "" {
				ready = p
				return
			}
		}
		assert.Fail(c, "no other Ready pod yet")
	}, 2*time.Minute, 50*time.Millisecond, "a second Ready pod %s", selector)
	return ready
}

// waitEndpoints polls the API pod's sidecar (its admin /config_dump) every 50 ms until the
// endpoints of its Redis cluster satisfy ok, and returns them.
func waitEndpoints(ctx context.Context, t *testing.T, s *suite, api *corev1.Pod, ok func([]string) bool) []string {
	t.Helper()
	u := "http://" + podAddr(api, 15000).String() + "/config_dump"
	var ips []string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		body, err := e2etest.Get(ctx, u)
		require.NoError(c, err)
		ips = clusterEndpoints(c, body, "flaskredis.redis")
		assert.True(c, ok(ips), "endpoints of the redis cluster: %v", ips)
	}, time.Minute, 50*time.Millisecond, "the API's sidecar follows the Redis pods")
	return ips
}

// clusterEndpoints lists the endpoint addresses of the clusters whose name names service, from
// a sidecar's config dump (Envoy's Cluster JSON, proto field names).
func clusterEndpoints(t require.TestingT, dump, service string) []string {
	var d struct {
		Clusters []struct {
			Name   string `json:"name"`
			Config struct {
				LoadAssignment struct {
					Endpoints []struct {
						LBEndpoints []struct {
							Endpoint struct {
								Address struct {
									SocketAddress struct {
										Address string `json:"address"`
									} `json:"socket_address"`
								} `json:"address"`
							} `json:"endpoint"`
						} `json:"lb_endpoints"`
					} `json:"endpoints"`
				} `json:"load_assignment"`
			} `json:"config"`
		} `json:"clusters"`
	}
	require.NoError(t, json.Unmarshal([]byte(dump), &d))
	var ips []string
	for _, c := range d.Clusters {
		if !strings.Contains(c.Name, "|"+service+"|") {
			continue
		}
		for _, e := range c.Config.LoadAssignment.Endpoints {
			for _, lb := range e.LBEndpoints {
				if a, err := netip.ParseAddr(lb.Endpoint.Address.SocketAddress.Address); err == nil {
					ips = append(ips, a.String())
				}
			}
		}
	}
	slices.Sort(ips)
	return ips
}

// sampleLabels sums the samples of metric whose labels include every one of labels.
func sampleLabels(text, metric string, labels map[string]string) float64 {
	var sum float64
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, metric+"{")
		if !ok {
			continue
		}
		end := strings.LastIndexByte(rest, '}')
		if end < 0 {
			continue
		}
		match := true
		for k, v := range labels {
			match = match && strings.Contains(rest[:end], k+`="`+v+`"`)
		}
		if !match {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest[end+1:]), 64); err == nil {
			sum += v
		}
	}
	return sum
}
