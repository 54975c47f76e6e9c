package attestation_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
	"github.com/attestmesh/attestmesh/attest/dcap"
	"github.com/attestmesh/attestmesh/attest/sim"
	"github.com/attestmesh/attestmesh/controlplane/attestation"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/store/storetest"
)

// FuzzAttestRequest decodes arbitrary bytes as an AttestRequest, as the gRPC server does, and
// runs the whole attestation on it: it must never panic and must answer every malformed
// request with a gRPC status, never with an SVID. Seeds include a request that is valid except
// for its (already consumed) nonce.
func FuzzAttestRequest(f *testing.F) {
	ctx := context.Background()
	c := cas.New(cas.Config{Store: storetest.Open(f)})
	_, err := c.Create(ctx, []byte("name: fz\nversion: \"0.3\"\nsecurity:\n  attestation:\n    mode: simulation\nservices:\n  - name: s\n    mrenclaves: [\""+hexOf(pythonMR)+"\"]\n"), cas.Client{ID: "x"})
	require.NoError(f, err)
	auth, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("attestmesh.local")})
	require.NoError(f, err)
	platform, err := sim.NewPlatform(rand.Reader, sim.PlatformOptions{})
	require.NoError(f, err)
	srv, err := attestation.NewServer(attestation.Config{CAS: c, Authority: auth, MACKey: make([]byte, 32), PeerRate: -1, Verifier: &attestation.Verifier{
		Simulation: attestation.TrustAnchor{Root: platform.Root(), Collateral: attestation.CollateralFunc(
			func(context.Context, string) (dcap.Collateral, error) { return platform.Collateral(time.Now()) })},
	}})
	require.NoError(f, err)

	nr, err := srv.GetNonce(ctx, &attestationpb.GetNonceRequest{ConfigId: "fz/s"})
	require.NoError(f, err)
	k := newKey(f)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	require.NoError(f, err)
	spki, err := x509.MarshalPKIXPublicKey(k.Public())
	require.NoError(f, err)
	var n [32]byte
	copy(n[:], nr.GetNonce())
	quote, err := platform.Quote(sim.Report{MREnclave: pythonMR, ReportData: attestapi.BindReportData(spki, n)})
	require.NoError(f, err)
	valid := &attestationpb.AttestRequest{ConfigId: "fz/s", Role: attestationpb.Role_ROLE_APP, Nonce: nr.GetNonce(), Quote: quote, Csr: csr}
	_, err = srv.Attest(ctx, valid) // consumes the nonce: the seed is now a replay
	require.NoError(f, err)
	for _, seed := range []*attestationpb.AttestRequest{valid, {ConfigId: "fz/s"}, {ConfigId: "/", Role: 7, Quote: []byte{1}, Csr: []byte{2}}} {
		b, err := proto.Marshal(seed)
		require.NoError(f, err)
		f.Add(b)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		var req attestationpb.AttestRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		resp, err := srv.Attest(ctx, &req)
		if err == nil {
			t.Fatalf("attested a fuzzed request: %v", resp.GetSpiffeId())
		}
		if _, ok := status.FromError(err); !ok {
			t.Fatalf("refusal is not a gRPC status: %v", err)
		}
	})
}
