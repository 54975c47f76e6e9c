// Package storetest opens real stores for tests: the encrypted bbolt store that the control
// plane runs on, in a temporary directory, under a random key.
package storetest

import (
	"context"
	"crypto/rand"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"

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

// Etcd starts a real single-member etcd server in this process (etcd's embed package), on
// loopback ports of its own with its data in tb.TempDir(), and returns its engine
// configuration; the server stops when the test ends.
func Etcd(tb testing.TB) store.EtcdConfig {
	tb.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = tb.TempDir()
	cfg.Logger, cfg.LogLevel = "zap", "error"
	cfg.LogOutputs = []string{"/dev/null"}
	peer, client := freeURL(tb), freeURL(tb)
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	srv, err := embed.StartEtcd(cfg)
	require.NoError(tb, err)
	tb.Cleanup(srv.Close)
	select {
	case <-srv.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		srv.Close()
		tb.Fatal("storetest: etcd did not become ready within 30 s")
	}
	return store.EtcdConfig{Endpoints: []string{client.String()}}
}

// OpenEtcdEngine returns an Etcd engine on a fresh embedded etcd (see Etcd); it is closed
// when the test ends.
func OpenEtcdEngine(tb testing.TB) *store.Etcd {
	tb.Helper()
	e, err := store.OpenEtcd(context.Background(), Etcd(tb))
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = e.Close() })
	return e
}

func freeURL(tb testing.TB) url.URL {
	tb.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	addr := l.Addr().String()
	require.NoError(tb, l.Close())
	return url.URL{Scheme: "http", Host: addr}
}
