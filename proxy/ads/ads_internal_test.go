package ads

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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

type refuseWith struct{ err error }

func (r refuseWith) Apply(string, []*anypb.Any) error { return r.err }

// TestNACKDetailIsBounded: a NACK's error_detail quotes what the control plane sent (a name, a
// type URL), which may be megabytes: it is cut to maxDetail bytes at a rune boundary, saying
// how much was cut, as is what the log records.
func TestNACKDetailIsBounded(t *testing.T) {
	m := metrics.New()
	var logged strings.Builder
	name := strings.Repeat("é", 100<<10) // 200 KiB, two bytes a rune
	c, err := New(Config{
		Addr: "xds:1", Node: &Node{ID: "n"}, TLS: &tls.Config{},
		Handler: refuseWith{fmt.Errorf("listener %q: duplicate name", name)},
		Logger:  slog.New(slog.NewTextHandler(&logged, nil)), Metrics: m,
		Subscriptions: []Subscription{{TypeURL: "type.googleapis.com/a"}},
	})
	require.NoError(t, err)
	version := strings.Repeat("v", 1<<20)
	for _, typ := range []string{"type.googleapis.com/a", "type.googleapis.com/" + name} {
		req, _ := c.handle(&DiscoveryResponse{TypeURL: typ, VersionInfo: version, Nonce: "n"})
		require.NotNil(t, req.ErrorDetail)
		msg := req.ErrorDetail.Message
		assert.LessOrEqual(t, len(msg), maxDetail+len("... (1234567 more bytes)"))
		assert.True(t, utf8.ValidString(msg), "cut at a rune boundary")
		assert.Regexp(t, `\.\.\. \(\d+ more bytes\)$`, msg)
	}
	assert.Less(t, logged.Len(), 16<<10, "the log lines are bounded too")
	assert.Contains(t, logged.String(), "more bytes")
}

func TestClip(t *testing.T) {
	assert.Equal(t, "short", clip("short"))
	exact := strings.Repeat("a", maxDetail)
	assert.Equal(t, exact, clip(exact))
	assert.Equal(t, exact+"... (1 more bytes)", clip(exact+"b"))
	// A two-byte rune across the bound is left out whole.
	s := strings.Repeat("a", maxDetail-1) + "é"
	assert.Equal(t, strings.Repeat("a", maxDetail-1)+"... (2 more bytes)", clip(s))
	// Bytes that are not UTF-8 have no rune start to go back to: at most three are left out.
	junk := "x" + strings.Repeat("\x80", 2000)
	assert.Equal(t, junk[:maxDetail-3]+"... (980 more bytes)", clip(junk))
}
