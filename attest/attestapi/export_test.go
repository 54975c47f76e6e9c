package attestapi

import "testing"

// InOrder makes the clients dialled during t try the replicas of a list in the order given
// (their suspects still last) instead of shuffled. Not for parallel tests.
func InOrder(t *testing.T) {
	t.Helper()
	prev := shuffle
	shuffle = func([]string) {}
	t.Cleanup(func() { shuffle = prev })
}
