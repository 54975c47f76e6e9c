// Package mgmttest runs a real management API (CAS over an encrypted bbolt store, HTTPS with a
// certificate from a real control-plane CA) on 127.0.0.1 for tests.
package mgmttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/mgmt"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/registry"
	"github.com/attestmesh/attestmesh/controlplane/store/storetest"
)

// Server is a running management API.
type Server struct {
	URL       string
	Roots     *x509.CertPool
	CAS       *cas.CAS
	Authority *ca.Authority
	Metrics   *prometheus.Registry
}

// Start starts a management API for the test; it stops when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, nil)
}

// StartWith is Start with the handler's configuration changed by configure (limits, say).
func StartWith(tb testing.TB, configure func(*mgmt.Config)) *Server {
	tb.Helper()
	st := storetest.Open(tb)
	auth, err := ca.NewAuthority(ca.AuthorityConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("test.local")})
	require.NoError(tb, err)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	srvCert, err := auth.IssueServerCert(srvKey.Public(), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	require.NoError(tb, err)

	c := cas.New(cas.Config{Store: st, MeshSessions: registry.Sessions})
	reg := prometheus.NewRegistry()
	cfg := mgmt.Config{CAS: c, BundlePEM: auth.BundlePEM(), Registerer: reg}
	if configure != nil {
		configure(&cfg)
	}
	srv := httptest.NewUnstartedServer(mgmt.NewHandler(cfg))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey}},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(auth.Bundle()[0])
	return &Server{URL: srv.URL, Roots: roots, CAS: c, Authority: auth, Metrics: reg}
}

// Client returns a client with a fresh identity, or none when withIdentity is false.
func (s *Server) Client(tb testing.TB, withIdentity bool) *mgmtapi.Client {
	tb.Helper()
	cfg := mgmtapi.ClientConfig{URL: s.URL, Roots: s.Roots}
	if withIdentity {
		id, err := mgmtapi.LoadOrCreateIdentity(tb.TempDir())
		require.NoError(tb, err)
		cfg.Identity = id
	}
	c, err := mgmtapi.NewClient(cfg)
	require.NoError(tb, err)
	return c
}
