package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/store"
)

func TestRecoveryRecordOutsideTheSealedRecords(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := openEncrypted(t, dir, testKey(3))
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "sessions/a", []byte("a")))
	rec, err := s.RecoveryRecord(ctx)
	require.NoError(t, err)
	assert.Nil(t, rec, "no record yet")

	require.NoError(t, s.SetRecoveryRecord(ctx, nil, []byte(`{"v":1}`)))
	err = s.SetRecoveryRecord(ctx, nil, []byte(`{"v":2}`))
	require.ErrorIs(t, err, store.ErrConflict, "the record changed meanwhile")
	require.NoError(t, s.SetRecoveryRecord(ctx, []byte(`{"v":1}`), []byte(`{"v":2}`)))
	all, err := s.List(ctx, "")
	require.NoError(t, err)
	assert.Len(t, all, 1, "List does not return the recovery record")
	_, err = s.Get(ctx, "\x00attestmesh/recovery")
	require.Error(t, err, "the record is not a user record")
	gen := s.Generation()
	require.NoError(t, s.Close())

	// It is readable without the store key, and does not count in the sealed state.
	b, err := store.OpenBolt(store.BoltConfig{Dir: dir, ReadOnly: true})
	require.NoError(t, err)
	rec, err = store.ReadRecoveryRecord(ctx, b)
	require.NoError(t, err)
	assert.Equal(t, `{"v":2}`, string(rec))
	st, err := store.Verify(ctx, b, testKey(3))
	require.NoError(t, err)
	assert.Equal(t, store.Status{Generation: gen, Records: 1}, st)
	require.NoError(t, b.Close())

	s, err = openEncrypted(t, dir, testKey(3))
	require.NoError(t, err, "the store opens with the recovery record in it")
	require.NoError(t, s.SetRecoveryRecord(ctx, []byte(`{"v":2}`), nil))
	rec, err = s.RecoveryRecord(ctx)
	require.NoError(t, err)
	assert.Nil(t, rec, "removed")
	require.NoError(t, s.Close())
}

func TestVerify(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := openEncrypted(t, dir, testKey(5))
	require.NoError(t, err)
	require.NoError(t, s.Put(ctx, "sessions/a", []byte("a")))
	require.NoError(t, s.Put(ctx, "sessions/b", []byte("b")))
	require.NoError(t, s.Close())

	raw, err := store.OpenBolt(store.BoltConfig{Dir: dir})
	require.NoError(t, err)
	defer raw.Close()
	for _, tc := range []struct {
		name   string
		key    store.Key
		change func(ctx context.Context, b *store.Bolt)
		want   error
	}{
		{"right key", testKey(5), nil, nil},
		{"wrong key", testKey(6), nil, store.ErrWrongKey},
		{"a record removed", testKey(5), func(ctx context.Context, b *store.Bolt) {
			require.NoError(t, b.Delete(ctx, "sessions/b"))
		}, store.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.change != nil {
				tc.change(ctx, raw)
			}
			st, err := store.Verify(ctx, raw, tc.key)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, 2, st.Records)
			assert.Equal(t, uint64(2), st.Generation)
		})
	}

	empty, err := store.OpenBolt(store.BoltConfig{Dir: t.TempDir()})
	require.NoError(t, err)
	defer empty.Close()
	_, err = store.Verify(ctx, empty, testKey(5))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no key check value")
}

func TestBoltReadOnly(t *testing.T) {
	ctx := t.Context()
	_, err := store.OpenBolt(store.BoltConfig{Dir: t.TempDir(), ReadOnly: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no store under --data-dir")

	dir := t.TempDir()
	w, err := store.OpenBolt(store.BoltConfig{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, w.Put(ctx, "k", []byte("v")))
	_, err = store.OpenBolt(store.BoltConfig{Dir: dir, ReadOnly: true, LockTimeout: 50 * time.Millisecond})
	require.Error(t, err, "a writer holds the lock")
	assert.Contains(t, err.Error(), "locked by another process (stop the control plane on this data dir first)")
	require.NoError(t, w.Close())

	r, err := store.OpenBolt(store.BoltConfig{Dir: dir, ReadOnly: true})
	require.NoError(t, err)
	defer r.Close()
	v, err := r.Get(ctx, "k")
	require.NoError(t, err)
	assert.Equal(t, "v", string(v))
	require.Error(t, r.Put(ctx, "k", []byte("w")), "read-only")
}
