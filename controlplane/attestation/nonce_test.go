package attestation

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestNonces(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	n := NewNonces(time.Minute, clock.Now)

	nonce, exp, err := n.Issue("s/svc")
	require.NoError(t, err)
	assert.Equal(t, exp, clock.Now().Add(time.Minute))

	other, _, err := n.Issue("s/svc")
	require.NoError(t, err)
	assert.NotEqual(t, nonce, other, "two nonces must differ")

	tests := []struct {
		name     string
		configID string
		nonce    []byte
		advance  time.Duration
		reason   Reason
		msg      string
	}{
		{"wrong length", "s/svc", nonce[:5], 0, ReasonNonceInvalid, "nonce is 5 bytes, want 32"},
		{"never issued", "s/svc", make([]byte, 32), 0, ReasonNonceInvalid, "not issued by this control plane"},
		{"other config ID", "s/other", nonce[:], 0, ReasonNonceInvalid, `issued for config ID "s/svc", not "s/other"`},
		{"first use", "s/svc", nonce[:], 0, ReasonNone, ""},
		{"replay", "s/svc", nonce[:], 0, ReasonNonceReplayed, "already used"},
		{"expired", "s/svc", other[:], time.Minute, ReasonNonceExpired, "expired at"},
		{"expired is gone", "s/svc", other[:], 0, ReasonNonceInvalid, "not issued"},
	}
	for _, tt := range tests {
		clock.Advance(tt.advance)
		err := n.Consume(tt.configID, tt.nonce)
		if tt.reason == ReasonNone {
			require.NoError(t, err, tt.name)
			continue
		}
		require.Error(t, err, tt.name)
		assert.Equal(t, tt.reason, ReasonOf(err), tt.name)
		assert.Contains(t, err.Error(), tt.msg, tt.name)
	}
}

func TestNoncesConcurrentConsumeOnlyOneWins(t *testing.T) {
	n := NewNonces(time.Minute, nil)
	nonce, _, err := n.Issue("a/b")
	require.NoError(t, err)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if n.Consume("a/b", nonce[:]) == nil {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int32(1), wins.Load())
}

func TestReasonOf(t *testing.T) {
	assert.Equal(t, ReasonNone, ReasonOf(nil))
	assert.Equal(t, ReasonInternal, ReasonOf(assert.AnError))
}
