package controlplane_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/store"
	"github.com/attestmesh/attestmesh/controlplane/store/storetest"
)

// Two replicas on one (real, embedded) etcd: one CA, the same sessions, each other's writes in
// their xDS feed within a second, attestation at either, and a nonce good only at the replica
// that issued it.
func TestReplicasOnEtcd(t *testing.T) {
	etcd := storetest.Etcd(t)
	u, err := url.Parse(etcd.Endpoints[0])
	require.NoError(t, err)
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err = store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	replica := func() *running {
		return startWith(t, controlplane.Config{
			DataDir: t.TempDir(), Store: "etcd://" + u.Host, StoreKeyFile: keyFile, StoreAnchor: "none", TrustDomain: "attestmesh.local",
			MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
			Simulation: true, LASAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}
	a, b := replica(), replica()
	require.Equal(t, string(a.addrs.BundlePEM), string(b.addrs.BundlePEM), "one CA: the second replica loads the first one's")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ownerDir := t.TempDir()
	atA, atB := a.client(t, ownerDir), b.client(t, ownerDir)
	_, err = atA.Create(ctx, []byte("name: it\nversion: \"0.3\"\n"))
	require.NoError(t, err)
	for _, s := range [][2]string{{"it/server", "server"}, {"it/client", "client"}} {
		_, err := atB.Create(ctx, itSession(s[0], s[1]))
		require.NoError(t, err, "a namespace created at one replica is there at the other")
	}
	got, err := atA.Get(ctx, "it/server")
	require.NoError(t, err)
	assert.Contains(t, string(got.Session), "name: it/server")

	// A registration made at A reaches B's xDS feed through the store's watch.
	doc, err := (&mgmtapi.Registration{Mesh: itMesh(map[uint32]uint32{6379: 16379}), Endpoints: map[string]string{"server": itServerIP, "client": itClientIP}}).Marshal()
	require.NoError(t, err)
	require.NoError(t, atA.PutMesh(ctx, "it", doc))
	start := time.Now()
	require.Eventually(t, func() bool {
		return scrape(t, b.addrs.Metrics, "attestmesh_mesh_registrations", "state", "active") == 1
	},
		5*time.Second, 20*time.Millisecond, "replica B's registry follows A's write")
	t.Logf("replica B saw A's mesh registration after %s", time.Since(start).Round(time.Millisecond))
	assert.Less(t, time.Since(start), time.Second)

	// Attestation: a client given both replicas attests; a nonce from A is refused at B.
	caCerts, err := ca.ParseCertsPEM(a.addrs.BundlePEM)
	require.NoError(t, err)
	ac, err := attestapi.Dial(attestapi.ClientConfig{Addr: a.addrs.Attest + "," + b.addrs.Attest, Bundle: caCerts, Quotes: sim.Client{Addr: a.addrs.LAS}})
	require.NoError(t, err)
	defer ac.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	res, err := ac.Attest(ctx, attestapi.Request{ConfigID: "it/server/server", Role: attestationpb.Role_ROLE_APP, Key: key,
		Evidence: attestapi.Evidence{MREnclave: itAppMR}})
	require.NoError(t, err, "attestation through either replica")
	assert.Equal(t, "spiffe://attestmesh.local/it/server/server", res.ID.String())

	raw := func(addr string) attestationpb.AttestationClient {
		pool := x509.NewCertPool()
		for _, c := range caCerts {
			pool.AddCert(c)
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13})))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return attestationpb.NewAttestationClient(conn)
	}
	nr, err := raw(a.addrs.Attest).GetNonce(ctx, &attestationpb.GetNonceRequest{ConfigId: "it/server/server"})
	require.NoError(t, err)
	_, err = raw(b.addrs.Attest).Attest(ctx, &attestationpb.AttestRequest{ConfigId: "it/server/server", Role: attestationpb.Role_ROLE_APP,
		Nonce: nr.GetNonce(), Quote: []byte{1}, Csr: []byte{1}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), attestapi.OtherReplicaNonce)
	assert.Contains(t, err.Error(), "nonce_invalid")
}

// TestRecoverFromEtcd: replicas on etcd seal the store key to recovery keys (both start with
// them, one record results); with every replica's key lost, `recover` reads the record from
// etcd and gives the key back; a key the record does not know is refused, naming the keys it
// expects.
func TestRecoverFromEtcd(t *testing.T) {
	etcd := storetest.Etcd(t)
	u, err := url.Parse(etcd.Endpoints[0])
	require.NoError(t, err)
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err = store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	keyHex, err := os.ReadFile(keyFile)
	require.NoError(t, err)
	cfg := controlplane.Config{
		Store: "etcd://" + u.Host, StoreKeyFile: keyFile, StoreAnchor: "none", TrustDomain: "attestmesh.local",
		MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		RecoveryKeyFiles: []string{testKey("x25519-a.pub.pem"), testKey("p256-sec1.pub.pem")}, RecoveryThreshold: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	a := func() *running { c := cfg; c.DataDir = t.TempDir(); return startWith(t, c) }()
	b := func() *running { c := cfg; c.DataDir = t.TempDir(); return startWith(t, c) }()
	a.stop(t)
	b.stop(t)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	src := controlplane.StoreSource{Store: cfg.Store}
	var record, msgs bytes.Buffer
	require.NoError(t, controlplane.RecoveryRecord(ctx, controlplane.RecoveryRecordConfig{StoreSource: src, Out: "-", Stdout: &record, Stderr: &msgs}))
	assert.Contains(t, msgs.String(), "1 of 2 shares")

	var out bytes.Buffer
	err = controlplane.Recover(ctx, controlplane.RecoverConfig{StoreSource: src, KeyFiles: []string{testKey("rsa3072.pem")}, KeyOut: "-", Stdout: &out, Stderr: &out})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is neither one of the record's recovery keys")
	assert.Empty(t, out.String())

	var key bytes.Buffer
	msgs.Reset()
	require.NoError(t, controlplane.Recover(ctx, controlplane.RecoverConfig{StoreSource: src, KeyFiles: []string{testKey("p256-sec1.pem")}, KeyOut: "-", Stdout: &key, Stderr: &msgs}))
	assert.Equal(t, strings.TrimSpace(string(keyHex)), strings.TrimSpace(key.String()), "the replicas' store key")
	assert.Contains(t, msgs.String(), "it authenticates the record and opens the store in "+cfg.Store)
}
