package attestapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/url"
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

// An Attest call that fails with Unavailable (its replica died during the call) is made once
// more from a fresh nonce; a refusal is not.
func TestAttestRetriesWhenTheReplicaWentAway(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("attestmesh.local")
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{td.ID().URL()},
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		URIs: []*url.URL{attestapi.ControlPlaneID(td).URL()},
	}, ca, key.Public(), caKey)
	require.NoError(t, err)

	f := &flaky{}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}, MinVersion: tls.VersionTLS13,
	})))
	attestationpb.RegisterAttestationServer(srv, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	c, err := attestapi.Dial(attestapi.ClientConfig{Addr: lis.Addr().String(), Bundle: []*x509.Certificate{ca}, Quotes: noQuote{}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	wkey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, err = c.Attest(t.Context(), attestapi.Request{ConfigID: "a/b", Key: wkey})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "second call", "the refusal of the second call is what the caller gets")
	assert.Equal(t, int32(2), f.nonces.Load(), "a fresh nonce for the second call")
	assert.Equal(t, int32(2), f.attests.Load(), "one retry, no more")
}
