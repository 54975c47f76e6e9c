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
