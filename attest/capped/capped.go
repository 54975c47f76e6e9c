// Package capped holds the bounded map that the caches of verification results share
// (attest/dcap's signatures and parses, controlplane/ca's CSRs): at most a fixed number of
// entries, and when full it starts over. Forgetting costs only the check again, so anyone who
// fills the map makes no one pay more than without it, and there is no order to keep up on
// every lookup as an LRU would.
package capped

import "sync"

// Map is a map of at most Max entries. The zero value is not usable: make one with New.
// Safe for concurrent use.
type Map[K comparable, V any] struct {
	mu  sync.Mutex
	max int
	m   map[K]V
}

// New returns an empty map of at most max entries (max > 0).
func New[K comparable, V any](max int) *Map[K, V] {
	if max <= 0 {
		panic("capped: a map needs room for an entry")
	}
	return &Map[K, V]{max: max}
}

// Get returns the value for k, if the map holds one.
func (c *Map[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

// Put sets the value for k. A full map is emptied first.
func (c *Map[K, V]) Put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && (c.m == nil || len(c.m) >= c.max) {
		c.m = make(map[K]V)
	}
	c.m[k] = v
}

// Len returns the number of entries.
func (c *Map[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
