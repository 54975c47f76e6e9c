package xds

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	runtimemetrics "runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	sidecar "github.com/attestmesh/attestmesh/proxy/resource"
)

// The fan-out benchmark's sidecars run in a child process (this test binary again, with
// fanoutEnv set), so that the control plane's memory is measured alone.
const (
	fanoutEnv   = "ATTESTMESH_XDS_FANOUT_DIR"
	fanoutNodes = 1000
	fanoutHost  = "xds.attestmesh.local"
)

// BenchmarkADSFanout1000 connects 1,000 sidecars to a real ADS server over mTLS, one
// connection and ADS stream each (LDS, CDS and SDS subscribed and ACKed), then rotates the
// trust bundle, which changes every node's secrets: one op is the time from Update to the
// last sidecar's ACK of its new secrets. It reports the control plane's heap per connected
// sidecar (heap and stacks in use with the sidecars connected, less the same with the same
// snapshots and no sidecar, divided by 1,000).
func BenchmarkADSFanout1000(b *testing.B) {
	now := time.Now()
	from, until := now.Add(-time.Minute), now.Add(time.Hour)
	ca := newTestCA(b, from, until)
	ca2 := newTestCA(b, from, until)
	bundles := [2][]*x509.Certificate{{ca.cert}, {ca.cert, ca2.cert}}
	m := ringMesh(fanoutNodes)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(b, err)
	svids := benchSVIDsFor(b, ca, m, key)
	srvLeaf, srvKey := ca.issue(b, spiffeid.RequireFromPath(td, "/attestmesh/controlplane"), fanoutHost, from, until)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	srv, err := New(Config{TLS: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvLeaf.Raw}, PrivateKey: srvKey}}, ClientCAs: roots}})
	require.NoError(b, err)
	require.NoError(b, srv.Update(m, bundles[0], svids))

	dir := b.TempDir()
	writeFanoutPKI(b, dir, ca.cert, key, m, svids)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			b.Error(err)
		}
	}()

	idleHeap, idleStacks, idleLive := memInUse()
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestADSFanoutSidecars$", "-test.timeout=5m")
	child.Env = append(os.Environ(), fanoutEnv+"="+dir, "ATTESTMESH_XDS_FANOUT_ADDR="+lis.Addr().String())
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	require.NoError(b, err)
	stdout, err := child.StdoutPipe()
	require.NoError(b, err)
	require.NoError(b, child.Start())
	defer func() {
		_ = stdin.Close()
		_ = child.Wait()
	}()
	lines := bufio.NewScanner(stdout)
	expect := func(want string) {
		b.Helper()
		for lines.Scan() {
			if strings.HasPrefix(lines.Text(), want) {
				return
			}
		}
		b.Fatalf("the sidecars' process ended before %q: %v", want, lines.Err())
	}
	expect("ready")
	// A sidecar is ready once it has sent its ACKs, which the control plane may still be
	// reading: measure once it has handled every sidecar's three requests and three ACKs (a
	// goroutine still running is not measured at its resting size).
	deadline := time.Now().Add(time.Minute)
	for srv.requests.Load() < 6*fanoutNodes && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.GreaterOrEqual(b, srv.requests.Load(), int64(6*fanoutNodes), "the control plane did not handle every ACK")
	heap, stacks, live := memInUse()

	i := 0
	for b.Loop() {
		i++
		require.NoError(b, srv.Update(m, bundles[i%2], svids))
		_, err := fmt.Fprintln(stdin, "wait")
		require.NoError(b, err)
		expect("acked")
	}
	b.ReportMetric(float64(heap-idleHeap+stacks-idleStacks)/fanoutNodes/1024, "KiB/sidecar")
	b.ReportMetric(float64(stacks-idleStacks)/fanoutNodes/1024, "stack-KiB/sidecar")
	// The heap in use less its live objects is the room left in its spans (fragmentation),
	// which varies by a few KiB from run to run; the live objects do not.
	b.ReportMetric(float64(live-idleLive)/fanoutNodes/1024, "live-KiB/sidecar")
}

// memInUse returns the heap and the goroutine stacks in use after a collection, and the
// bytes of the heap's live objects.
func memInUse() (heap, stacks, live int64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	objects := []runtimemetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	runtimemetrics.Read(objects)
	return int64(ms.HeapInuse), int64(ms.StackInuse), int64(objects[0].Value.Uint64()) //nolint:gosec // G115: far below 2^63
}

func writeFanoutPKI(b *testing.B, dir string, caCert *x509.Certificate, key *ecdsa.PrivateKey, m *Mesh, svids map[spiffeid.ID][]*x509.Certificate) {
	b.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	require.NoError(b, err)
	require.NoError(b, os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600))
	require.NoError(b, os.WriteFile(filepath.Join(dir, "ca.pem"), pemOf(caCert), 0o600))
	var certs []byte
	for _, s := range m.Services {
		certs = append(certs, pemOf(svids[s.ID][0])...)
	}
	require.NoError(b, os.WriteFile(filepath.Join(dir, "svids.pem"), certs, 0o600))
}

// TestADSFanoutSidecars is the sidecars of BenchmarkADSFanout1000, run in a child process;
// skipped otherwise. It prints "ready" once every sidecar has ACKed its first listeners,
// clusters and secrets, and for every "wait" on stdin, "acked" once every sidecar has ACKed
// secrets newer than it had.
func TestADSFanoutSidecars(t *testing.T) {
	dir := os.Getenv(fanoutEnv)
	if dir == "" {
		t.Skip("run by BenchmarkADSFanout1000")
	}
	addr := os.Getenv("ATTESTMESH_XDS_FANOUT_ADDR")
	keyPEM, err := os.ReadFile(filepath.Join(dir, "key.pem"))
	require.NoError(t, err)
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	require.NoError(t, err)
	certsPEM, err := os.ReadFile(filepath.Join(dir, "svids.pem"))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	var leaves []tls.Certificate
	for block, rest := pem.Decode(certsPEM); block != nil; block, rest = pem.Decode(rest) {
		pair, err := tls.X509KeyPair(pem.EncodeToMemory(block), keyPEM)
		require.NoError(t, err)
		leaves = append(leaves, pair)
	}
	require.Len(t, leaves, fanoutNodes)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var ready sync.WaitGroup
	var secrets atomic.Int64 // new secrets versions ACKed, over all sidecars
	var wg sync.WaitGroup
	for _, leaf := range leaves {
		ready.Add(1)
		wg.Go(func() {
			if err := fanoutSidecar(ctx, addr, roots, leaf, ready.Done, func() { secrets.Add(1) }); err != nil && ctx.Err() == nil {
				t.Error(err)
				cancel()
			}
		})
	}
	ready.Wait()
	base := secrets.Load()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for n := int64(1); in.Scan(); n++ {
		for secrets.Load() < base+n*fanoutNodes && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		fmt.Println("acked")
	}
	cancel()
	wg.Wait()
}

// fanoutSidecar is one sidecar's ADS stream: it subscribes to listeners, clusters and its
// secrets, ACKs every response, calls ready once it has all three, and newSecrets for every
// later secrets version.
func fanoutSidecar(ctx context.Context, addr string, roots *x509.CertPool, cert tls.Certificate, ready, newSecrets func()) error {
	id, err := spiffeIDOf(cert)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, ServerName: fanoutHost, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
	})))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &core.Node{Id: id}
	names := map[string][]string{resource.SecretType: {sidecar.SecretSVID, sidecar.SecretTrustBundle}}
	for _, typ := range []string{resource.ListenerType, resource.ClusterType, resource.SecretType} {
		if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names[typ]}); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		typ := resp.GetTypeUrl()
		if err := stream.Send(&discovery.DiscoveryRequest{
			Node: node, TypeUrl: typ, ResourceNames: names[typ], VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
		}); err != nil {
			return err
		}
		switch {
		case !seen[typ]:
			seen[typ] = true
			if len(seen) == 3 {
				ready()
			}
		case typ == resource.SecretType:
			newSecrets()
		}
	}
}

func spiffeIDOf(cert tls.Certificate) (string, error) {
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return "", err
	}
	if len(leaf.URIs) != 1 {
		return "", errors.New("xds: fan-out sidecar certificate without one URI SAN")
	}
	return leaf.URIs[0].String(), nil
}
