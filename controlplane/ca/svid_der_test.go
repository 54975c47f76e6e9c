package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/der"
)

// TestIssueSVIDIsX509sMatrix: IssueSVID's der path against crypto/x509 for every issuer
// key der signs with, a sub-second now in a non-UTC zone, NotAfter clamped to the root, and
// validity crossing into 2050 (GeneralizedTime).
func TestIssueSVIDIsX509sMatrix(t *testing.T) {
	id := spiffeid.RequireFromPath(testTD, "/sess-1/svc_a.b-c")
	app := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 59999, 1, 2}, Value: []byte{0x04, 0x02, 1, 2}}
	zone := time.FixedZone("X", -7*3600-1800)
	for _, alg := range []Algorithm{P256, P384, Ed25519} {
		for _, c := range []struct {
			name      string
			now       time.Time
			rootValid time.Duration
			ttl       time.Duration
		}{
			{"subsecond-nonUTC", time.Date(2031, 5, 6, 7, 8, 9, 987654321, zone), 24 * time.Hour, time.Hour},
			{"into-2050", time.Date(2049, 12, 31, 23, 0, 0, 999999999, time.UTC), 24 * time.Hour * 400, 24 * time.Hour * 365},
			{"clamped-root", time.Date(2049, 12, 31, 23, 0, 0, 5, zone), 3 * time.Hour, 5 * time.Hour},
		} {
			t.Run(string(alg)+"/"+c.name, func(t *testing.T) {
				key := mustKey(t, alg)
				require.True(t, der.Supported(key), "the SVID path under test is package der's")
				root, err := IssueCA(CARequest{PublicKey: key.Public(), IssuerKey: key, CommonName: "r", ValidFor: c.rootValid, Now: c.now.Add(-time.Minute)})
				require.NoError(t, err)
				a := &Authority{td: testTD, cert: root, key: key, rand: constReader(0x91), now: func() time.Time { return c.now }}
				sub := mustKey(t, P256)
				for _, tee := range []attestapi.TEE{attestapi.TEESGX, attestapi.TEESimulation} {
					mk := func(svid bool) *x509.Certificate {
						s := a.signer(sub.Public(), c.ttl)
						s.svid = svid
						return signSVID(t, s, id, tee, app)
					}
					got, want := mk(true), mk(false)
					require.Equal(t, want.RawTBSCertificate, got.RawTBSCertificate)
					if alg == Ed25519 {
						require.Equal(t, want.Raw, got.Raw)
					}
					require.NoError(t, got.CheckSignatureFrom(root))
					require.False(t, got.NotAfter.After(root.NotAfter))
					t.Logf("%s NotBefore %s NotAfter %s root NotAfter %s", tee, got.NotBefore, got.NotAfter, root.NotAfter)
				}
			})
		}
	}
}

// signSVID signs IssueSVID's template for id, tee and extra with s.
func signSVID(t *testing.T, s signer, id spiffeid.ID, tee attestapi.TEE, extra ...pkix.Extension) *x509.Certificate {
	t.Helper()
	tmpl, err := svidTemplate(id, tee, extra...)
	require.NoError(t, err)
	cert, err := s.sign("issue SVID", tmpl)
	require.NoError(t, err)
	return cert
}
