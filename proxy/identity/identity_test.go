package identity_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/attestmesh/attestmesh/proxy/identity"
	"github.com/attestmesh/attestmesh/proxy/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSource(t *testing.T) {
	ca, err := proxytest.NewCA("attestmesh.local")
	require.NoError(t, err)
	id := ca.ID("/app/server")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	src, err := identity.NewSource(key)
	require.NoError(t, err)
	changes := 0
	src.OnChange(func() { changes++ })

	_, err = src.Certificate()
	require.ErrorIs(t, err, identity.ErrNoSVID)

	attest := &proxytest.Attestor{CA: ca, ID: id, TTL: time.Hour}
	ident, err := attest.Attest(t.Context(), key)
	require.NoError(t, err)
	require.NoError(t, src.SetAttested(ident))
	assert.Equal(t, id, src.ID())
	// go-spiffe parses what the test CA issues as an X.509-SVID.
	svid, err := src.GetX509SVID()
	require.NoError(t, err)
	_, _, err = x509svid.Verify(svid.Certificates, src.AttestedBundle())
	require.NoError(t, err)

	longer, err := ca.Issue(id, key.Public(), 2*time.Hour)
	require.NoError(t, err)
	otherKey, err := ca.TLSCertificate(id, 3*time.Hour)
	require.NoError(t, err)
	otherID, err := ca.Issue(ca.ID("/app/client"), key.Public(), 3*time.Hour)
	require.NoError(t, err)

	tests := []struct {
		name       string
		chain      []*x509.Certificate
		wantErr    error
		wantErrMsg string
		wantSerial string
	}{
		{"pushed SVID for another key is ignored", []*x509.Certificate{otherKey.Leaf}, identity.ErrForeignKey, "", ident.SVID[0].SerialNumber.Text(16)},
		{"pushed SVID for another ID is refused", []*x509.Certificate{otherID}, nil, "want spiffe://attestmesh.local/app/server", ident.SVID[0].SerialNumber.Text(16)},
		{"pushed SVID that lives longer wins", []*x509.Certificate{longer}, nil, "", longer.SerialNumber.Text(16)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := src.SetPushed(tt.chain)
			switch {
			case tt.wantErr != nil:
				require.ErrorIs(t, err, tt.wantErr)
			case tt.wantErrMsg != "":
				require.ErrorContains(t, err, tt.wantErrMsg)
			default:
				require.NoError(t, err)
			}
			cur, ok := src.Current()
			require.True(t, ok)
			assert.Equal(t, tt.wantSerial, cur.Serial)
			cert, err := src.Certificate()
			require.NoError(t, err)
			assert.Equal(t, tt.wantSerial, cert.Leaf.SerialNumber.Text(16))
		})
	}
	assert.Equal(t, 2, changes)

	require.False(t, src.HasTrustBundle())
	require.NoError(t, src.SetTrustBundle(id.TrustDomain(), []*x509.Certificate{ca.Cert}))
	b, err := src.GetX509BundleForTrustDomain(id.TrustDomain())
	require.NoError(t, err)
	assert.Len(t, b.X509Authorities(), 1)
	require.Len(t, src.TrustBundle(), 1)
}
