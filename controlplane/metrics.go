package controlplane

import (
	"context"
	"crypto/tls"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// sessionsGauge is attestmesh_sessions, recounted after every change.
type sessionsGauge struct {
	gauge prometheus.Gauge
	count func(context.Context) (int, error)
}

func newSessionsGauge(reg prometheus.Registerer) *sessionsGauge {
	g := &sessionsGauge{gauge: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "attestmesh_sessions",
		Help: "Sessions stored in the control plane.",
	})}
	reg.MustRegister(g.gauge)
	return g
}

// changed recounts the sessions; ctx is the control plane's.
func (g *sessionsGauge) changed(ctx context.Context) {
	if g.count == nil {
		return
	}
	if n, err := g.count(ctx); err == nil {
		g.gauge.Set(float64(n))
	}
}

// atomicCert is an atomically swapped TLS certificate.
type atomicCert struct {
	p atomic.Pointer[tls.Certificate]
}

func (a *atomicCert) Load() *tls.Certificate   { return a.p.Load() }
func (a *atomicCert) Store(c *tls.Certificate) { a.p.Store(c) }
