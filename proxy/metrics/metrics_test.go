package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/attestmesh/attestmesh/proxy/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNew(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	require.NoError(t, err)
	m.Connections.WithLabelValues("inbound|8443", metrics.Inbound).Inc()
	m.Bytes.WithLabelValues("inbound|8443", metrics.Inbound).Add(10)
	m.HandshakeFailures.WithLabelValues("inbound|8443", metrics.ReasonPlaintext).Inc()
	m.UpstreamConnect.WithLabelValues("local|8443").Observe(0.001)
	m.XDSUpdates.WithLabelValues("type.googleapis.com/envoy.config.listener.v3.Listener", metrics.ResultACK).Inc()
	m.SVIDExpiry.WithLabelValues("simulation").Set(1.8e9)

	mfs, err := reg.Gather()
	require.NoError(t, err)
	assert.Len(t, mfs, 6, "five vectors in use and the SVID expiry gauge with its tee label")
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")
	for _, mf := range mfs {
		assert.Regexp(t, "^attestmesh_sidecar_", mf.GetName())
	}

	_, err = metrics.New(reg)
	require.ErrorContains(t, err, "metrics: register")
}
