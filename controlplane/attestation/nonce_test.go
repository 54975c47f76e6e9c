package attestation

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
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

// TestNonceCheckRemembersNothing: Check accepts an issued nonce any number of times and keeps
// nothing; Consume then takes it once.
func TestNonceCheckRemembersNothing(t *testing.T) {
	n := NewNonces([]byte("nonce key of at least 32 bytes.."), time.Minute, 0, nil)
	nonce, _, err := n.Issue("s/svc")
	require.NoError(t, err)
	for range 10 {
		require.NoError(t, n.Check("s/svc", nonce[:]))
	}
	assert.Zero(t, n.used.len())
	require.NoError(t, n.Consume("s/svc", nonce[:]))
	err = n.Check("s/svc", nonce[:])
	assert.Equal(t, attestapi.ReasonNonceReplayed, ReasonOf(err), "%v", err)
}

// TestReplayCacheExpiresByBucket: entries leave exactly when they expire, whatever order they
// came in, and an entry is never dropped before its expiry.
func TestReplayCacheExpiresByBucket(t *testing.T) {
	c := newReplayCache(100)
	start := time.Unix(1_700_000_000, 0)
	id := func(i byte) (b [nonceIDSize]byte) { b[0] = i; return b }
	// Expiries at +30.5 s, +10 s, +20.2 s, added out of order.
	require.Equal(t, replayFresh, c.add(id(1), start.Add(30500*time.Millisecond), start))
	require.Equal(t, replayFresh, c.add(id(2), start.Add(10*time.Second), start))
	require.Equal(t, replayFresh, c.add(id(3), start.Add(20200*time.Millisecond), start))
	for _, tt := range []struct {
		at   time.Duration
		want []byte
	}{
		{9999 * time.Millisecond, []byte{1, 2, 3}},
		{10 * time.Second, []byte{1, 3}},
		{20 * time.Second, []byte{1, 3}},
		{21 * time.Second, []byte{1}},
		{31 * time.Second, nil},
	} {
		now := start.Add(tt.at)
		var got []byte
		for i := byte(1); i <= 3; i++ {
			if c.contains(id(i), now) {
				got = append(got, i)
			}
		}
		assert.Equal(t, tt.want, got, "at +%s", tt.at)
	}
	assert.Zero(t, c.len())
	assert.Empty(t, c.buckets)
}

func TestGrants(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	g := NewGrants([]byte("grant key of at least 32 bytes.."), 5*time.Minute, 0, clock.Now)
	theApp := app{ISVProdID: 7, ISVSVN: 3}
	theApp.MREnclave[0], theApp.MRSigner[31] = 0xaa, 0xbb
	a, err := g.Issue("s/svc", theApp)
	require.NoError(t, err)
	b, err := g.Issue("s/svc", theApp)
	require.NoError(t, err)
	c, err := g.Issue("s/svc", theApp)
	require.NoError(t, err)
	forged, err := NewGrants([]byte("another key, also of 32 bytes..."), 5*time.Minute, 0, clock.Now).Issue("s/svc", theApp)
	require.NoError(t, err)
	tampered := bytes.Clone(a)
	tampered[len(grantMagic)+8] ^= 1
	otherApp := bytes.Clone(b)
	otherApp[grantIDEnd] ^= 1 // another MRENCLAVE
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
		{"another app", "s/svc", otherApp, 0, "not issued by this control plane"},
		{"garbage", "s/svc", []byte("grant"), 0, "the sidecar grant is malformed"},
		{"expired", "s/svc", c, 5 * time.Minute, "the sidecar grant expired at"},
	}
	for _, tt := range tests {
		clock.Advance(tt.advance)
		got, err := g.Redeem(tt.configID, tt.grant)
		if tt.msg == "" {
			require.NoError(t, err, tt.name)
			assert.Equal(t, theApp, got, "the grant names the app that was attested")
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
	grant, err := g.Issue("s/svc", app{})
	require.NoError(f, err)
	nonce, _, err := n.Issue("s/svc")
	require.NoError(f, err)
	f.Add(grant)
	f.Add(nonce[:])
	f.Add([]byte(grantMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := g.Redeem("s/svc", b); err == nil && !bytes.Equal(b, grant) {
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

// The MACs are pooled: concurrent issues and checks for different config IDs each get the MAC
// of their own input, as a fresh HMAC computes it.
func TestNonceMACsPooled(t *testing.T) {
	key := []byte("nonce key of at least 32 bytes..")
	n := NewNonces(key, time.Minute, 0, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("s/svc-%d-%d", g, i%3)
				nonce, _, err := n.Issue(id)
				if !assert.NoError(t, err) {
					return
				}
				assert.NoError(t, n.Check(id, nonce[:]))
				refused := n.Check(id+"x", nonce[:]) != nil
				assert.True(t, refused, "a nonce is good for its config ID only")
				m := hmac.New(sha256.New, key)
				m.Write([]byte(nonceMACLabel))
				m.Write(nonce[:nonceIDSize])
				m.Write([]byte(id))
				assert.Equal(t, m.Sum(nil)[:attestapi.NonceSize-nonceIDSize], nonce[nonceIDSize:])
			}
		})
	}
	wg.Wait()
}
