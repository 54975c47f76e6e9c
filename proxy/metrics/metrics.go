// Package metrics defines the sidecar's Prometheus metrics (their names are
// part of the product's interface). Every label value is bounded: listener and cluster names come
// from configuration, reasons and results from fixed sets.
//
// The package keeps the series itself and writes them in Prometheus' text exposition format
// (version 0.0.4), byte for byte as client_golang's registry and promhttp handler write the same
// metrics (TestMatchesClientGolang). It does not use client_golang: its package initialisation
// registers Go and process collectors on the default registry (runtime/metrics, procfs) and its
// encoders bring expfmt, protobuf's client model and more, about 0.7 MB of the sidecar's
// resident memory, most of it executable pages that every sidecar maps (see docs/performance.md,
// "Sidecar RSS").
package metrics

import (
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
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

// ContentType is the exposition format served by ServeHTTP, as promhttp names it.
const ContentType = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"

// Metrics are the sidecar's series.
type Metrics struct {
	Connections       *CounterVec   // listener, direction
	ActiveConnections *GaugeVec     // listener, direction
	Bytes             *CounterVec   // listener, direction
	HandshakeFailures *CounterVec   // listener, reason
	AuthzDenials      *CounterVec   // listener
	UpstreamConnect   *HistogramVec // cluster
	SVIDExpiry        *GaugeVec     // tee
	XDSUpdates        *CounterVec   // type_url, result

	families []*vec // sorted by name
}

// New creates the sidecar's metrics, with no series yet.
func New() *Metrics {
	m := &Metrics{
		Connections: &CounterVec{newVec("attestmesh_sidecar_connections_total", "counter",
			"Downstream connections accepted, by listener and direction.", nil, "listener", "direction")},
		ActiveConnections: &GaugeVec{newVec("attestmesh_sidecar_active_connections", "gauge",
			"Connections being proxied now, by listener and direction.", nil, "listener", "direction")},
		Bytes: &CounterVec{newVec("attestmesh_sidecar_bytes_total", "counter",
			"Bytes proxied in both directions, by listener and direction.", nil, "listener", "direction")},
		HandshakeFailures: &CounterVec{newVec("attestmesh_sidecar_tls_handshake_failures_total", "counter",
			"TLS handshakes that failed, by listener and reason (no_client_cert, bad_certificate, expired, unknown_ca, plaintext, other).",
			nil, "listener", "reason")},
		AuthzDenials: &CounterVec{newVec("attestmesh_sidecar_authz_denials_total", "counter",
			"Peers with a valid certificate whose SPIFFE ID is not allowed, by listener.", nil, "listener")},
		UpstreamConnect: &HistogramVec{newVec("attestmesh_sidecar_upstream_connect_seconds", "histogram",
			"Time to connect to an upstream, including the TLS handshake for mTLS clusters.",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}, "cluster")},
		SVIDExpiry: &GaugeVec{newVec("attestmesh_sidecar_svid_expiry_timestamp_seconds", "gauge",
			"Expiry of the current X.509-SVID, as a Unix timestamp, by the TEE behind it (sgx or simulation).", nil, "tee")},
		XDSUpdates: &CounterVec{newVec("attestmesh_sidecar_xds_updates_total", "counter",
			"xDS responses applied (ack) or rejected (nack), by type URL.", nil, "type_url", "result")},
	}
	m.families = []*vec{
		m.Connections.v, m.ActiveConnections.v, m.Bytes.v, m.HandshakeFailures.v,
		m.AuthzDenials.v, m.UpstreamConnect.v, m.SVIDExpiry.v, m.XDSUpdates.v,
	}
	slices.SortFunc(m.families, func(a, b *vec) int { return strings.Compare(a.name, b.name) })
	return m
}

// ServeHTTP serves the metrics in the text exposition format, gzipped when the client accepts
// it, with the headers promhttp sets.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Add("Vary", "Accept")
	h.Add("Vary", "Accept-Encoding")
	h.Set("Content-Type", ContentType)
	out := io.Writer(w)
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		defer gz.Close()
		out = gz
	}
	_ = m.WriteText(out)
}

// acceptsGzip reports whether an Accept-Encoding header lists gzip with a non-zero quality.
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				if k, val, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(k, "q") {
					if f, err := strconv.ParseFloat(val, 64); err == nil {
						q = f
					}
				}
			}
			return q > 0
		}
	}
	return false
}

// WriteText writes every family that has series, in the text exposition format: families by
// name, series by their label values in the order of their sorted label names.
func (m *Metrics) WriteText(w io.Writer) error {
	var b []byte
	for _, f := range m.families {
		b = f.appendText(b)
	}
	_, err := w.Write(b)
	return err
}

// vec is a family: its series by label values.
type vec struct {
	name, typ, help string
	buckets         []float64 // histograms only
	labels          []string  // as declared
	order           []int     // indexes of labels in name order

	mu     sync.RWMutex
	series map[string]*series
}

type series struct {
	values []string // as declared
	// counters and gauges: valInt holds integer additions of a counter, valBits a float64.
	valInt  atomic.Uint64
	valBits atomic.Uint64
	// histograms
	hmu    sync.Mutex
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
}

func newVec(name, typ, help string, buckets []float64, labels ...string) *vec {
	order := make([]int, len(labels))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(labels[a], labels[b]) })
	return &vec{name: name, typ: typ, help: help, buckets: buckets, labels: labels, order: order, series: map[string]*series{}}
}

// get returns the series of the label values, creating it. Like client_golang, it panics when
// the number of values is wrong or a value is not valid UTF-8.
func (v *vec) get(values []string) *series {
	if len(values) != len(v.labels) {
		panic("metrics: " + v.name + ": " + strconv.Itoa(len(values)) + " label values for " + strconv.Itoa(len(v.labels)) + " labels")
	}
	key := strings.Join(values, "\xff")
	v.mu.RLock()
	s := v.series[key]
	v.mu.RUnlock()
	if s != nil {
		return s
	}
	for _, val := range values {
		if !utf8.ValidString(val) {
			panic("metrics: " + v.name + ": label value " + strconv.Quote(val) + " is not valid UTF-8")
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if s = v.series[key]; s == nil {
		s = &series{values: slices.Clone(values)}
		if v.buckets != nil {
			s.counts = make([]uint64, len(v.buckets)+1)
		}
		v.series[key] = s
	}
	return s
}

func (s *series) value() float64 {
	return float64(s.valInt.Load()) + math.Float64frombits(s.valBits.Load())
}

func (s *series) addFloat(f float64) {
	for {
		old := s.valBits.Load()
		if s.valBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+f)) {
			return
		}
	}
}

func (v *vec) appendText(b []byte) []byte {
	v.mu.RLock()
	all := make([]*series, 0, len(v.series))
	for _, s := range v.series {
		all = append(all, s)
	}
	v.mu.RUnlock()
	if len(all) == 0 {
		return b
	}
	slices.SortFunc(all, func(x, y *series) int {
		for _, i := range v.order {
			if c := strings.Compare(x.values[i], y.values[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	b = append(b, "# HELP "...)
	b = append(b, v.name...)
	b = append(b, ' ')
	b = appendEscaped(b, v.help, false)
	b = append(b, "\n# TYPE "...)
	b = append(b, v.name...)
	b = append(b, ' ')
	b = append(b, v.typ...)
	b = append(b, '\n')
	for _, s := range all {
		if v.buckets == nil {
			b = v.appendSample(b, "", s, "", 0, s.value())
			continue
		}
		s.hmu.Lock()
		counts, sum := slices.Clone(s.counts), s.sum
		s.hmu.Unlock()
		var cum uint64
		for i, ub := range v.buckets {
			cum += counts[i]
			b = v.appendSample(b, "_bucket", s, "le", ub, float64(cum))
		}
		cum += counts[len(v.buckets)]
		b = v.appendSample(b, "_bucket", s, "le", math.Inf(1), float64(cum))
		b = v.appendSample(b, "_sum", s, "", 0, sum)
		b = v.appendSample(b, "_count", s, "", 0, float64(cum))
	}
	return b
}

// appendSample appends one line: name+suffix, the labels in name order and, if extra is not
// empty, extra="extraValue" last, then the value.
func (v *vec) appendSample(b []byte, suffix string, s *series, extra string, extraValue, value float64) []byte {
	b = append(b, v.name...)
	b = append(b, suffix...)
	if len(v.order) > 0 || extra != "" {
		b = append(b, '{')
		sep := false
		for _, i := range v.order {
			if sep {
				b = append(b, ',')
			}
			sep = true
			b = append(b, v.labels[i]...)
			b = append(b, `="`...)
			b = appendEscaped(b, s.values[i], true)
			b = append(b, '"')
		}
		if extra != "" {
			if sep {
				b = append(b, ',')
			}
			b = append(b, extra...)
			b = append(b, `="`...)
			b = appendFloat(b, extraValue)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = appendFloat(b, value)
	return append(b, '\n')
}

// appendEscaped escapes a backslash and a line feed, and in a label value a double quote, as
// the text format requires.
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat writes f as expfmt does.
func appendFloat(b []byte, f float64) []byte {
	switch {
	case f == 1:
		return append(b, '1')
	case f == 0:
		return append(b, '0')
	case f == -1:
		return append(b, "-1"...)
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, +1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// CounterVec is a counter family.
type CounterVec struct{ v *vec }

// WithLabelValues returns the counter of the label values, in the order of the family's labels.
func (c *CounterVec) WithLabelValues(values ...string) *Counter {
	return (*Counter)(c.v.get(values))
}

// Len returns the number of series.
func (c *CounterVec) Len() int {
	c.v.mu.RLock()
	defer c.v.mu.RUnlock()
	return len(c.v.series)
}

// Counter is one series of a counter.
type Counter series

// Inc adds one.
func (c *Counter) Inc() { c.valInt.Add(1) }

// Add adds f; like client_golang, it panics if f is negative.
func (c *Counter) Add(f float64) {
	if f < 0 {
		panic("metrics: counter cannot decrease in value")
	}
	if i := uint64(f); float64(i) == f {
		c.valInt.Add(i)
		return
	}
	(*series)(c).addFloat(f)
}

// Value returns the counter's value.
func (c *Counter) Value() float64 { return (*series)(c).value() }

// GaugeVec is a gauge family.
type GaugeVec struct{ v *vec }

// WithLabelValues returns the gauge of the label values, in the order of the family's labels.
func (g *GaugeVec) WithLabelValues(values ...string) *Gauge {
	return (*Gauge)(g.v.get(values))
}

// Reset deletes every series.
func (g *GaugeVec) Reset() {
	g.v.mu.Lock()
	defer g.v.mu.Unlock()
	clear(g.v.series)
}

// Gauge is one series of a gauge.
type Gauge series

// Set sets the gauge to f.
func (g *Gauge) Set(f float64) { g.valBits.Store(math.Float64bits(f)) }

// Inc adds one.
func (g *Gauge) Inc() { (*series)(g).addFloat(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { (*series)(g).addFloat(-1) }

// Value returns the gauge's value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.valBits.Load()) }

// HistogramVec is a histogram family.
type HistogramVec struct{ v *vec }

// WithLabelValues returns the histogram of the label values, in the order of the family's
// labels.
func (h *HistogramVec) WithLabelValues(values ...string) *Histogram {
	return &Histogram{s: h.v.get(values), buckets: h.v.buckets}
}

// Histogram is one series of a histogram.
type Histogram struct {
	s       *series
	buckets []float64
}

// Observe adds f to the bucket of the smallest upper bound at or above it (+Inf for NaN, as
// client_golang does).
func (h *Histogram) Observe(f float64) {
	i := len(h.buckets)
	for j, ub := range h.buckets {
		if f <= ub {
			i = j
			break
		}
	}
	h.s.hmu.Lock()
	h.s.counts[i]++
	h.s.sum += f
	h.s.hmu.Unlock()
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 {
	h.s.hmu.Lock()
	defer h.s.hmu.Unlock()
	var n uint64
	for _, c := range h.s.counts {
		n += c
	}
	return n
}
