package ratelimit

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBurstThenRate(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(Config{Rate: 2, Burst: 3})
	l.now = func() time.Time { return now }
	for i := range 3 {
		assert.True(t, l.Allow("a"), "burst %d", i)
	}
	assert.False(t, l.Allow("a"), "the burst is spent")
	assert.True(t, l.Allow("b"), "another key has its own bucket")
	now = now.Add(500 * time.Millisecond)
	assert.True(t, l.Allow("a"), "one token back after 1/rate")
	assert.False(t, l.Allow("a"))
}

func TestKeysAreBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(Config{Rate: 1, Burst: 1, MaxKeys: 10})
	l.now = func() time.Time { return now }
	for i := range 1000 {
		l.Allow(fmt.Sprint(i))
	}
	assert.Equal(t, 10, l.Keys())
	assert.False(t, l.Allow("999"), "a recent key keeps its spent bucket")
}

func TestZeroRateAllowsAll(t *testing.T) {
	l := New(Config{})
	for range 100 {
		assert.True(t, l.Allow("x"))
	}
	var nilL *Limiter
	assert.True(t, nilL.Allow("x"))
}

func TestSourcePrefix(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"192.0.2.17", "192.0.2.0/24"},
		{"127.1.2.3", "127.1.2.0/24"},
		{"::ffff:192.0.2.17", "192.0.2.0/24"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"unknown", "unknown"},
	} {
		assert.Equal(t, tt.want, SourcePrefix(tt.in), tt.in)
	}
}

// TestPairBoundsAPrefix: many addresses of one prefix share PrefixFactor addresses' worth of
// requests, while another prefix keeps its own.
func TestPairBoundsAPrefix(t *testing.T) {
	now := time.Unix(1000, 0)
	p := NewPair(Config{Rate: 1, Burst: 2})
	p.addr.now = func() time.Time { return now }
	p.prefix.now = p.addr.now
	allowed := 0
	for i := range 100 {
		for range 2 {
			if p.Allow(fmt.Sprintf("10.0.0.%d", i)) {
				allowed++
			}
		}
	}
	assert.Equal(t, 2*PrefixFactor, allowed, "100 addresses of one /24 get the prefix's burst, not 100 bursts")
	assert.True(t, p.Allow("10.0.1.1"), "another prefix has its own bucket")
	assert.True(t, p.Allow("10.0.1.1"))
	assert.False(t, p.Allow("10.0.1.1"), "and each address its own limit")
}
