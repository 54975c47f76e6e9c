package attestation

import (
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the attestation service's Prometheus metrics. Every label is bounded: result
// (ok|refused), reason (the closed attestapi.Reason set), tee (sgx|simulation|none) and role.
type Metrics struct {
	attestations       *prometheus.CounterVec
	latency            *prometheus.HistogramVec
	certificatesIssued *prometheus.CounterVec
}

// NewMetrics registers the attestation metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_attestations_total",
			Help: "Attestation requests by result, refusal reason, TEE kind and role.",
		}, []string{"result", "reason", "tee", "role"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "attestmesh_attestation_duration_seconds",
			Help:    "Time to verify evidence and answer an attestation request.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"result"}),
		certificatesIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_certificates_issued_total",
			Help: "X.509-SVIDs issued after a successful attestation, by TEE kind.",
		}, []string{"tee"}),
	}
	reg.MustRegister(m.attestations, m.latency, m.certificatesIssued)
	return m
}

func (m *Metrics) observe(reason attestapi.Reason, tee attestapi.TEE, role string, d time.Duration) {
	result := "ok"
	if reason != attestapi.ReasonNone {
		result = "refused"
	}
	t := string(tee)
	if t == "" {
		t = "none"
	}
	m.attestations.WithLabelValues(result, string(reason), t, role).Inc()
	m.latency.WithLabelValues(result).Observe(d.Seconds())
}
