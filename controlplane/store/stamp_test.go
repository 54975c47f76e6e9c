package store_test

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/store"
	"github.com/attestmesh/attestmesh/controlplane/store/storetest"
)

// Stamp changes with every write, whichever replica makes it, and with nothing else: readers
// (the CAS's session cache) keep what they read only while it holds. On etcd the second
// replica's stamp changes as soon as the first replica's write returns, with no watch.
func TestStampChangesWithEveryWrite(t *testing.T) {
	bolt := func(t *testing.T) (writer, reader *store.EncryptedBackend) {
		t.Helper()
		s, err := openEncrypted(t, t.TempDir(), testKey(5))
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		return s, s
	}
	etcd := func(t *testing.T) (writer, reader *store.EncryptedBackend) {
		t.Helper()
		replicas := etcdReplicas(t, storetest.Etcd(t), testKey(5))
		return replicas[0], replicas[1]
	}
	writes := []struct {
		name  string
		write func(ctx context.Context, s *store.EncryptedBackend) error
	}{
		{"put", func(ctx context.Context, s *store.EncryptedBackend) error {
			return s.Put(ctx, "sessions/a", []byte("v2"))
		}},
		{"put of the same value", func(ctx context.Context, s *store.EncryptedBackend) error {
			return s.Put(ctx, "sessions/a", []byte("v1"))
		}},
		{"compare-and-swap", func(ctx context.Context, s *store.EncryptedBackend) error {
			return s.CompareAndSwap(ctx, "sessions/a", []byte("v1"), []byte("v3"))
		}},
		{"delete", func(ctx context.Context, s *store.EncryptedBackend) error { return s.Delete(ctx, "sessions/a") }},
		{"apply to another key", func(ctx context.Context, s *store.EncryptedBackend) error {
			return s.Apply(ctx, nil, []store.Write{{Key: "meshes/m", Value: []byte("x")}})
		}},
	}
	for _, engine := range []struct {
		name string
		open func(t *testing.T) (writer, reader *store.EncryptedBackend)
	}{{"bbolt", bolt}, {"etcd, two replicas", etcd}} {
		t.Run(engine.name, func(t *testing.T) {
			writer, reader := engine.open(t)
			ctx := t.Context()
			for _, w := range writes {
				require.NoError(t, writer.Put(ctx, "sessions/a", []byte("v1")), w.name)
				before, err := reader.Stamp(ctx)
				require.NoError(t, err, w.name)
				require.NotEmpty(t, before, w.name)
				_, err = reader.Get(ctx, "sessions/a")
				require.NoError(t, err, w.name)
				same, err := reader.Stamp(ctx)
				require.NoError(t, err, w.name)
				assert.Equal(t, before, same, "%s: reads leave the stamp as it was", w.name)

				require.NoError(t, w.write(ctx, writer), w.name)
				after, err := reader.Stamp(ctx)
				require.NoError(t, err, w.name)
				assert.NotEqual(t, before, after, "%s: the reader's stamp changes once the write returned", w.name)
			}
			// A refused write changes nothing, and neither does the stamp.
			before, err := reader.Stamp(ctx)
			require.NoError(t, err)
			require.ErrorIs(t, writer.CompareAndSwap(ctx, "sessions/a", []byte("not it"), []byte("v9")), store.ErrConflict)
			after, err := reader.Stamp(ctx)
			require.NoError(t, err)
			assert.Equal(t, before, after, "a refused write")
		})
	}
}

// An older sealed state put back in the engine (by whoever can write it: etcd's operator, a
// restored backup) is refused by Stamp once the replica has seen a newer one, so that the
// CAS's lookups are not kept under it; reads then go to the records, where the rollback checks
// apply.
func TestStampRefusesAnOlderState(t *testing.T) {
	cfg := storetest.Etcd(t)
	ctx := t.Context()
	raw, err := store.OpenEtcd(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = raw.Close() })
	replicas := etcdReplicas(t, cfg, testKey(6))
	writer, reader := replicas[0], replicas[1]
	require.NoError(t, writer.Put(ctx, "sessions/a", []byte("v1")))
	old, err := reader.Stamp(ctx)
	require.NoError(t, err)
	stateKey := stateRecordKey(ctx, t, raw, old)

	require.NoError(t, writer.Put(ctx, "sessions/a", []byte("v2")))
	newer, err := reader.Stamp(ctx)
	require.NoError(t, err)
	require.NotEqual(t, old, newer)

	// The old sealed state, put back.
	require.NoError(t, raw.Apply(ctx, nil, []store.Write{{Key: stateKey, Value: []byte(old)}}))
	for name, s := range map[string]*store.EncryptedBackend{"the reader, which saw the newer state": reader, "the writer": writer} {
		_, err = s.Stamp(ctx)
		require.ErrorIs(t, err, store.ErrRollback, name)
		assert.Contains(t, err.Error(), "this replica has seen generation", name)
	}
}

// stateRecordKey finds the key of the sealed state record in the raw engine: the one whose
// value is stamp.
func stateRecordKey(ctx context.Context, t *testing.T, raw store.Engine, stamp string) string {
	t.Helper()
	kvs, err := raw.List(ctx, "")
	require.NoError(t, err)
	for _, kv := range kvs {
		if string(kv.Value) == stamp {
			return kv.Key
		}
	}
	require.FailNow(t, "no record holds the stamp")
	return ""
}

// Stamps taken while writes land, by the writing replica and by another, are never mistaken
// for a rollback: each is compared with what its replica had written or seen before its read.
func TestStampDuringWritesIsNoRollback(t *testing.T) {
	cfg := storetest.Etcd(t)
	ctx := t.Context()
	replicas := etcdReplicas(t, cfg, testKey(7))
	done := make(chan struct{})
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			r := replicas[i%2]
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := r.Stamp(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range 60 {
		require.NoError(t, replicas[i%2].Put(ctx, "sessions/a", []byte(strconv.Itoa(i))))
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err, "a stamp during writes")
	}
}

// etcdReplicas opens two encrypting replicas of the store in cfg's etcd under key.
func etcdReplicas(t *testing.T, cfg store.EtcdConfig, key store.Key) [2]*store.EncryptedBackend {
	t.Helper()
	var replicas [2]*store.EncryptedBackend
	for i := range replicas {
		e, err := store.OpenEtcd(t.Context(), cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = e.Close() })
		replicas[i], err = store.Encrypted(t.Context(), e, key)
		require.NoError(t, err)
	}
	return replicas
}
