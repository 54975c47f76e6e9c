// Package metrics defines the sidecar's Prometheus metrics (their names are
// part of the product's interface). Every label value is bounded: listener and cluster names come
// from configuration, and the series of a listener or cluster that the configuration no longer
// has are deleted (Retain); reasons and results come from fixed sets.
//
// The package keeps the series itself and serves them as client_golang's registry and promhttp
// handler (default options) serve the same metrics: the text exposition format (version 0.0.4)
// byte for byte, or the delimited protobuf format, with the same content negotiation, gzip and
// headers (TestMatchesClientGolang). It does not use client_golang: its package initialisation
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
	"time"
	"unicode/utf8"

	"github.com/munnerz/goautoneg"
	"google.golang.org/protobuf/encoding/protowire"
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

// The exposition formats served, as promhttp names them (without the escaping parameter).
const (
	formatText       = "text/plain; version=0.0.4; charset=utf-8"
	formatProtoDelim = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

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

// ServeHTTP serves the metrics as promhttp does with its default options: the text exposition
// format, or the delimited protobuf format when the Accept header prefers it, gzipped when the
// client accepts it, with promhttp's headers. (promhttp also offers protobuf's text and
// compact-text debugging formats, and filters families by name[] query parameters; here a
// client asking only for those formats gets the text format, and every family is served.)
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	format, proto := negotiate(r.Header.Get("Accept"))
	h := w.Header()
	h.Add("Vary", "Accept")
	h.Add("Vary", "Accept-Encoding")
	h.Set("Content-Type", format)
	out := io.Writer(w)
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		gz := gzipWriters.Get().(*gzip.Writer)
		gz.Reset(w)
		defer func() {
			_ = gz.Close()
			gz.Reset(io.Discard) // holds no response while pooled
			gzipWriters.Put(gz)
		}()
		out = gz
	}
	if proto {
		_ = m.WriteProto(out)
		return
	}
	_ = m.WriteText(out)
}

// gzipWriters keep the compressors of past scrapes: a new gzip.Writer allocates about 800 KB,
// which a Prometheus scraping every few seconds (it always accepts gzip) would make the
// sidecar's garbage at every scrape, as promhttp's pool avoids too.
var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// negotiate picks the format as expfmt.NegotiateAccept does among the formats served: the
// first accepted in the order of preference that matches, the text format otherwise, with the
// escaping scheme the client named (valid metric names are the same in every scheme).
func negotiate(accept string) (string, bool) {
	escaping := "underscores"
	for _, ac := range goautoneg.ParseAccept(accept) {
		switch e := ac.Params["escaping"]; e {
		case "allow-utf-8", "underscores", "dots", "values":
			escaping = e
		}
		if (ac.Type == "*" || ac.Type == "application") && (ac.SubType == "*" || ac.SubType == "vnd.google.protobuf") &&
			ac.Params["proto"] == "io.prometheus.client.MetricFamily" && ac.Params["encoding"] == "delimited" {
			return formatProtoDelim + "; escaping=" + escaping, true
		}
		version := ac.Params["version"]
		if version == "" && ac.Type == "text" && ac.SubType == "plain" {
			version = "0.0.4"
		}
		if (ac.Type == "*" || ac.Type == "text") && (ac.SubType == "*" || ac.SubType == "plain") && version == "0.0.4" {
			return formatText + "; escaping=" + escaping, false
		}
	}
	return formatText + "; escaping=" + escaping, false
}

// acceptsGzip chooses between identity and gzip as promhttp does for well-formed headers
// (gddo's NegotiateContentEncoding over the offers identity, gzip): the coding named with the
// highest quality, identity on a tie or for "*", gzip only when it is strictly preferred. A
// quality that is not a number from 0 to 1 drops its coding, where gddo reads what digits it
// can ("q=1.5" as 1, "q=.5" as 0): such headers may get identity here and gzip there, or the
// reverse, both of which every client must accept.
func acceptsGzip(values []string) bool {
	best, bestQ := "identity", -1.0
	for _, offer := range []string{"identity", "gzip"} {
		for _, v := range values {
			for part := range strings.SplitSeq(v, ",") {
				coding, params, hasParams := strings.Cut(strings.TrimSpace(part), ";")
				coding = strings.TrimSpace(coding)
				q := 1.0
				if hasParams {
					val, ok := strings.CutPrefix(strings.TrimSpace(params), "q=")
					f, err := strconv.ParseFloat(val, 64)
					if !ok || err != nil || f < 0 || f > 1 {
						continue
					}
					q = f
				}
				if q > bestQ && (coding == "*" || coding == offer) {
					best, bestQ = offer, q
				}
			}
		}
	}
	return best == "gzip" && bestQ > 0
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

// WriteProto writes every family that has series in the delimited protobuf format
// (io.prometheus.client.MetricFamily messages, each after its varint length), with the fields
// client_golang sets: label pairs in name order, counters' and histograms' created timestamps,
// a histogram's buckets without +Inf.
func (m *Metrics) WriteProto(w io.Writer) error {
	var b, msg []byte
	for _, f := range m.families {
		msg = f.appendProto(msg[:0])
		if len(msg) == 0 {
			continue
		}
		b = protowire.AppendVarint(b, uint64(len(msg)))
		b = append(b, msg...)
	}
	_, err := w.Write(b)
	return err
}

// Field numbers and types of io.prometheus.client's metrics.proto (proto2).
const (
	typeCounter   = 0
	typeGauge     = 1
	typeHistogram = 4
)

func (v *vec) appendProto(b []byte) []byte {
	all := v.sorted()
	if len(all) == 0 {
		return b
	}
	b = appendString(b, 1, v.name)
	b = appendString(b, 2, v.help)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	switch v.typ {
	case "counter":
		b = protowire.AppendVarint(b, typeCounter)
	case "gauge":
		b = protowire.AppendVarint(b, typeGauge)
	default:
		b = protowire.AppendVarint(b, typeHistogram)
	}
	var metric, inner []byte
	for _, s := range all {
		metric = metric[:0]
		for _, i := range v.order {
			inner = appendString(inner[:0], 1, v.labels[i])
			inner = appendString(inner, 2, s.values[i])
			metric = appendBytes(metric, 1, inner)
		}
		switch v.typ {
		case "gauge":
			inner = appendDouble(inner[:0], 1, math.Float64frombits(s.valBits.Load()))
			metric = appendBytes(metric, 2, inner)
		case "counter":
			inner = appendDouble(inner[:0], 1, s.value())
			inner = appendTimestamp(inner, 3, s.created)
			metric = appendBytes(metric, 3, inner)
		default:
			counts, sum := s.histogram()
			var total uint64
			for _, c := range counts {
				total += c
			}
			inner = protowire.AppendTag(inner[:0], 1, protowire.VarintType)
			inner = protowire.AppendVarint(inner, total)
			inner = appendDouble(inner, 2, sum)
			var cum uint64
			var bucket []byte
			for i, ub := range v.buckets {
				cum += counts[i]
				bucket = protowire.AppendTag(bucket[:0], 1, protowire.VarintType)
				bucket = protowire.AppendVarint(bucket, cum)
				bucket = appendDouble(bucket, 2, ub)
				inner = appendBytes(inner, 3, bucket)
			}
			inner = appendTimestamp(inner, 15, s.created)
			metric = appendBytes(metric, 7, inner)
		}
		b = appendBytes(b, 4, metric)
	}
	return b
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendDouble(b []byte, num protowire.Number, f float64) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(f))
}

// appendTimestamp appends a google.protobuf.Timestamp (proto3: zero fields left out).
func appendTimestamp(b []byte, num protowire.Number, t time.Time) []byte {
	var ts []byte
	if sec := t.Unix(); sec != 0 {
		ts = protowire.AppendTag(ts, 1, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(sec)) //nolint:gosec // int64 fields are their two's complement
	}
	if nsec := t.Nanosecond(); nsec != 0 {
		ts = protowire.AppendTag(ts, 2, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(nsec)) //nolint:gosec // 0 to 999,999,999
	}
	return appendBytes(b, num, ts)
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
	values  []string  // as declared
	created time.Time // for counters' and histograms' created timestamps
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
		s = &series{values: slices.Clone(values), created: time.Now()}
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

// sorted returns the series by their label values in the order of the sorted label names.
func (v *vec) sorted() []*series {
	v.mu.RLock()
	all := make([]*series, 0, len(v.series))
	for _, s := range v.series {
		all = append(all, s)
	}
	v.mu.RUnlock()
	slices.SortFunc(all, func(x, y *series) int {
		for _, i := range v.order {
			if c := strings.Compare(x.values[i], y.values[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	return all
}

// histogram returns a copy of the histogram's bucket counts (not cumulative, +Inf last) and
// its sum.
func (s *series) histogram() ([]uint64, float64) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	return slices.Clone(s.counts), s.sum
}

func (v *vec) appendText(b []byte) []byte {
	all := v.sorted()
	if len(all) == 0 {
		return b
	}
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
		counts, sum := s.histogram()
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

// retain deletes the series whose value of label keep refuses, and returns how many it
// deleted. Holders of a deleted series may still update it; it is no longer served.
func (v *vec) retain(label string, keep func(string) bool) int {
	i := slices.Index(v.labels, label)
	if i < 0 {
		panic("metrics: " + v.name + " has no label " + strconv.Quote(label))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for k, s := range v.series {
		if !keep(s.values[i]) {
			delete(v.series, k)
			n++
		}
	}
	return n
}

// Retain deletes every series whose value of label keep refuses (a removed listener's, a
// removed cluster's), and returns how many. A holder of a deleted series may still update it;
// it is no longer served, and asking for its label values again starts a new series.
func (c *CounterVec) Retain(label string, keep func(string) bool) int { return c.v.retain(label, keep) }

// Retain is CounterVec.Retain for gauges.
func (g *GaugeVec) Retain(label string, keep func(string) bool) int { return g.v.retain(label, keep) }

// Retain is CounterVec.Retain for histograms.
func (h *HistogramVec) Retain(label string, keep func(string) bool) int {
	return h.v.retain(label, keep)
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
