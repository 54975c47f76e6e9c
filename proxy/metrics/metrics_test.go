package metrics_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestmesh/attestmesh/proxy/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNew(t *testing.T) {
	m := metrics.New()
	m.Connections.WithLabelValues("inbound|8443", metrics.Inbound).Inc()
	m.Bytes.WithLabelValues("inbound|8443", metrics.Inbound).Add(10)
	m.HandshakeFailures.WithLabelValues("inbound|8443", metrics.ReasonPlaintext).Inc()
	m.UpstreamConnect.WithLabelValues("local|8443").Observe(0.001)
	m.XDSUpdates.WithLabelValues("type.googleapis.com/envoy.config.listener.v3.Listener", metrics.ResultACK).Inc()
	m.SVIDExpiry.WithLabelValues("simulation").Set(1.8e9)

	var b bytes.Buffer
	require.NoError(t, m.WriteText(&b))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := parser.TextToMetricFamilies(&b)
	require.NoError(t, err)
	assert.Len(t, byName, 6, "five vectors in use and the SVID expiry gauge with its tee label")
	var mfs []*dto.MetricFamily
	for name, mf := range byName {
		assert.Regexp(t, "^attestmesh_sidecar_", name)
		mfs = append(mfs, mf)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")

	assert.InDelta(t, 10, m.Bytes.WithLabelValues("inbound|8443", metrics.Inbound).Value(), 0)
	assert.Equal(t, uint64(1), m.UpstreamConnect.WithLabelValues("local|8443").Count())
	assert.Equal(t, 1, m.Connections.Len())
	assert.Panics(t, func() { m.Bytes.WithLabelValues("x", metrics.Inbound).Add(-1) }, "a counter does not decrease")
	assert.Panics(t, func() { m.Bytes.WithLabelValues("x") }, "one label value for two labels")
	assert.Panics(t, func() { m.AuthzDenials.WithLabelValues("\xff") }, "not UTF-8")
}

// reference is the sidecar's metrics as they were defined with client_golang, before the
// package wrote them itself.
type reference struct {
	reg                                                             *prometheus.Registry
	connections, bytes, handshakeFailures, authzDenials, xdsUpdates *prometheus.CounterVec
	active, svidExpiry                                              *prometheus.GaugeVec
	upstreamConnect                                                 *prometheus.HistogramVec
}

func newReference() *reference {
	r := &reference{
		reg: prometheus.NewRegistry(),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_sidecar_connections_total",
			Help: "Downstream connections accepted, by listener and direction.",
		}, []string{"listener", "direction"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "attestmesh_sidecar_active_connections",
			Help: "Connections being proxied now, by listener and direction.",
		}, []string{"listener", "direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_sidecar_bytes_total",
			Help: "Bytes proxied in both directions, by listener and direction.",
		}, []string{"listener", "direction"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_sidecar_tls_handshake_failures_total",
			Help: "TLS handshakes that failed, by listener and reason (no_client_cert, bad_certificate, expired, unknown_ca, plaintext, other).",
		}, []string{"listener", "reason"}),
		authzDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_sidecar_authz_denials_total",
			Help: "Peers with a valid certificate whose SPIFFE ID is not allowed, by listener.",
		}, []string{"listener"}),
		upstreamConnect: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "attestmesh_sidecar_upstream_connect_seconds",
			Help:    "Time to connect to an upstream, including the TLS handshake for mTLS clusters.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"cluster"}),
		svidExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "attestmesh_sidecar_svid_expiry_timestamp_seconds",
			Help: "Expiry of the current X.509-SVID, as a Unix timestamp, by the TEE behind it (sgx or simulation).",
		}, []string{"tee"}),
		xdsUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_sidecar_xds_updates_total",
			Help: "xDS responses applied (ack) or rejected (nack), by type URL.",
		}, []string{"type_url", "result"}),
	}
	r.reg.MustRegister(r.connections, r.active, r.bytes, r.handshakeFailures, r.authzDenials,
		r.upstreamConnect, r.svidExpiry, r.xdsUpdates)
	return r
}

// TestMatchesClientGolang: the same operations on the package's metrics and on client_golang's
// give the same /metrics response, byte for byte, with and without gzip, empty families
// left out, labels sorted by name and series by their values, escapes and float formats.
func TestMatchesClientGolang(t *testing.T) {
	m, r := metrics.New(), newReference()
	ref := promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
	compare := func(t *testing.T, step string) {
		t.Helper()
		for _, hdr := range []map[string]string{
			{},
			{"Accept-Encoding": "gzip"},
			{"Accept-Encoding": "gzip;q=0, identity"},
			{"Accept-Encoding": "gzip;q=0"},
			{"Accept-Encoding": "gzip;q=0.5, identity"},
			{"Accept-Encoding": "identity;q=0.5, gzip"},
			{"Accept-Encoding": "*"},
			{"Accept-Encoding": "br, gzip;q=0.1"},
			// Prometheus 2's and 3's defaults, and with its protobuf format first.
			{"Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "Accept-Encoding": "gzip"},
			{"Accept": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1", "Accept-Encoding": "gzip"},
			{"Accept": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2", "Accept-Encoding": "gzip"},
			{"Accept": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"},
			{"Accept": "text/plain;version=0.0.4;escaping=dots;q=0.9,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8"},
			{"Accept": "text/plain"},
			{"Accept": "*/*"},
			{"Accept": "application/json"},
			{"Accept": "text/plain;version=9;escaping=bogus"},
		} {
			got, want := serve(t, m, hdr), serve(t, ref, hdr)
			assert.Equal(t, want.Header().Values("Content-Type"), got.Header().Values("Content-Type"), "%s %v", step, hdr)
			assert.Equal(t, want.Header().Values("Content-Encoding"), got.Header().Values("Content-Encoding"), "%s %v", step, hdr)
			assert.Equal(t, want.Header().Values("Vary"), got.Header().Values("Vary"), "%s %v", step, hdr)
			if strings.HasPrefix(want.Header().Get("Content-Type"), "application/vnd.google.protobuf") {
				assert.Equal(t, decodeProto(t, body(t, want)), decodeProto(t, body(t, got)), "%s %v", step, hdr)
				continue
			}
			assert.Equal(t, body(t, want), body(t, got), "%s %v", step, hdr)
		}
	}
	compare(t, "empty")

	m.SVIDExpiry.WithLabelValues("sgx").Set(1.8e9)
	r.svidExpiry.WithLabelValues("sgx").Set(1.8e9)
	m.SVIDExpiry.Reset()
	r.svidExpiry.Reset()
	m.SVIDExpiry.WithLabelValues("simulation").Set(1779000000)
	r.svidExpiry.WithLabelValues("simulation").Set(1779000000)
	compare(t, "gauge")

	labels := []string{"outbound|6379", "inbound|8443", "a\"b\\c\nd", "ünïcode", "", "Z"}
	for i, l := range labels {
		for _, dir := range []string{metrics.Outbound, metrics.Inbound} {
			m.Connections.WithLabelValues(l, dir).Inc()
			r.connections.WithLabelValues(l, dir).Inc()
			m.Bytes.WithLabelValues(l, dir).Add(float64(1234567 * (i + 1)))
			r.bytes.WithLabelValues(l, dir).Add(float64(1234567 * (i + 1)))
			m.Bytes.WithLabelValues(l, dir).Add(0.25)
			r.bytes.WithLabelValues(l, dir).Add(0.25)
			g, rg := m.ActiveConnections.WithLabelValues(l, dir), r.active.WithLabelValues(l, dir)
			for range i {
				g.Inc()
				rg.Inc()
			}
			g.Dec()
			rg.Dec()
		}
		m.AuthzDenials.WithLabelValues(l).Inc()
		r.authzDenials.WithLabelValues(l).Inc()
		m.HandshakeFailures.WithLabelValues(l, metrics.ReasonUnknownCA).Inc()
		r.handshakeFailures.WithLabelValues(l, metrics.ReasonUnknownCA).Inc()
	}
	for _, v := range []float64{0, .0005, .0007, .001, 0.3, 1, 4.9, 5, 7, 1e9, math.NaN(), math.Inf(1), -1} {
		for _, c := range []string{"local|8443", "redis|6379"} {
			m.UpstreamConnect.WithLabelValues(c).Observe(v)
			r.upstreamConnect.WithLabelValues(c).Observe(v)
		}
	}
	m.XDSUpdates.WithLabelValues("type.googleapis.com/envoy.config.listener.v3.Listener", metrics.ResultACK).Inc()
	r.xdsUpdates.WithLabelValues("type.googleapis.com/envoy.config.listener.v3.Listener", metrics.ResultACK).Inc()
	m.XDSUpdates.WithLabelValues("other", metrics.ResultNACK).Add(3)
	r.xdsUpdates.WithLabelValues("other", metrics.ResultNACK).Add(3)
	for _, f := range []float64{math.Inf(1), math.Inf(-1), math.NaN(), 1e-7, 123456789012, -0.5} {
		m.SVIDExpiry.WithLabelValues("simulation").Set(f)
		r.svidExpiry.WithLabelValues("simulation").Set(f)
		compare(t, "all")
	}
}

// TestCreatedTimestamps: the created timestamp of a counter and of a histogram is when its
// series was made, the same at every scrape.
func TestCreatedTimestamps(t *testing.T) {
	m := metrics.New()
	before := time.Now()
	m.Connections.WithLabelValues("l", metrics.Inbound).Inc()
	m.UpstreamConnect.WithLabelValues("c").Observe(0.1)
	made := time.Now()
	created := func() []time.Time {
		var out []time.Time
		var b bytes.Buffer
		require.NoError(t, m.WriteProto(&b))
		for b.Len() > 0 {
			var mf dto.MetricFamily
			require.NoError(t, protodelim.UnmarshalFrom(&b, &mf))
			for _, s := range mf.GetMetric() {
				if c := s.GetCounter(); c != nil {
					out = append(out, c.GetCreatedTimestamp().AsTime())
				}
				if h := s.GetHistogram(); h != nil {
					out = append(out, h.GetCreatedTimestamp().AsTime())
				}
			}
		}
		return out
	}
	first := created()
	require.Len(t, first, 2)
	for _, ts := range first {
		assert.False(t, ts.Before(before.Truncate(time.Nanosecond)) || ts.After(made), "%s not within [%s, %s]", ts, before, made)
	}
	time.Sleep(10 * time.Millisecond)
	assert.Equal(t, first, created(), "the same at the next scrape")
}

// TestGzipScrapeAllocations: a gzipped scrape reuses a compressor (a new one allocates about
// 800 KB), so that a scrape costs the sidecar about what its text does.
func TestGzipScrapeAllocations(t *testing.T) {
	m := metrics.New()
	m.Connections.WithLabelValues("l", metrics.Inbound).Inc()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	w := httptest.NewRecorder()
	m.ServeHTTP(w, req) // the pool's first compressor
	require.Equal(t, "gzip", w.Header().Get("Content-Encoding"))
	allocated := testing.Benchmark(func(b *testing.B) {
		b.Helper()
		b.ReportAllocs()
		for b.Loop() {
			m.ServeHTTP(httptest.NewRecorder(), req)
		}
	}).AllocedBytesPerOp()
	// A new compressor per scrape: about 800 KB. Pooled: a few KB, but the race detector's
	// sync.Pool drops a quarter of what is put back (about 200 KB a scrape then).
	assert.Less(t, allocated, int64(400<<10), "bytes allocated per gzipped scrape")
}

// TestConcurrent: counters, gauges and histograms lose no update under concurrent use (run
// with -race).
func TestConcurrent(t *testing.T) {
	m := metrics.New()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				m.Bytes.WithLabelValues("l", metrics.Inbound).Add(2)
				m.Bytes.WithLabelValues("l", metrics.Inbound).Add(0.5)
				m.ActiveConnections.WithLabelValues("l", metrics.Inbound).Inc()
				m.UpstreamConnect.WithLabelValues("c").Observe(0.01)
				_ = m.WriteText(io.Discard)
			}
		})
	}
	wg.Wait()
	assert.InDelta(t, 8*1000*2.5, m.Bytes.WithLabelValues("l", metrics.Inbound).Value(), 0)
	assert.InDelta(t, 8000, m.ActiveConnections.WithLabelValues("l", metrics.Inbound).Value(), 0)
	assert.Equal(t, uint64(8000), m.UpstreamConnect.WithLabelValues("c").Count())
}

func serve(t *testing.T, h http.Handler, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/metrics", nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	require.Equal(t, http.StatusOK, w.Code)
	return w
}

func body(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	if w.Header().Get("Content-Encoding") != "gzip" {
		return w.Body.String()
	}
	zr, err := gzip.NewReader(w.Body)
	require.NoError(t, err)
	b, err := io.ReadAll(zr)
	require.NoError(t, err)
	return string(b)
}

// decodeProto decodes delimited MetricFamily messages into their text form, with the created
// timestamps (the time each series was made, in either registry) checked as recent and cleared.
func decodeProto(t *testing.T, b string) []string {
	t.Helper()
	var out []string
	r := strings.NewReader(b)
	for r.Len() > 0 {
		var mf dto.MetricFamily
		err := protodelim.UnmarshalFrom(r, &mf)
		require.NoError(t, err)
		for _, m := range mf.GetMetric() {
			var ct **timestamppb.Timestamp
			switch {
			case m.GetCounter() != nil:
				ct = &m.GetCounter().CreatedTimestamp
			case m.GetHistogram() != nil:
				ct = &m.GetHistogram().CreatedTimestamp
			default:
				continue
			}
			require.NotNil(t, *ct, "created timestamp of %s", mf.GetName())
			assert.WithinDuration(t, time.Now(), (*ct).AsTime(), time.Minute)
			*ct = nil
		}
		out = append(out, prototext.Format(&mf))
	}
	return out
}

func TestRetain(t *testing.T) {
	m := metrics.New()
	for _, l := range []string{"a", "b", "c"} {
		m.Connections.WithLabelValues(l, metrics.Inbound).Inc()
		m.Connections.WithLabelValues(l, metrics.Outbound).Inc()
	}
	held := m.Connections.WithLabelValues("b", metrics.Inbound)
	assert.Equal(t, 4, m.Connections.Retain("listener", func(l string) bool { return l == "a" }))
	assert.Equal(t, 2, m.Connections.Len())
	held.Inc() // a holder of a deleted series may still use it
	var b strings.Builder
	require.NoError(t, m.WriteText(&b))
	assert.NotContains(t, b.String(), `listener="b"`)
	assert.Zero(t, m.Connections.WithLabelValues("b", metrics.Inbound).Value(), "asked again: a new series")
	assert.PanicsWithValue(t, `metrics: attestmesh_sidecar_connections_total has no label "cluster"`, func() {
		m.Connections.Retain("cluster", func(string) bool { return true })
	})
}
