// Package metrics defines the sidecar's Prometheus metrics (their names are
// part of the product's interface). Every label value is bounded: listener and cluster names come
// from configuration, reasons and results from fixed sets.
package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Directions of a listener.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// TLS handshake failure reasons, the only values of the reason label.
const (
	ReasonNoClientCert   = "no_client_cert"
	ReasonBadCertificate = "bad_certificate"
	ReasonExpired        = "expired"
	ReasonUnknownCA      = "unknown_ca"
	ReasonPlaintext      = "plaintext"
	ReasonOther          = "other"
)

// xDS update results.
const (
	ResultACK  = "ack"
	ResultNACK = "nack"
)

// Metrics are the sidecar's collectors.
type Metrics struct {
	Connections       *prometheus.CounterVec   // listener, direction
	ActiveConnections *prometheus.GaugeVec     // listener, direction
	Bytes             *prometheus.CounterVec   // listener, direction
	HandshakeFailures *prometheus.CounterVec   // listener, reason
	AuthzDenials      *prometheus.CounterVec   // listener
	UpstreamConnect   *prometheus.HistogramVec // cluster
	SVIDExpiry        *prometheus.GaugeVec
	XDSUpdates        *prometheus.CounterVec // type_url, result
}

// New creates the collectors and registers them with reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_sidecar_connections_total",
			Help: "Downstream connections accepted, by listener and direction.",
		}, []string{"listener", "direction"}),
		ActiveConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "attestmesh_sidecar_active_connections",
			Help: "Connections being proxied now, by listener and direction.",
		}, []string{"listener", "direction"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_sidecar_bytes_total",
			Help: "Bytes proxied in both directions, by listener and direction.",
		}, []string{"listener", "direction"}),
		HandshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_sidecar_tls_handshake_failures_total",
			Help: "TLS handshakes that failed, by listener and reason (no_client_cert, bad_certificate, expired, unknown_ca, plaintext, other).",
		}, []string{"listener", "reason"}),
		AuthzDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_sidecar_authz_denials_total",
			Help: "Peers with a valid certificate whose SPIFFE ID is not allowed, by listener.",
		}, []string{"listener"}),
		UpstreamConnect: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "attestmesh_sidecar_upstream_connect_seconds",
			Help:    "Time to connect to an upstream, including the TLS handshake for mTLS clusters.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"cluster"}),
		SVIDExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "attestmesh_sidecar_svid_expiry_timestamp_seconds",
			Help: "Expiry of the current X.509-SVID, as a Unix timestamp, by the TEE behind it (sgx or simulation).",
		}, []string{"tee"}),
		XDSUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_sidecar_xds_updates_total",
			Help: "xDS responses applied (ack) or rejected (nack), by type URL.",
		}, []string{"type_url", "result"}),
	}
	for _, c := range []prometheus.Collector{
		m.Connections, m.ActiveConnections, m.Bytes, m.HandshakeFailures,
		m.AuthzDenials, m.UpstreamConnect, m.SVIDExpiry, m.XDSUpdates,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return m, nil
}
