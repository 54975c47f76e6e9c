package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/store"
)

// openAnchored opens the encrypted bbolt store under dir with a file anchor; the caller
// closes it.
func openAnchored(t *testing.T, dir string, anchor store.Anchor, allow bool) (*store.EncryptedBackend, error) {
	t.Helper()
	b, err := store.OpenBolt(store.BoltConfig{Dir: dir})
	require.NoError(t, err)
	e, err := store.Open(t.Context(), b, testKey(9), store.Options{Anchor: anchor, AllowRollback: allow})
	if err != nil {
		require.NoError(t, b.Close())
		return nil, err
	}
	return e, nil
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o600))
}

func TestRollbackRefused(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	anchor := &store.FileAnchor{Path: filepath.Join(t.TempDir(), "store.generation")}
	s, err := openAnchored(t, dir, anchor, false)
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "sessions/a", []byte("access: mallory")))
	require.NoError(t, s.Close())
	backup := filepath.Join(t.TempDir(), "store.db")
	copyFile(t, filepath.Join(dir, store.BoltFileName), backup)

	// The owner revokes mallory, and more happens.
	s, err = openAnchored(t, dir, anchor, false)
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "sessions/a", []byte("access: alice only")))
	require.NoError(t, s.Put(ctx, "sessions/b", []byte("b")))
	require.NoError(t, s.Delete(ctx, "sessions/b"))
	gen := s.Generation()
	require.NoError(t, s.Close())
	got, err := anchor.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, gen, got, "every write raises the anchor")

	// The old store.db is put back: refused, naming both generations.
	copyFile(t, backup, filepath.Join(dir, store.BoltFileName))
	_, err = openAnchored(t, dir, anchor, false)
	require.ErrorIs(t, err, store.ErrRollback)
	assert.Contains(t, err.Error(), fmt.Sprintf("the store is at generation 1, but file %s recorded generation %d", anchor.Path, gen))
	assert.Contains(t, err.Error(), "--allow-store-rollback")

	// The operator restored it on purpose: it opens, and its generation passes the anchor's.
	s, err = openAnchored(t, dir, anchor, true)
	require.NoError(t, err)
	assert.Greater(t, s.Generation(), gen)
	v, err := s.Get(ctx, "sessions/a")
	require.NoError(t, err)
	assert.Equal(t, "access: mallory", string(v), "the restored state is what the operator asked for")
	require.NoError(t, s.Close())
	s, err = openAnchored(t, dir, anchor, false)
	require.NoError(t, err, "after an allowed restore, the next start is normal")
	require.NoError(t, s.Close())
}

func TestSplicedRecordRefused(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	anchor := &store.FileAnchor{Path: filepath.Join(t.TempDir(), "store.generation")}
	s, err := openAnchored(t, dir, anchor, false)
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "sessions/a", []byte("v1")))
	require.NoError(t, s.Put(ctx, "sessions/b", []byte("b")))
	require.NoError(t, s.Close())

	raw := openBolt(t, dir)
	old, err := raw.Get(ctx, "sessions/a")
	require.NoError(t, err)
	require.NoError(t, raw.Close())

	s, err = openAnchored(t, dir, anchor, false)
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "sessions/a", []byte("v2")))
	require.NoError(t, s.Close())

	tests := []struct {
		name   string
		tamper func(b *store.Bolt)
	}{
		{"an old version of one record copied in", func(b *store.Bolt) { require.NoError(t, b.Put(ctx, "sessions/a", old)) }},
		{"a record removed", func(b *store.Bolt) { require.NoError(t, b.Delete(ctx, "sessions/b")) }},
		{"a record moved under a new name", func(b *store.Bolt) { require.NoError(t, b.Put(ctx, "sessions/c", old)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			work := t.TempDir()
			copyFile(t, filepath.Join(dir, store.BoltFileName), filepath.Join(work, store.BoltFileName))
			b := openBolt(t, work)
			tt.tamper(b)
			require.NoError(t, b.Close())
			_, err := openAnchored(t, work, anchor, false)
			require.ErrorIs(t, err, store.ErrCorrupt)
			assert.Contains(t, err.Error(), "do not match the store's sealed state")
		})
	}

	// The security review's splice: an old record copied in and the sealed state removed, so
	// that nothing is left to check the records against. Refused with or without an anchor,
	// and with an anchor file deleted too.
	splice := func(t *testing.T) string {
		t.Helper()
		work := t.TempDir()
		copyFile(t, filepath.Join(dir, store.BoltFileName), filepath.Join(work, store.BoltFileName))
		b := openBolt(t, work)
		require.NoError(t, b.Put(ctx, "sessions/a", old))
		require.NoError(t, b.Delete(ctx, "\x00attestmesh/state"))
		require.NoError(t, b.Close())
		return work
	}
	for _, a := range []store.Anchor{nil, anchor, &store.FileAnchor{Path: filepath.Join(t.TempDir(), "deleted.generation")}} {
		_, err := openAnchored(t, splice(t), a, false)
		require.ErrorIs(t, err, store.ErrRollback, "anchor %v", a)
		assert.Contains(t, err.Error(), "the store holds 2 records but no sealed state")
	}
}

// An anchor that records nothing for a store that was written to was lost or reset (the
// security review deleted the anchor file before putting back an old store): refused, until
// the operator says the store is current.
func TestEmptyAnchorRefused(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	anchor := &store.FileAnchor{Path: filepath.Join(t.TempDir(), "store.generation")}
	s, err := openAnchored(t, dir, anchor, false)
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "sessions/a", []byte("v1")))
	require.NoError(t, s.Close())
	require.NoError(t, os.Remove(anchor.Path))

	_, err = openAnchored(t, dir, anchor, false)
	require.ErrorIs(t, err, store.ErrRollback)
	assert.Contains(t, err.Error(), fmt.Sprintf("the store is at generation 1, but file %s records none", anchor.Path))
	s, err = openAnchored(t, dir, anchor, true)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	got, err := anchor.Load(ctx)
	require.NoError(t, err)
	assert.Positive(t, got, "the allowed start recorded the generation")
	s, err = openAnchored(t, dir, anchor, false)
	require.NoError(t, err, "and the next start is normal")
	require.NoError(t, s.Close())
}

func TestStateForStoresWrittenBefore(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := openEncrypted(t, dir, testKey(9))
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "sessions/a", []byte("a")))
	require.NoError(t, s.Close())
	// A store from before the sealed state: the state record is not there.
	b := openBolt(t, dir)
	require.NoError(t, b.Delete(ctx, "\x00attestmesh/state"))
	require.NoError(t, b.Close())

	anchor := &store.FileAnchor{Path: filepath.Join(t.TempDir(), "g")}
	_, err = openAnchored(t, dir, anchor, false)
	require.ErrorIs(t, err, store.ErrRollback, "nothing tells an old store from one whose state was removed")
	assert.Contains(t, err.Error(), "start once with --allow-store-rollback to seal it as it is")
	s, err = openAnchored(t, dir, anchor, true)
	require.NoError(t, err, "the operator says it is an old store: it gets its sealed state")
	assert.Equal(t, uint64(1), s.Generation())
	require.NoError(t, s.Put(ctx, "sessions/b", []byte("b")))
	require.NoError(t, s.Close())
	s, err = openAnchored(t, dir, anchor, false)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), s.Generation())
	require.NoError(t, s.Close())
}

// Two encrypted stores over one engine stand for two replicas over one etcd: their writes
// interleave, every write moves the shared generation, and the digest stays right.
func TestStateWithTwoWriters(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	engine := openBolt(t, dir)
	a, err := store.Encrypted(ctx, engine, testKey(9))
	require.NoError(t, err)
	b, err := store.Encrypted(ctx, engine, testKey(9))
	require.NoError(t, err)
	const n = 40
	var wg sync.WaitGroup
	for i, s := range []*store.EncryptedBackend{a, b} {
		wg.Go(func() {
			for j := range n {
				assert.NoError(t, s.Put(ctx, fmt.Sprintf("k/%d/%d", i, j), []byte("v")))
			}
		})
	}
	wg.Wait()
	require.NoError(t, a.CompareAndSwap(ctx, "k/0/0", []byte("v"), nil), "a nil new value deletes")
	_, err = b.Get(ctx, "k/0/0")
	require.ErrorIs(t, err, store.ErrNotFound)

	c, err := store.Encrypted(context.WithoutCancel(ctx), engine, testKey(9))
	require.NoError(t, err, "the digest matches after interleaved writes")
	assert.Equal(t, uint64(2*n+1), c.Generation())
}

func TestFileAnchor(t *testing.T) {
	ctx := t.Context()
	a := &store.FileAnchor{Path: filepath.Join(t.TempDir(), "g")}
	g, err := a.Load(ctx)
	require.NoError(t, err)
	assert.Zero(t, g)
	require.NoError(t, a.Raise(ctx, 5))
	require.NoError(t, a.Raise(ctx, 3), "raising to less is no error")
	g, err = a.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(5), g, "and does not lower it")
	fi, err := os.Stat(a.Path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	require.NoError(t, os.WriteFile(a.Path, []byte("garbage"), 0o600))
	_, err = a.Load(ctx)
	require.ErrorContains(t, err, "does not hold")
}
