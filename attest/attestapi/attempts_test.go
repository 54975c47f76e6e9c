package attestapi_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
)

// callerTimeout is the overall deadline of the tests' callers; the client must never need it.
const callerTimeout = 20 * time.Second

// replica is a control-plane replica that attests everyone and names itself in the
// response's xds_address; once stopped, it answers nothing, and each call waits until its
// caller gives up: a replica whose process is frozen (SIGSTOP), as a connection made before
// sees it (TLS done, every request unanswered), or one whose handlers are stuck.
type replica struct {
	attestationpb.UnimplementedAttestationServer
	name, addr string
	svid, ca   []byte
	stopped    atomic.Bool
	nonces     atomic.Int32
	attests    atomic.Int32
}

func newReplica(t *testing.T, ca testCA, name string) *replica {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	r := &replica{name: name, svid: ca.issue(t, spiffeid.RequireFromString("spiffe://attestmesh.local/a/b"), key), ca: ca.cert.Raw}
	r.addr = listen(t, ca, r)
	return r
}

func (r *replica) GetNonce(ctx context.Context, _ *attestationpb.GetNonceRequest) (*attestationpb.GetNonceResponse, error) {
	r.nonces.Add(1)
	if r.stopped.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &attestationpb.GetNonceResponse{Nonce: make([]byte, attestapi.NonceSize)}, nil
}

func (r *replica) Attest(ctx context.Context, _ *attestationpb.AttestRequest) (*attestationpb.AttestResponse, error) {
	r.attests.Add(1)
	if r.stopped.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &attestationpb.AttestResponse{
		SpiffeId: "spiffe://attestmesh.local/a/b", Tee: "simulation", SvidChain: [][]byte{r.svid}, TrustBundle: [][]byte{r.ca},
		XdsAddress: r.name,
	}, nil
}

// silent accepts TCP connections and never says a word: a frozen control-plane process as a
// new connection sees it (the kernel completes the TCP handshake; the TLS handshake never
// does). It returns its address and the count of connections it accepted.
func silent(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		accepted atomic.Int32
		mu       sync.Mutex
		held     []net.Conn
		wg       sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = lis.Close()
		wg.Wait()
		for _, c := range held {
			_ = c.Close()
		}
	})
	return lis.Addr().String(), &accepted
}

func workloadKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

// timedAttest attests once under callerTimeout and says how long it took.
func timedAttest(t *testing.T, c *attestapi.Client) (*attestapi.Result, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callerTimeout)
	defer cancel()
	start := time.Now()
	res, err := c.Attest(ctx, attestapi.Request{ConfigID: "a/b", Key: workloadKey(t)})
	return res, time.Since(start), err
}

// A new client whose first replica is frozen attests through the healthy one, without
// waiting for the caller's deadline: a replica that never completes TLS is passed over by
// the connection itself, one that stopped answering after TLS by the attempt's deadline and a
// new connection that tries the other replica first.
func TestAttestPassesOverAFrozenReplica(t *testing.T) {
	const attemptTimeout = time.Second
	for _, tt := range []struct {
		name   string
		frozen func(t *testing.T, ca testCA) (addr string, tried func() bool)
		// timeout: the first attempt runs out of its deadline on the frozen replica.
		timeout bool
	}{
		{name: "accepts TCP, never completes TLS", frozen: func(t *testing.T, _ testCA) (string, func() bool) {
			t.Helper()
			addr, accepted := silent(t)
			return addr, func() bool { return accepted.Load() > 0 }
		}},
		{name: "completes TLS, never answers a call", timeout: true, frozen: func(t *testing.T, ca testCA) (string, func() bool) {
			t.Helper()
			r := newReplica(t, ca, "frozen")
			r.stopped.Store(true)
			return r.addr, func() bool { return r.nonces.Load() == 1 }
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			attestapi.InOrder(t)
			ca := newTestCA(t, 1)
			frozen, tried := tt.frozen(t, ca)
			healthy := newReplica(t, ca, "healthy")
			var logs bytes.Buffer
			c := dial(t, ca, attestapi.ClientConfig{Addr: frozen + "," + healthy.addr, AttemptTimeout: attemptTimeout,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})

			res, took, err := timedAttest(t, c)
			require.NoError(t, err)
			t.Logf("attested through %s in %s; log: %s", res.XDSAddr, took.Round(time.Millisecond), logs.String())
			assert.Equal(t, "healthy", res.XDSAddr, "the replica that answered")
			assert.Equal(t, int32(1), healthy.attests.Load())
			assert.Less(t, took, callerTimeout/2)
			assert.Eventually(t, tried, 5*time.Second, 10*time.Millisecond, "the frozen replica was tried first")
			if tt.timeout {
				assert.GreaterOrEqual(t, took, attemptTimeout, "the first attempt waited for its deadline")
				assert.Contains(t, logs.String(), "attestapi: attempt 1 of 3 to "+frozen+" timed out after 1s in GetNonce")
			} else {
				assert.Empty(t, logs.String(), "no attempt timed out")
			}
		})
	}
}

// A long-lived client (a sidecar that renews) whose replica stops answering moves to the
// other one after one attempt's deadline, and stays there.
func TestAttestLeavesAReplicaThatStoppedAnswering(t *testing.T) {
	attestapi.InOrder(t)
	ca := newTestCA(t, 1)
	a, b := newReplica(t, ca, "a"), newReplica(t, ca, "b")
	var logs bytes.Buffer
	c := dial(t, ca, attestapi.ClientConfig{Addr: a.addr + "," + b.addr, AttemptTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	res, _, err := timedAttest(t, c)
	require.NoError(t, err)
	require.Equal(t, "a", res.XDSAddr, "the first replica of the list")

	a.stopped.Store(true) // SIGSTOP, as the open connection sees it
	res, took, err := timedAttest(t, c)
	require.NoError(t, err)
	t.Logf("attested through %s in %s after a stopped", res.XDSAddr, took.Round(time.Millisecond))
	assert.Equal(t, "b", res.XDSAddr)
	assert.GreaterOrEqual(t, took, time.Second)
	assert.Less(t, took, callerTimeout/2)
	assert.Equal(t, int32(2), a.nonces.Load(), "one attempt at the stopped replica")
	assert.Contains(t, logs.String(), "attestapi: attempt 1 of 3 to "+a.addr+" timed out after 1s in GetNonce: context deadline exceeded")

	a.stopped.Store(false) // SIGCONT: the client has no reason to go back
	res, _, err = timedAttest(t, c)
	require.NoError(t, err)
	assert.Equal(t, "b", res.XDSAddr)
	assert.Equal(t, int32(2), a.nonces.Load())
}

// With only frozen replicas, Attest gives up after its attempts, each bounded by its own
// deadline, and says so.
func TestAttestGivesUpOnAFrozenReplica(t *testing.T) {
	const attemptTimeout = 300 * time.Millisecond
	for _, tt := range []struct {
		name   string
		frozen func(t *testing.T, ca testCA) (addr string, tries func() int32)
		want   string
	}{
		{name: "accepts TCP, never completes TLS", want: "(no connection to a replica completed) timed out after 300ms in GetNonce",
			frozen: func(t *testing.T, _ testCA) (string, func() int32) {
				t.Helper()
				addr, accepted := silent(t)
				return addr, accepted.Load
			}},
		{name: "completes TLS, never answers a call", want: " timed out after 300ms in GetNonce",
			frozen: func(t *testing.T, ca testCA) (string, func() int32) {
				t.Helper()
				r := newReplica(t, ca, "frozen")
				r.stopped.Store(true)
				return r.addr, r.nonces.Load
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca := newTestCA(t, 1)
			frozen, tries := tt.frozen(t, ca)
			c := dial(t, ca, attestapi.ClientConfig{Addr: frozen, AttemptTimeout: attemptTimeout, Attempts: 2})

			_, took, err := timedAttest(t, c)
			require.Error(t, err)
			t.Logf("gave up after %s: %v", took.Round(time.Millisecond), err)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Contains(t, err.Error(), "attestapi: attempt 2 of 2 to "+frozen)
			assert.Contains(t, err.Error(), tt.want)
			assert.GreaterOrEqual(t, took, 2*attemptTimeout)
			assert.Less(t, took, callerTimeout/2)
			assert.Eventually(t, func() bool { return tries() == 2 }, 5*time.Second, 10*time.Millisecond,
				"one connection or call per attempt, a new connection for the second")
		})
	}
}

// refusing refuses every attestation with its code.
type refusing struct {
	attestationpb.UnimplementedAttestationServer
	code            codes.Code
	nonces, attests atomic.Int32
}

func (r *refusing) GetNonce(context.Context, *attestationpb.GetNonceRequest) (*attestationpb.GetNonceResponse, error) {
	r.nonces.Add(1)
	return &attestationpb.GetNonceResponse{Nonce: make([]byte, attestapi.NonceSize)}, nil
}

func (r *refusing) Attest(context.Context, *attestationpb.AttestRequest) (*attestationpb.AttestResponse, error) {
	r.attests.Add(1)
	return nil, status.Error(r.code, "attestation refused (mrenclave_mismatch): expected 00, got 11")
}

// A refusal is the control plane's answer: it is not asked again.
func TestAttestDoesNotRetryARefusal(t *testing.T) {
	for _, code := range []codes.Code{codes.PermissionDenied, codes.InvalidArgument, codes.NotFound, codes.ResourceExhausted, codes.Internal} {
		t.Run(code.String(), func(t *testing.T) {
			ca := newTestCA(t, 1)
			srv := &refusing{code: code}
			c := dial(t, ca, attestapi.ClientConfig{Addr: listen(t, ca, srv)})
			_, _, err := timedAttest(t, c)
			require.Error(t, err)
			assert.Equal(t, attestapi.ReasonMREnclave, attestapi.RefusalReason(err))
			assert.Equal(t, "attestapi: "+code.String()+": attestation refused (mrenclave_mismatch): expected 00, got 11", err.Error())
			assert.Equal(t, int32(1), srv.nonces.Load())
			assert.Equal(t, int32(1), srv.attests.Load())
		})
	}
}

// The end of the caller's context ends Attest at once with the caller's error, in whichever
// attempt, and no attempt follows.
func TestAttestStopsWithTheCallersContext(t *testing.T) {
	for _, tt := range []struct {
		name string
		ctx  func(t *testing.T) context.Context
		want error
	}{
		{name: "deadline", want: context.DeadlineExceeded, ctx: func(t *testing.T) context.Context {
			t.Helper()
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			t.Cleanup(cancel)
			return ctx
		}},
		{name: "cancel", want: context.Canceled, ctx: func(t *testing.T) context.Context {
			t.Helper()
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(300*time.Millisecond, cancel)
			return ctx
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca := newTestCA(t, 1)
			r := newReplica(t, ca, "frozen")
			r.stopped.Store(true)
			c := dial(t, ca, attestapi.ClientConfig{Addr: r.addr, AttemptTimeout: callerTimeout})
			start := time.Now()
			_, err := c.Attest(tt.ctx(t), attestapi.Request{ConfigID: "a/b", Key: workloadKey(t)})
			took := time.Since(start)
			require.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), "attestapi: attempt 1 of 3 to "+r.addr+": ")
			assert.Less(t, took, callerTimeout/2)
			assert.Equal(t, int32(1), r.nonces.Load(), "no second attempt")
		})
	}
}

// unavailable answers its first GetNonce with Unavailable (a replica shutting down), then
// attests.
type unavailable struct {
	*replica
	calls atomic.Int32
}

func (u *unavailable) GetNonce(ctx context.Context, req *attestationpb.GetNonceRequest) (*attestationpb.GetNonceResponse, error) {
	if u.calls.Add(1) == 1 {
		return nil, status.Error(codes.Unavailable, "the replica is shutting down")
	}
	return u.replica.GetNonce(ctx, req)
}

// A GetNonce that fails with Unavailable is made again, as an Attest call that does.
func TestAttestRetriesAnUnavailableNonce(t *testing.T) {
	ca := newTestCA(t, 1)
	u := &unavailable{replica: newReplica(t, ca, "r")}
	var logs bytes.Buffer
	c := dial(t, ca, attestapi.ClientConfig{Addr: listen(t, ca, u), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	res, _, err := timedAttest(t, c)
	require.NoError(t, err)
	assert.Equal(t, "r", res.XDSAddr)
	assert.Equal(t, int32(2), u.calls.Load())
	assert.Contains(t, logs.String(), "get nonce: Unavailable: the replica is shutting down")
}

// Dial refuses a negative attempt timeout or count.
func TestDialRefusesNegativeAttempts(t *testing.T) {
	ca := newTestCA(t, 1)
	for _, cfg := range []attestapi.ClientConfig{{AttemptTimeout: -time.Second}, {Attempts: -1}} {
		cfg.Addr, cfg.Bundle, cfg.Quotes = "127.0.0.1:1", []*x509.Certificate{ca.cert}, noQuote{}
		_, err := attestapi.Dial(cfg)
		require.ErrorContains(t, err, "want zero (the defaults) or more")
	}
}

// Concurrent attestations on one client (a launcher serving grants while its sidecar renews,
// say) that meet a stopped replica all move to the other one; closing the client while
// attempts are in flight ends them and leaves no connection behind (goleak, TestMain).
func TestAttestConcurrentlyWhileAReplicaStops(t *testing.T) {
	attestapi.InOrder(t)
	ca := newTestCA(t, 1)
	a, b := newReplica(t, ca, "a"), newReplica(t, ca, "b")
	c := dial(t, ca, attestapi.ClientConfig{Addr: a.addr + "," + b.addr, AttemptTimeout: time.Second})
	res, _, err := timedAttest(t, c)
	require.NoError(t, err)
	require.Equal(t, "a", res.XDSAddr)

	a.stopped.Store(true)
	const n = 8
	var wg sync.WaitGroup
	names, errs := make([]string, n), make([]error, n)
	keys := make([]*ecdsa.PrivateKey, n+1)
	for i := range keys {
		keys[i] = workloadKey(t)
	}
	ctx, cancel := context.WithTimeout(t.Context(), callerTimeout)
	defer cancel()
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			res, err := c.Attest(ctx, attestapi.Request{ConfigID: "a/b", Key: keys[i]})
			errs[i] = err
			if err == nil {
				names[i] = res.XDSAddr
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	t.Logf("%d attestations in %s; the stopped replica saw %d calls", n, took.Round(time.Millisecond), a.nonces.Load()-1)
	for i := range n {
		require.NoError(t, errs[i], "attestation %d", i)
		assert.Equal(t, "b", names[i], "attestation %d", i)
	}
	assert.Less(t, took, callerTimeout/2)

	// Closing the client in the middle of attempts at a stopped replica.
	b.stopped.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := c.Attest(ctx, attestapi.Request{ConfigID: "a/b", Key: keys[n]})
		done <- err
	}()
	require.Eventually(t, func() bool { return b.nonces.Load() > int32(n) }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, c.Close())
	select {
	case err := <-done:
		require.Error(t, err)
		t.Logf("after Close: %v", err)
	case <-time.After(callerTimeout / 2):
		t.Fatal("Close did not end the attempt in flight")
	}
}

// With no replica listening, every attempt fails at once with Unavailable, and the error names
// the last.
func TestAttestWithNoReplica(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	ca := newTestCA(t, 1)
	c := dial(t, ca, attestapi.ClientConfig{Addr: addr})
	_, took, err := timedAttest(t, c)
	require.Error(t, err)
	t.Logf("after %s: %v", took.Round(time.Millisecond), err)
	assert.Regexp(t, `^attestapi: attempt 3 of 3 to `+addr+`: get nonce: Unavailable: .*connection refused`, err.Error())
}
