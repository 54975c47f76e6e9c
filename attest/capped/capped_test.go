package capped

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMap(t *testing.T) {
	c := New[int, string](3)
	_, ok := c.Get(1)
	assert.False(t, ok, "empty")
	for i := range 3 {
		c.Put(i, "v")
	}
	c.Put(2, "again") // a key it holds: no room needed
	v, ok := c.Get(2)
	require.True(t, ok)
	assert.Equal(t, "again", v)
	assert.Equal(t, 3, c.Len())

	c.Put(3, "new") // full: starts over
	assert.Equal(t, 1, c.Len())
	_, ok = c.Get(0)
	assert.False(t, ok, "forgotten")
	v, ok = c.Get(3)
	require.True(t, ok)
	assert.Equal(t, "new", v)

	assert.PanicsWithValue(t, "capped: a map needs room for an entry", func() { New[int, int](0) })
}

// TestMapConcurrent: never more than its bound under concurrent use (run with -race).
func TestMapConcurrent(t *testing.T) {
	c := New[int, int](100)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				c.Put(g*1000+i, i)
				c.Get(i)
				if n := c.Len(); n > 100 {
					t.Errorf("%d entries, at most 100", n)
					return
				}
			}
		})
	}
	wg.Wait()
}
