package controlplane_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	cfg := etcdReplicas(t)
	replica := func() *running { return startReplica(t, cfg) }
	a, b := replica(), replica()
	require.Equal(t, string(a.addrs.BundlePEM), string(b.addrs.BundlePEM), "one CA: the second replica loads the first one's")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ownerDir := t.TempDir()
	atA, atB := a.client(t, ownerDir), b.client(t, ownerDir)
	_, err := atA.Create(ctx, []byte("name: it\nversion: \"0.3\"\n"))
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
	// How long it took is measured, not asserted (a loaded machine is no benchmark): the chaos
	// test (make e2e) reports it for every replica.
	t.Logf("replica B saw A's mesh registration after %s", time.Since(start).Round(time.Millisecond))

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

// Two replicas on one etcd: each keeps the sessions it looked up while the store is unchanged,
// and a session that one replica replaced applies at the other from its very next attestation,
// with no wait for the store's watch. B attests (and keeps the session); A replaces the
// accepted measurement; B refuses the old one and accepts the new one at once; and back.
func TestReplicasAttestWithTheCurrentSession(t *testing.T) {
	cfg := etcdReplicas(t)
	a, b := startReplica(t, cfg), startReplica(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	atA := a.client(t, t.TempDir())
	_, err := atA.Create(ctx, []byte("name: it\nversion: \"0.3\"\n"))
	require.NoError(t, err)
	doc := func(mr [32]byte, predecessor string) []byte {
		d := bytes.Replace(itSession("it/server", "server"), []byte(hex.EncodeToString(itAppMR[:])), []byte(hex.EncodeToString(mr[:])), 1)
		if predecessor != "" {
			d = append([]byte("predecessor: "+predecessor+"\n"), d...)
		}
		return d
	}
	created, err := atA.Create(ctx, doc(itAppMR, ""))
	require.NoError(t, err)
	hash := created.Hash

	caCerts, err := ca.ParseCertsPEM(b.addrs.BundlePEM)
	require.NoError(t, err)
	atB, err := attestapi.Dial(attestapi.ClientConfig{Addr: b.addrs.Attest, Bundle: caCerts, Quotes: sim.Client{Addr: b.addrs.LAS}})
	require.NoError(t, err)
	defer atB.Close()
	attestAtB := func(mr [32]byte) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		_, err = atB.Attest(ctx, attestapi.Request{ConfigID: "it/server/server", Role: attestationpb.Role_ROLE_APP, Key: key,
			Evidence: attestapi.Evidence{MREnclave: mr}})
		return err
	}
	require.NoError(t, attestAtB(itAppMR))
	require.NoError(t, attestAtB(itAppMR), "B keeps the session now")

	otherMR := [32]byte{0xcd, 0xcd}
	for round, accepted := range [][32]byte{otherMR, itAppMR, otherMR} {
		refused := itAppMR
		if accepted == itAppMR {
			refused = otherMR
		}
		updated, err := atA.Update(ctx, "it/server", doc(accepted, hash))
		require.NoError(t, err, "round %d", round)
		hash = updated.Hash
		err = attestAtB(refused)
		require.Error(t, err, "round %d: B applies the session A replaced", round)
		assert.Equal(t, attestapi.ReasonMREnclave, attestapi.RefusalReason(err), "round %d: %v", round, err)
		require.NoError(t, attestAtB(accepted), "round %d: B accepts what A's session accepts now", round)
	}
}

// TestRecoverFromEtcd: replicas on etcd seal the store key to recovery keys (both start with
// them, one record results); with every replica's key lost, `recover` reads the record from
// etcd and gives the key back; a key the record does not know is refused, naming the keys it
// expects.
func TestRecoverFromEtcd(t *testing.T) {
	cfg := etcdReplicas(t)
	keyHex, err := os.ReadFile(cfg.StoreKeyFile)
	require.NoError(t, err)
	cfg.RecoveryKeyFiles, cfg.RecoveryThreshold = []string{testKey("x25519-a.pub.pem"), testKey("p256-sec1.pub.pem")}, 1
	ecfg, err := store.ParseEtcdURL(cfg.Store, nil)
	require.NoError(t, err)
	engine, err := store.OpenEtcd(t.Context(), ecfg)
	require.NoError(t, err)
	defer engine.Close()
	storedRecord := func() []byte {
		raw, err := store.ReadRecoveryRecord(t.Context(), engine)
		require.NoError(t, err)
		require.NotNil(t, raw, "a recovery record in etcd")
		return raw
	}
	a := startReplica(t, cfg)
	first := storedRecord()
	b := startReplica(t, cfg)
	assert.Equal(t, first, storedRecord(), "the second replica keeps the record the first sealed: one record, not one per replica")
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

// Two replicas on one etcd, each asked at the same moment to update the same session with the
// same predecessor: exactly one wins; the other is refused with the conflict (HTTP 409), and
// both then serve the winner's document. Repeated, so that the two requests really overlap.
func TestReplicasRaceOneUpdate(t *testing.T) {
	cfg := etcdReplicas(t)
	cfg.ClientRate = -1
	replica := func() *running { return startReplica(t, cfg) }
	a, b := replica(), replica()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	owner := t.TempDir()
	clients := []*mgmtapi.Client{a.client(t, owner), b.client(t, owner)}
	doc := func(n int, by, predecessor string) []byte {
		d := fmt.Sprintf("name: race\nversion: \"0.3\"\nservices:\n  - {name: app, mrenclaves: [%q], environment: {ROUND: \"%d\", BY: %s}}\n",
			hex.EncodeToString(itAppMR[:]), n, by)
		if predecessor != "" {
			d = "predecessor: " + predecessor + "\n" + d
		}
		return []byte(d)
	}
	created, err := clients[0].Create(ctx, doc(0, "a", ""))
	require.NoError(t, err)
	current := created.Hash

	const rounds = 20
	wins := [2]int{}
	for round := 1; round <= rounds; round++ {
		type result struct {
			resp *mgmtapi.SessionResponse
			err  error
		}
		var results [2]result
		var wg sync.WaitGroup
		startGun := make(chan struct{})
		for i, c := range clients {
			wg.Go(func() {
				d := doc(round, []string{"a", "b"}[i], current)
				<-startGun
				resp, err := c.Update(ctx, "race", d)
				results[i] = result{resp, err}
			})
		}
		close(startGun)
		wg.Wait()

		var winner = -1
		for i, r := range results {
			if r.err == nil {
				require.Equal(t, -1, winner, "round %d: both replicas accepted an update with predecessor %s", round, current)
				winner = i
				continue
			}
			var apiErr *mgmtapi.APIError
			require.ErrorAs(t, r.err, &apiErr, "round %d, replica %d", round, i)
			assert.Equal(t, http.StatusConflict, apiErr.Status, "round %d, replica %d: %v", round, i, r.err)
			assert.Contains(t, apiErr.Msg, "predecessor is stale", "round %d, replica %d", round, i)
		}
		require.NotEqual(t, -1, winner, "round %d: neither replica accepted the update: %v; %v", round, results[0].err, results[1].err)
		wins[winner]++
		current = results[winner].resp.Hash
		for i, c := range clients {
			got, err := c.Get(ctx, "race")
			require.NoError(t, err)
			assert.Equal(t, current, got.Hash, "round %d: replica %d serves the winner's document", round, i)
		}
	}
	t.Logf("%d rounds: replica A won %d, replica B won %d; every loser got HTTP 409", rounds, wins[0], wins[1])
}

// etcdReplicas is the Config that replicas on one fresh (real, embedded) etcd share: the etcd,
// one store key, no anchor, loopback ports, simulation. startReplica gives each its own
// --data-dir.
func etcdReplicas(t *testing.T) controlplane.Config {
	t.Helper()
	etcd := storetest.Etcd(t)
	u, err := url.Parse(etcd.Endpoints[0])
	require.NoError(t, err)
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err = store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	return controlplane.Config{
		Store: "etcd://" + u.Host, StoreKeyFile: keyFile, StoreAnchor: "none", TrustDomain: "attestmesh.local",
		MgmtAddr: "127.0.0.1:0", AttestAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		Simulation: true, LASAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// startReplica starts a replica of cfg with a --data-dir that does not exist yet: with etcd,
// nothing but the control plane itself creates it.
func startReplica(t *testing.T, cfg controlplane.Config) *running {
	t.Helper()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	return startWith(t, cfg)
}
