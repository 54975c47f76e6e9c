// Package storetest opens real stores for tests: the encrypted bbolt store that the control
// plane runs on, in a temporary directory, under a random key.
package storetest

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/store"
)

// Open returns an encrypted bbolt store in tb.TempDir(); it is closed when the test ends.
func Open(tb testing.TB) store.Backend {
	tb.Helper()
	bolt, err := store.OpenBolt(store.BoltConfig{Dir: tb.TempDir()})
	require.NoError(tb, err)
	var key store.Key
	_, err = rand.Read(key[:])
	require.NoError(tb, err)
	st, err := store.Encrypted(context.Background(), bolt, key)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = st.Close() })
	return st
}
