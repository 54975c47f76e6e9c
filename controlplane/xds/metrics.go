package xds

import (
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the xDS server's Prometheus metrics (their names are part of the product's interface: docs/operations.md). Label values are
// bounded: type URLs outside the known xDS types count as "other".
type metrics struct {
	connected prometheus.Gauge
	pushes    *prometheus.CounterVec
	latency   prometheus.Histogram
	nacks     *prometheus.CounterVec
	refused   *prometheus.CounterVec
}

// Reasons a stream is refused, the values of attestmesh_xds_refused_streams_total's reason label.
const (
	refusedNoSVID         = "no_spiffe_id"
	refusedNodeIDMismatch = "node_id_mismatch"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "attestmesh_xds_connected_sidecars",
			Help: "Sidecars with an open, authenticated ADS stream.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_xds_pushes_total",
			Help: "xDS responses sent to sidecars, by resource type URL.",
		}, []string{"type_url"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "attestmesh_xds_push_latency_seconds",
			Help:    "Time from a sidecar's request, or from the publication of the snapshot that answers it if later, to the response.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_xds_nacks_total",
			Help: "xDS responses that sidecars rejected (NACK), by resource type URL.",
		}, []string{"type_url"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_xds_refused_streams_total",
			Help: "ADS streams refused, by reason (no_spiffe_id, node_id_mismatch).",
		}, []string{"reason"}),
	}
	for _, reason := range []string{refusedNoSVID, refusedNodeIDMismatch} {
		m.refused.WithLabelValues(reason)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connected, m.pushes, m.latency, m.nacks, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("xds: register metrics: %w", err)
		}
	}
	return m, nil
}

// typeLabel bounds the type_url label to the known xDS resource types.
func typeLabel(typeURL string) string {
	switch typeURL {
	case resource.ListenerType, resource.ClusterType, resource.SecretType, resource.EndpointType,
		resource.RouteType, resource.ScopedRouteType, resource.VirtualHostType, resource.RuntimeType,
		resource.ExtensionConfigType:
		return typeURL
	}
	return "other"
}
