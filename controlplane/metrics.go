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
	// meshes counts the registered meshes by whether the xDS feed serves them; excluded
	// counts each rebuild that leaves one out, by why.
	meshes   *prometheus.GaugeVec
	excluded *prometheus.CounterVec
}

// Reasons for leaving a registered mesh out of the xDS configuration.
const (
	excludedUnauthorized = "registrant_lost_rights"
	excludedInvalid      = "invalid_or_conflicting"
)

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
	m.meshes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "attestmesh_mesh_registrations",
		Help: "Registered meshes by state: active (in the xDS configuration) or excluded.",
	}, []string{"state"})
	m.excluded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "attestmesh_mesh_exclusions_total",
		Help: "xDS rebuilds that left a registered mesh out, by reason: registrant_lost_rights, invalid_or_conflicting.",
	}, []string{"reason"})
	reg.MustRegister(m.sessions, m.meshes, m.excluded)
	return m
}

// atomicCert is an atomically swapped TLS certificate.
type atomicCert struct {
	p atomic.Pointer[tls.Certificate]
}

func (a *atomicCert) Load() *tls.Certificate   { return a.p.Load() }
func (a *atomicCert) Store(c *tls.Certificate) { a.p.Store(c) }
