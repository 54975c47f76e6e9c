package attestapi_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
)

// flaky answers GetNonce, and Attest first with Unavailable (a replica that went away during
// the call), then with a refusal that names the call.
type flaky struct {
	attestationpb.UnimplementedAttestationServer
	nonces, attests atomic.Int32
}

func (f *flaky) GetNonce(context.Context, *attestationpb.GetNonceRequest) (*attestationpb.GetNonceResponse, error) {
	f.nonces.Add(1)
	return &attestationpb.GetNonceResponse{Nonce: make([]byte, attestapi.NonceSize)}, nil
}

func (f *flaky) Attest(context.Context, *attestationpb.AttestRequest) (*attestationpb.AttestResponse, error) {
	if f.attests.Add(1) == 1 {
		return nil, status.Error(codes.Unavailable, "error reading from server: EOF")
	}
	return nil, status.Error(codes.PermissionDenied, "attestation refused (second call)")
}

type noQuote struct{}

func (noQuote) Quote(context.Context, attestapi.Report) ([]byte, error) { return []byte("quote"), nil }

// testCA is a root for the tests' control planes.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, serial int64) testCA {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("attestmesh.local")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return testCA{td: td, cert: cert, key: key}
}

// issue returns a certificate with the URI SAN id for key.
func (ca testCA) issue(t *testing.T, id spiffeid.ID, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{id.URL()},
	}, ca.cert, key.Public(), ca.key)
	require.NoError(t, err)
	return der
}

// listen runs impl as a control plane with a certificate from ca and returns its address.
func listen(t *testing.T, ca testCA, impl attestationpb.AttestationServer) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{ca.issue(t, attestapi.ControlPlaneID(ca.td), key)}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS13,
	})))
	attestationpb.RegisterAttestationServer(srv, impl)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	t.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
	return lis.Addr().String()
}

// dial returns a client of the control plane at cfg.Addr that trusts ca.
func dial(t *testing.T, ca testCA, cfg attestapi.ClientConfig) *attestapi.Client {
	t.Helper()
	cfg.Bundle, cfg.Quotes = []*x509.Certificate{ca.cert}, noQuote{}
	c, err := attestapi.Dial(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// serve runs impl as a control plane with a certificate from ca and returns a client of it.
func serve(t *testing.T, ca testCA, impl attestationpb.AttestationServer) *attestapi.Client {
	t.Helper()
	return dial(t, ca, attestapi.ClientConfig{Addr: listen(t, ca, impl)})
}

// An Attest call that fails with Unavailable (its replica died during the call) is made once
// more from a fresh nonce; a refusal is not.
func TestAttestRetriesWhenTheReplicaWentAway(t *testing.T) {
	f := &flaky{}
	c := serve(t, newTestCA(t, 1), f)
	wkey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, err = c.Attest(t.Context(), attestapi.Request{ConfigID: "a/b", Key: wkey})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "second call", "the refusal of the second call is what the caller gets")
	assert.Equal(t, int32(2), f.nonces.Load(), "a fresh nonce for the second call")
	assert.Equal(t, int32(2), f.attests.Load(), "one retry, no more")
}

// bundles answers every Attest with an SVID and the next of its trust bundles.
type bundles struct {
	attestationpb.UnimplementedAttestationServer
	svid    []byte
	bundles [][][]byte
	calls   atomic.Int32
}

func (b *bundles) GetNonce(context.Context, *attestationpb.GetNonceRequest) (*attestationpb.GetNonceResponse, error) {
	return &attestationpb.GetNonceResponse{Nonce: make([]byte, attestapi.NonceSize)}, nil
}

func (b *bundles) Attest(context.Context, *attestationpb.AttestRequest) (*attestationpb.AttestResponse, error) {
	i := b.calls.Add(1) - 1
	return &attestationpb.AttestResponse{
		SpiffeId: "spiffe://attestmesh.local/a/b", Tee: "simulation", SvidChain: [][]byte{b.svid}, TrustBundle: b.bundles[i],
	}, nil
}

// The client keeps the last trust bundle parsed; every result has the bundle of its own
// response, through a rotation, and a caller that changes a response's bytes changes nothing
// of the next result.
func TestAttestResultsFollowTheBundle(t *testing.T) {
	ca, next := newTestCA(t, 1), newTestCA(t, 2)
	wkey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	f := &bundles{
		svid: ca.issue(t, spiffeid.RequireFromString("spiffe://attestmesh.local/a/b"), wkey),
		bundles: [][][]byte{
			{ca.cert.Raw}, {ca.cert.Raw}, {ca.cert.Raw, next.cert.Raw}, {next.cert.Raw}, {next.cert.Raw}, nil,
		},
	}
	c := serve(t, ca, f)
	for i, want := range f.bundles[:5] {
		res, err := c.Attest(t.Context(), attestapi.Request{ConfigID: "a/b", Key: wkey})
		require.NoError(t, err, "attestation %d", i)
		require.Len(t, res.Bundle, len(want), "attestation %d", i)
		for j := range want {
			require.Equal(t, want[j], res.Bundle[j].Raw, "attestation %d, bundle certificate %d", i, j)
		}
		for _, der := range res.Response.GetTrustBundle() {
			clear(der) // the caller's to change
		}
	}
	_, err = c.Attest(t.Context(), attestapi.Request{ConfigID: "a/b", Key: wkey})
	require.ErrorContains(t, err, "attestapi: response has no trust_bundle")
}

// csrs records the CSR of every Attest call and refuses it with the next of its reasons.
type csrs struct {
	attestationpb.UnimplementedAttestationServer
	mu      sync.Mutex
	got     [][]byte
	reasons []attestapi.Reason
}

func (c *csrs) GetNonce(context.Context, *attestationpb.GetNonceRequest) (*attestationpb.GetNonceResponse, error) {
	return &attestationpb.GetNonceResponse{Nonce: make([]byte, attestapi.NonceSize)}, nil
}

func (c *csrs) Attest(_ context.Context, req *attestationpb.AttestRequest) (*attestationpb.AttestResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, req.GetCsr())
	reason := c.reasons[0]
	c.reasons = c.reasons[1:]
	return nil, status.Error(codes.PermissionDenied, "attestation refused ("+string(reason)+")")
}

// A client sends the same CSR for the same key, and a new one after the control plane refused
// the CSR itself (csr_invalid) or its binding to the quote (reportdata_mismatch).
func TestAttestSendsTheSameCSRUntilItIsRefused(t *testing.T) {
	srv := &csrs{reasons: []attestapi.Reason{attestapi.ReasonQuoteInvalid, attestapi.ReasonMREnclave,
		attestapi.ReasonCSRInvalid, attestapi.ReasonMREnclave, attestapi.ReasonReportData, attestapi.ReasonMREnclave}}
	c := serve(t, newTestCA(t, 1), srv)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	for range len(srv.reasons) {
		_, err := c.Attest(t.Context(), attestapi.Request{ConfigID: "a/b", Key: key})
		require.Error(t, err)
	}
	g := srv.got
	require.Len(t, g, 6)
	assert.Equal(t, g[0], g[1], "refused for the quote, then the measurement: the same CSR")
	assert.Equal(t, g[1], g[2])
	assert.NotEqual(t, g[2], g[3], "after csr_invalid: a new CSR")
	assert.Equal(t, g[3], g[4])
	assert.NotEqual(t, g[4], g[5], "after reportdata_mismatch: a new CSR")
	for i, der := range g {
		csr, err := x509.ParseCertificateRequest(der)
		require.NoError(t, err, "CSR %d", i)
		require.NoError(t, csr.CheckSignature(), "CSR %d", i)
		assert.True(t, key.PublicKey.Equal(csr.PublicKey), "CSR %d", i)
	}
}

// rotated is a signer whose key changes after the first call of Public (a KMS key that
// rotated): from then on it is b, which also signs.
type rotated struct {
	a, b  *ecdsa.PrivateKey
	calls atomic.Int32
}

func (r *rotated) Public() crypto.PublicKey {
	if r.calls.Add(1) == 1 {
		return r.a.Public()
	}
	return r.b.Public()
}

func (r *rotated) Sign(rd io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return r.b.Sign(rd, d, o)
}

// A CSR is never sent, nor kept, for another key than the one the report data binds.
func TestAttestRefusesACSRForAnotherKey(t *testing.T) {
	srv := &csrs{reasons: []attestapi.Reason{attestapi.ReasonQuoteInvalid}}
	c := serve(t, newTestCA(t, 1), srv)
	var r rotated
	for _, k := range []**ecdsa.PrivateKey{&r.a, &r.b} {
		var err error
		*k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
	}
	_, err := c.Attest(t.Context(), attestapi.Request{ConfigID: "a/b", Key: &r})
	require.EqualError(t, err, "attestapi: create CSR: the CSR's key is not the signer's public key: did the signer's key change?")
	assert.Empty(t, srv.got)
}
