package proxytest_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/attestmesh/attestmesh/proxy/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestIssuedSVIDsVerify(t *testing.T) {
	ca, err := proxytest.NewCA("attestmesh.local")
	require.NoError(t, err)
	bundle := x509bundle.FromX509Authorities(ca.TD, ca.Bundle())
	tests := []struct {
		name    string
		nb      time.Time
		wantErr string
	}{
		{"valid", time.Now().Add(-time.Second), ""},
		{"expired", time.Now().Add(-2 * time.Hour), "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := ca.TLSCertificateAt(ca.ID("/app/server"), tt.nb, time.Hour)
			require.NoError(t, err)
			id, _, err := x509svid.Verify([]*x509.Certificate{cert.Leaf}, bundle)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "spiffe://attestmesh.local/app/server", id.String())
		})
	}
}
