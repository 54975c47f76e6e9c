package store_test

import (
	"context"
	"crypto/tls"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/store"
	"github.com/attestmesh/attestmesh/controlplane/store/storetest"
)

func TestParseEtcdURL(t *testing.T) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	for _, tt := range []struct {
		in   string
		tls  *tls.Config
		want []string
		err  string
	}{
		{in: "etcd://127.0.0.1:2379", want: []string{"http://127.0.0.1:2379"}},
		{in: "etcd://127.0.0.1:2379,[::1]:2379,localhost:2381", want: []string{"http://127.0.0.1:2379", "http://[::1]:2379", "http://localhost:2381"}},
		{in: "etcd://etcd-0.etcd:2379,etcd-1.etcd:2379", tls: tlsCfg, want: []string{"https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"}},
		{in: "etcd://etcd-0.etcd:2379", err: `endpoint "etcd-0.etcd:2379" is not on loopback: give etcd client certificates`},
		{in: "etcd://", err: "want etcd://host:port"},
		{in: "http://127.0.0.1:2379", err: "want etcd://host:port"},
		{in: "etcd://127.0.0.1", err: `endpoint "127.0.0.1" is not host:port`},
	} {
		cfg, err := store.ParseEtcdURL(tt.in, tt.tls)
		if tt.err != "" {
			require.ErrorContains(t, err, tt.err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, cfg.Endpoints, tt.in)
	}
}

// Two replicas: two engines and two encrypted stores over one etcd. A write by one is seen by
// the other's watch at once, and of two compare-and-swaps with the same predecessor exactly one
// wins, whichever replica makes it.
func TestEtcdReplicas(t *testing.T) {
	ctx := t.Context()
	cfg := storetest.Etcd(t)
	engines := make([]*store.Etcd, 2)
	stores := make([]*store.EncryptedBackend, 2)
	for i := range engines {
		e, err := store.OpenEtcd(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = e.Close() })
		engines[i] = e
		stores[i], err = store.Encrypted(ctx, e, testKey(3))
		require.NoError(t, err)
	}

	seen := make(chan []string, 1)
	wctx, cancel := context.WithCancel(ctx)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		_ = engines[1].Watch(wctx, func(keys []string) {
			select {
			case seen <- keys:
			default: // the test listens for the first batch only
			}
		})
	}()
	defer func() { cancel(); <-watching }()
	time.Sleep(200 * time.Millisecond) // the watch is established
	require.NoError(t, stores[0].Put(ctx, "sessions/a", []byte("v0")))
	select {
	case keys := <-seen:
		assert.Contains(t, keys, "sessions/a", "the other replica hears of the write")
	case <-time.After(5 * time.Second):
		t.Fatal("the other replica's watch reported nothing within 5 s")
	}
	got, err := stores[1].Get(ctx, "sessions/a")
	require.NoError(t, err)
	assert.Equal(t, "v0", string(got))

	const rounds = 20
	for r := range rounds {
		old := []byte{'v', byte('0' + r%10)}
		if r > 0 {
			cur, err := stores[0].Get(ctx, "sessions/a")
			require.NoError(t, err)
			old = cur
		}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Go(func() { errs[i] = s.CompareAndSwap(ctx, "sessions/a", old, []byte{byte('A' + i), byte(r)}) })
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			if err == nil {
				wins++
			} else {
				require.ErrorIs(t, err, store.ErrConflict)
			}
		}
		require.Equal(t, 1, wins, "round %d: exactly one replica wins", r)
	}
	// Both replicas' sealed state is consistent with the records: a fresh open checks it.
	again, err := store.Encrypted(ctx, engines[0], testKey(3))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, again.Generation(), uint64(rounds+1))
}
