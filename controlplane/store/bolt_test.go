package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/attestmesh/attestmesh/controlplane/store"
	"github.com/attestmesh/attestmesh/controlplane/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openBolt(t *testing.T, dir string) *store.Bolt {
	t.Helper()
	b, err := store.OpenBolt(store.BoltConfig{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// backends runs a test against the plain and the encrypted layer, which share the contract,
// and against the encrypted layer on a real (embedded) etcd.
func backends(t *testing.T) map[string]store.Backend {
	t.Helper()
	enc, err := store.Encrypted(t.Context(), openBolt(t, t.TempDir()), testKey(1))
	require.NoError(t, err)
	encEtcd, err := store.Encrypted(t.Context(), storetest.OpenEtcdEngine(t), testKey(1))
	require.NoError(t, err)
	return map[string]store.Backend{"bolt": openBolt(t, t.TempDir()), "encrypted": enc, "encrypted-etcd": encEtcd}
}

func testKey(seed byte) store.Key {
	var k store.Key
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

func TestBackendContract(t *testing.T) {
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			require.NoError(t, b.Put(ctx, "sessions/a", []byte("one")))
			require.NoError(t, b.Put(ctx, "sessions/b", []byte("two")))
			require.NoError(t, b.Put(ctx, "secrets/a/key", []byte{}))
			require.NoError(t, b.Put(ctx, "sessions/a", []byte("one-v2")))

			got, err := b.Get(ctx, "sessions/a")
			require.NoError(t, err)
			assert.Equal(t, []byte("one-v2"), got)

			empty, err := b.Get(ctx, "secrets/a/key")
			require.NoError(t, err, "an empty value exists")
			assert.Empty(t, empty)

			_, err = b.Get(ctx, "sessions/missing")
			require.ErrorIs(t, err, store.ErrNotFound)

			list, err := b.List(ctx, "sessions/")
			require.NoError(t, err)
			assert.Equal(t, []store.KV{{Key: "sessions/a", Value: []byte("one-v2")}, {Key: "sessions/b", Value: []byte("two")}}, list)

			all, err := b.List(ctx, "")
			require.NoError(t, err)
			assert.Len(t, all, 3, "List(\"\") returns every caller record and no internal one")

			require.NoError(t, b.Delete(ctx, "sessions/b"))
			require.NoError(t, b.Delete(ctx, "sessions/b"), "deleting a missing key is not an error")
			_, err = b.Get(ctx, "sessions/b")
			require.ErrorIs(t, err, store.ErrNotFound)

			require.Error(t, b.Put(ctx, "", []byte("x")), "empty key")
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			require.ErrorIs(t, b.Put(cancelled, "k", []byte("x")), context.Canceled)
		})
	}
}

func TestCompareAndSwap(t *testing.T) {
	tests := []struct {
		name    string
		initial []byte // nil: key absent
		old     []byte
		want    error
		final   []byte
	}{
		{name: "create when absent", initial: nil, old: nil, final: []byte("new")},
		{name: "create when present", initial: []byte("cur"), old: nil, want: store.ErrConflict, final: []byte("cur")},
		{name: "swap matching", initial: []byte("cur"), old: []byte("cur"), final: []byte("new")},
		{name: "swap stale", initial: []byte("cur"), old: []byte("stale"), want: store.ErrConflict, final: []byte("cur")},
		{name: "swap absent", initial: nil, old: []byte("cur"), want: store.ErrConflict},
		{name: "empty old requires an empty value", initial: []byte{}, old: []byte{}, final: []byte("new")},
	}
	for name, b := range backends(t) {
		for i, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				ctx := t.Context()
				key := "cas/" + string(rune('a'+i))
				if tt.initial != nil {
					require.NoError(t, b.Put(ctx, key, tt.initial))
				}
				err := b.CompareAndSwap(ctx, key, tt.old, []byte("new"))
				if tt.want != nil {
					require.ErrorIs(t, err, tt.want)
				} else {
					require.NoError(t, err)
				}
				got, err := b.Get(ctx, key)
				if tt.final == nil {
					require.ErrorIs(t, err, store.ErrNotFound)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, tt.final, got)
			})
		}
	}
}

func TestCompareAndSwapConcurrent(t *testing.T) {
	const n = 16
	for name, b := range backends(t) {
		for _, create := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/create=%v", name, create), func(t *testing.T) {
				ctx := t.Context()
				key := "race/update"
				var old []byte
				if create {
					key = "race/create"
				} else {
					old = []byte("v0")
					require.NoError(t, b.Put(ctx, key, old))
				}
				errs := make([]error, n)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := range n {
					wg.Go(func() {
						<-start
						errs[i] = b.CompareAndSwap(ctx, key, old, []byte{byte('A' + i)})
					})
				}
				close(start)
				wg.Wait()
				wins := 0
				for _, err := range errs {
					if err == nil {
						wins++
						continue
					}
					require.ErrorIs(t, err, store.ErrConflict)
				}
				assert.Equal(t, 1, wins, "exactly one writer wins")
				got, err := b.Get(ctx, key)
				require.NoError(t, err)
				require.Len(t, got, 1)
				assert.NotEqual(t, old, got)
			})
		}
	}
}

func TestBoltFileModesAndLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	b := openBolt(t, dir)

	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	fi, err = os.Stat(b.Path())
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	start := time.Now()
	_, err = store.OpenBolt(store.BoltConfig{Dir: dir, LockTimeout: 100 * time.Millisecond})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "locked by another process")
	assert.Less(t, time.Since(start), 5*time.Second, "a locked file fails fast")
}

func TestBoltConfigRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	tests := []struct {
		name string
		cfg  store.BoltConfig
		want string
	}{
		{name: "no dir", cfg: store.BoltConfig{}, want: "no data directory"},
		{name: "negative timeout", cfg: store.BoltConfig{Dir: t.TempDir(), LockTimeout: -1}, want: "negative"},
		{name: "dir is a file", cfg: store.BoltConfig{Dir: file}, want: "store: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := store.OpenBolt(tt.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestBoltCloseTwice(t *testing.T) {
	b, err := store.OpenBolt(store.BoltConfig{Dir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, b.Close())
	require.NoError(t, b.Close())
	require.Error(t, b.Put(t.Context(), "k", []byte("v")), "writes after Close fail")
}

func TestErrorMessages(t *testing.T) {
	b := openBolt(t, t.TempDir())
	ctx := t.Context()
	_, err := b.Get(ctx, "sessions/x")
	require.EqualError(t, err, `store: not found: "sessions/x"`)
	require.NoError(t, b.Put(ctx, "sessions/x", []byte("v")))
	require.EqualError(t, b.CompareAndSwap(ctx, "sessions/x", nil, []byte("w")), `store: conflict: "sessions/x" already exists`)
	require.EqualError(t, b.CompareAndSwap(ctx, "sessions/x", []byte("old"), []byte("w")), `store: conflict: "sessions/x" holds another value`)
}
