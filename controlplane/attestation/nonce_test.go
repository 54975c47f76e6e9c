package attestation

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
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
	n := NewNonces([]byte("nonce key of at least 32 bytes.."), time.Minute, 0, clock.Now)

	nonce, exp, err := n.Issue("s/svc")
	require.NoError(t, err)
	assert.Equal(t, exp, clock.Now().Add(time.Minute))

	other, _, err := n.Issue("s/svc")
	require.NoError(t, err)
	assert.NotEqual(t, nonce, other, "two nonces must differ")
	forged, _, err := NewNonces([]byte("another key, also of 32 bytes..."), time.Minute, 0, clock.Now).Issue("s/svc")
	require.NoError(t, err)

	tests := []struct {
		name     string
		configID string
		nonce    []byte
		advance  time.Duration
		reason   attestapi.Reason
		msg      string
	}{
		{"wrong length", "s/svc", nonce[:5], 0, attestapi.ReasonNonceInvalid, "nonce is 5 bytes, want 32"},
		{"never issued", "s/svc", make([]byte, 32), 0, attestapi.ReasonNonceInvalid, `not issued by this control plane for config ID "s/svc"`},
		{"other config ID", "s/other", nonce[:], 0, attestapi.ReasonNonceInvalid, `not issued by this control plane for config ID "s/other"`},
		{"first use", "s/svc", nonce[:], 0, attestapi.ReasonNone, ""},
		{"replay", "s/svc", nonce[:], 0, attestapi.ReasonNonceReplayed, "already used"},
		{"expired", "s/svc", other[:], time.Minute, attestapi.ReasonNonceExpired, "expired at"},
		{"another key", "s/svc", forged[:], 0, attestapi.ReasonNonceInvalid, "not issued by this control plane"},
	}
	for _, tt := range tests {
		clock.Advance(tt.advance)
		err := n.Consume(tt.configID, tt.nonce)
		if tt.reason == attestapi.ReasonNone {
			require.NoError(t, err, tt.name)
			continue
		}
		require.Error(t, err, tt.name)
		assert.Equal(t, tt.reason, ReasonOf(err), tt.name)
		assert.Contains(t, err.Error(), tt.msg, tt.name)
	}
}

func TestNoncesConcurrentConsumeOnlyOneWins(t *testing.T) {
	n := NewNonces([]byte("nonce key of at least 32 bytes.."), time.Minute, 0, nil)
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

// Issuing keeps no state: any number of nonces costs nothing; only consumed ones are kept,
// until they expire, and a full replay cache refuses (never forgets an unexpired nonce).
func TestNonceFloodKeepsNoState(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	n := NewNonces([]byte("nonce key of at least 32 bytes.."), time.Minute, 4, clock.Now)
	for range 1 << 16 {
		_, _, err := n.Issue("s/svc")
		require.NoError(t, err)
	}
	assert.Zero(t, n.used.len(), "issuing stores nothing")

	var issued [][attestapi.NonceSize]byte
	for range 5 {
		nonce, _, err := n.Issue("s/svc")
		require.NoError(t, err)
		issued = append(issued, nonce)
	}
	for _, nonce := range issued[:4] {
		require.NoError(t, n.Consume("s/svc", nonce[:]))
	}
	err := n.Consume("s/svc", issued[4][:])
	assert.Equal(t, attestapi.ReasonNonceCapacity, ReasonOf(err), "%v", err)
	clock.Advance(time.Minute)
	fresh, _, err := n.Issue("s/svc")
	require.NoError(t, err)
	require.NoError(t, n.Consume("s/svc", fresh[:]), "expired entries make room")
}

func TestGrants(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	g := NewGrants([]byte("grant key of at least 32 bytes.."), 5*time.Minute, 0, clock.Now)
	a, err := g.Issue("s/svc")
	require.NoError(t, err)
	b, err := g.Issue("s/svc")
	require.NoError(t, err)
	c, err := g.Issue("s/svc")
	require.NoError(t, err)
	forged, err := NewGrants([]byte("another key, also of 32 bytes..."), 5*time.Minute, 0, clock.Now).Issue("s/svc")
	require.NoError(t, err)
	tampered := bytes.Clone(a)
	tampered[len(grantMagic)+8] ^= 1
	tests := []struct {
		name     string
		configID string
		grant    []byte
		advance  time.Duration
		msg      string
	}{
		{"redeemed", "s/svc", a, 0, ""},
		{"twice", "s/svc", a, 0, "the sidecar grant was used already"},
		{"another service", "s/other", b, 0, `the sidecar grant is for config ID "s/svc", not "s/other"`},
		{"another key", "s/svc", forged, 0, "not issued by this control plane"},
		{"tampered", "s/svc", tampered, 0, "not issued by this control plane"},
		{"garbage", "s/svc", []byte("grant"), 0, "the sidecar grant is malformed"},
		{"expired", "s/svc", c, 5 * time.Minute, "the sidecar grant expired at"},
	}
	for _, tt := range tests {
		clock.Advance(tt.advance)
		err := g.Redeem(tt.configID, tt.grant)
		if tt.msg == "" {
			require.NoError(t, err, tt.name)
			continue
		}
		require.Error(t, err, tt.name)
		assert.Equal(t, attestapi.ReasonSidecarGrant, ReasonOf(err), tt.name)
		assert.Contains(t, err.Error(), tt.msg, tt.name)
	}
}

func TestReasonOf(t *testing.T) {
	assert.Equal(t, attestapi.ReasonNone, ReasonOf(nil))
	assert.Equal(t, attestapi.ReasonInternal, ReasonOf(assert.AnError))
}

// FuzzRedeem feeds arbitrary bytes to the grant and nonce checks, as a sidecar or a caller
// would: they must never panic, and nothing but what this control plane issued may pass.
func FuzzRedeem(f *testing.F) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	key := []byte("fuzz key of at least thirty-two bytes")
	g := NewGrants(key, time.Minute, 0, clock.Now)
	n := NewNonces(key, time.Minute, 0, clock.Now)
	// The same grant and nonce in every fuzzing process (each one runs this setup).
	g.rand, n.rand = zeros{}, zeros{}
	grant, err := g.Issue("s/svc")
	require.NoError(f, err)
	nonce, _, err := n.Issue("s/svc")
	require.NoError(f, err)
	f.Add(grant)
	f.Add(nonce[:])
	f.Add([]byte(grantMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		if g.Redeem("s/svc", b) == nil && !bytes.Equal(b, grant) {
			t.Fatalf("a grant this control plane never issued was redeemed: %x", b)
		}
		if n.Consume("s/svc", b) == nil && !bytes.Equal(b, nonce[:]) {
			t.Fatalf("a nonce this control plane never issued was consumed: %x", b)
		}
	})
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
