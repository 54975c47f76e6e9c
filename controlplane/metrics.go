package controlplane

import (
	"crypto/tls"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the control plane's own gauges; the attestation, xDS and CAS components register
// theirs on the same registry.
type metrics struct {
	sessions      prometheus.Gauge
	countSessions func()
}

// sessionsChanged recounts the sessions after a change.
func (m *metrics) sessionsChanged() {
	if m.countSessions != nil {
		m.countSessions()
	}
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "attestmesh_sessions",
			Help: "Sessions stored in the control plane.",
		}),
	}
	reg.MustRegister(m.sessions)
	return m
}

// atomicCert is an atomically swapped TLS certificate.
type atomicCert struct {
	p atomic.Pointer[tls.Certificate]
}

func (a *atomicCert) Load() *tls.Certificate   { return a.p.Load() }
func (a *atomicCert) Store(c *tls.Certificate) { a.p.Store(c) }
