package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/proxy/ads"
	sidecarmetrics "github.com/attestmesh/attestmesh/proxy/metrics"
	sidecar "github.com/attestmesh/attestmesh/proxy/resource"
)

// rejectOneListener is a sidecar's Handler that rejects a listeners response of one listener.
type rejectOneListener struct {
	mu        sync.Mutex
	listeners int // listeners responses applied or rejected
}

func (h *rejectOneListener) Apply(typeURL string, res []*anypb.Any) error {
	if typeURL != resource.ListenerType {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.listeners++
	if len(res) == 1 {
		return assert.AnError
	}
	return nil
}

func (h *rejectOneListener) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.listeners
}

// Our sidecar's client against the control plane, which answers a NACK with the version it
// rejected again (as go-control-plane's snapshot cache does: what made the sidecar reject it may
// have been transient, a port in use): the sidecar tries the rejected version again, holds back
// its repeated NACKs with backoff instead of spinning, and converges when the next version
// comes.
func TestADSSidecarRetriesARejectedVersionWithBackoff(t *testing.T) {
	e := startADS(t)
	m := sidecarmetrics.New()
	h := &rejectOneListener{}
	client, err := ads.New(ads.Config{
		Addr: e.addr,
		Node: &ads.Node{ID: flaskID.String()},
		TLS: &tls.Config{RootCAs: e.roots, ServerName: "xds.attestmesh.local", MinVersion: tls.VersionTLS13,
			Certificates: []tls.Certificate{e.certs["flask"]}},
		Subscriptions: []ads.Subscription{
			{TypeURL: resource.ClusterType},
			{TypeURL: resource.ListenerType},
			{TypeURL: resource.SecretType, Names: []string{sidecar.SecretSVID, sidecar.SecretTrustBundle}},
		},
		Handler:        h,
		Logger:         slog.New(slog.DiscardHandler),
		Metrics:        m,
		InitialBackoff: 500 * time.Millisecond,
		MaxBackoff:     30 * time.Second,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- client.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	require.Eventually(t, func() bool {
		return value(t, e.srv.metrics.nacks.WithLabelValues(resource.ListenerType)) >= 1 &&
			len(client.Status().Versions) == 2 // clusters and secrets
	}, 5*time.Second, 10*time.Millisecond)
	first := time.Now()
	require.Eventually(t, func() bool { return h.count() >= 2 }, 5*time.Second, 10*time.Millisecond,
		"the rejected listeners were not tried again")
	// The first NACK goes at once and is answered at once; the sidecar holds back the repeated
	// NACK 0.5 s, the next 1 s: within a second of the first NACK, the version is tried at most
	// three times (a slow machine only makes it fewer).
	time.Sleep(time.Until(first.Add(time.Second)))
	assert.LessOrEqual(t, h.count(), 3, "the sidecar and the control plane spin on a rejected version")

	require.NoError(t, e.srv.Update(withPorts(1), []*x509.Certificate{e.ca.cert}, e.svids()))
	want := e.srv.current(flaskID).wireOf(resource.ListenerType).version
	require.Eventually(t, func() bool { return client.Status().Versions[resource.ListenerType] == want },
		5*time.Second, 10*time.Millisecond, "the sidecar did not get the next listeners")
}
