package endpoints

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pod(ns, name, configID string, injected bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}, Labels: map[string]string{}}}
	if configID != "" {
		p.Annotations[annotationConfig] = configID
	}
	if injected {
		p.Labels[labelInjected] = "true"
	}
	return p
}

func endpoint(pod, ip string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: pod},
	}
}

func TestJoin(t *testing.T) {
	terminating := pod("app", "redis-2", "app/redis/redis", true)
	terminating.DeletionTimestamp = &metav1.Time{}
	pods := []*corev1.Pod{
		pod("app", "redis-1", "app/redis/redis", true),
		terminating,
		pod("app", "api-1", "app/flask/api", true),
		pod("app", "api-2", "app/flask/api", true),
		pod("app", "plain", "", true),                  // injected label without a config ID
		pod("app", "claims", "app/redis/redis", false), // not injected: its claim is not taken
		pod("other", "redis-1", "other/redis/redis", true),
	}
	eps := []*discoveryv1.EndpointSlice{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "redis-abc"}, Endpoints: []discoveryv1.Endpoint{
			endpoint("redis-1", "10.0.0.5", true),
			endpoint("redis-2", "10.0.0.6", true), // its pod is being deleted
			endpoint("claims", "10.0.0.7", true),
			endpoint("plain", "10.0.0.8", true),
			{Addresses: []string{"10.0.0.9"}, Conditions: discoveryv1.EndpointConditions{}}, // no target, no readiness
		}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "api-abc"}, Endpoints: []discoveryv1.Endpoint{
			endpoint("api-2", "10.0.0.12", true),
			endpoint("api-1", "10.0.0.11", true),
			endpoint("api-3", "10.0.0.13", true), // no such pod (yet)
		}},
		// A second Service over the same pod: listed once.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "api-public"}, Endpoints: []discoveryv1.Endpoint{
			endpoint("api-1", "10.0.0.11", true),
			endpoint("api-2", "10.0.0.12", false), // not ready behind this one: the other says ready
		}},
		// Same pod name in another namespace.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "redis-x"}, Endpoints: []discoveryv1.Endpoint{
			endpoint("redis-1", "10.0.1.5", false),
		}},
	}
	assert.Equal(t, map[string][]netip.Addr{
		"app/redis/redis": {netip.MustParseAddr("10.0.0.5")},
		"app/flask/api":   {netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12")},
	}, Join(pods, eps))
	assert.Empty(t, Join(nil, eps))
}
