package attestapi

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
)

// A connection's peer names the replica of the list it is, by address or by host name.
func TestConnsMatch(t *testing.T) {
	c := &conns{list: []string{"localhost:18765", "10.0.0.2:18765", "[fd00::3]:18765"}}
	for peer, want := range map[string]string{
		"127.0.0.1:18765": "localhost:18765",
		"10.0.0.2:18765":  "10.0.0.2:18765",
		"[fd00::3]:18765": "[fd00::3]:18765",
		"10.0.0.2:18766":  "", // another port
		"10.0.0.9:18765":  "", // a proxy, say
		"":                "",
	} {
		assert.Equal(t, want, c.match(t.Context(), peer), peer)
	}
	assert.Empty(t, (&conns{}).match(t.Context(), "127.0.0.1:18765"), "one address or a DNS name: no list")
}

// A new connection tries the replicas on which no attempt timed out first, then those on
// which one did, the longest ago first.
func TestConnsDialOrder(t *testing.T) {
	var got []string
	c := &conns{list: []string{"a:1", "b:1", "c:1", "d:1"}, dialf: func(order []string) (*grpc.ClientConn, error) {
		got = order
		return nil, errors.New("not dialled")
	}}
	now := time.Now()
	c.suspects = map[string]time.Time{"a:1": now, "c:1": now.Add(-time.Minute)}
	_, err := c.dial()
	require.EqualError(t, err, "not dialled")
	require.Len(t, got, 4)
	assert.ElementsMatch(t, []string{"b:1", "d:1"}, got[:2])
	assert.Equal(t, []string{"c:1", "a:1"}, got[2:])
}
