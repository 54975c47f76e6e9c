package ads

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/proxy/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBackoff(t *testing.T) {
	c := &Client{cfg: Config{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}}
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 400 * time.Millisecond, 800 * time.Millisecond},
		{4, 500 * time.Millisecond, time.Second},  // capped
		{60, 500 * time.Millisecond, time.Second}, // no overflow
	}
	for _, tt := range tests {
		for range 50 {
			d := c.backoff(tt.attempt)
			assert.GreaterOrEqual(t, d, tt.min, "attempt %d", tt.attempt)
			assert.LessOrEqual(t, d, tt.max, "attempt %d", tt.attempt)
		}
	}
}

type acceptAll struct{}

func (acceptAll) Apply(string, []*anypb.Any) error { return nil }

// TestHandleUnsubscribedTypes: a response's type_url is the control plane's text (up to the
// message size): NACKs of types the client did not subscribe to must not keep it, in the
// client's state or as a metric label, or a control plane can grow the sidecar's memory
// without bound with a new type URL per response.
func TestHandleUnsubscribedTypes(t *testing.T) {
	m := metrics.New()
	c, err := New(Config{
		Addr: "xds:1", Node: &Node{ID: "n"}, TLS: &tls.Config{}, Handler: acceptAll{},
		Logger: slog.New(slog.DiscardHandler), Metrics: m,
		Subscriptions: []Subscription{{TypeURL: "type.googleapis.com/a"}},
	})
	require.NoError(t, err)
	long := strings.Repeat("x", 1<<10)
	for i := range 100 {
		typ := fmt.Sprintf("type.googleapis.com/unknown.%d.%s", i, long)
		for range 2 {
			req, repeated := c.handle(&DiscoveryResponse{TypeURL: typ, VersionInfo: "1", Nonce: "n"})
			require.NotNil(t, req.ErrorDetail)
			require.Contains(t, req.ErrorDetail.Message, "not subscribed")
			assert.Equal(t, typ, req.TypeURL, "the NACK names the type it refuses")
			assert.False(t, repeated, "an unsubscribed type is not held back: it has no state")
		}
	}
	req, _ := c.handle(&DiscoveryResponse{TypeURL: "type.googleapis.com/a", VersionInfo: "2", Nonce: "n"})
	require.Nil(t, req.ErrorDetail)
	assert.Len(t, c.nacked, 0) //nolint:testifylint // Empty would print 100 KiB of type URLs
	assert.Equal(t, map[string]string{"type.googleapis.com/a": "2"}, c.versions)
	assert.Equal(t, 2, m.XDSUpdates.Len(), "one series for the subscribed type, one for all others")
	assert.InDelta(t, 200, m.XDSUpdates.WithLabelValues(unsubscribedLabel, metrics.ResultNACK).Value(), 0)
}
