package xds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

func BenchmarkBuild(b *testing.B) {
	now := time.Now()
	ca := newTestCA(b, now.Add(-time.Minute), now.Add(time.Hour))
	leaf, _ := ca.issue(b, redisID, "", now.Add(-time.Minute), now.Add(time.Hour))
	m := flaskRedis()
	bundle, svid := []*x509.Certificate{ca.cert}, []*x509.Certificate{leaf}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(m, "redis", bundle, svid); err != nil {
			b.Fatal(err)
		}
	}
}

// ringMesh is a mesh of n services where service i serves port 8000 to service i-1 and
// connects to service i+1, so each has one inbound and one outbound listener and cluster.
func ringMesh(n int) *Mesh {
	m := &Mesh{TrustDomain: td, Services: make([]Service, n)}
	for i := range n {
		next, prev := (i+1)%n, (i+n-1)%n
		m.Services[i] = Service{
			Name:  fmt.Sprintf("svc-%d", i),
			ID:    spiffeid.RequireFromPath(td, fmt.Sprintf("/bench/svc-%d", i)),
			Ports: []Port{{Port: 8000, AppPort: 8080, AllowedPeers: []string{fmt.Sprintf("svc-%d", prev)}}},
			Connects: []Connect{{
				Service: fmt.Sprintf("svc-%d", next), Port: 8000, LocalPort: 9000,
				Endpoints: []string{fmt.Sprintf("10.%d.%d.1:8000", next/256, next%256)},
			}},
		}
	}
	return m
}

// benchSVIDs issues one SVID per service, all with one key to keep the setup short.
func benchSVIDs(b *testing.B, ca *testCA, m *Mesh) map[spiffeid.ID][]*x509.Certificate {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(b, err)
	return benchSVIDsFor(b, ca, m, key)
}

// benchSVIDsFor issues one SVID per service of m, all for key.
func benchSVIDsFor(b *testing.B, ca *testCA, m *Mesh, key *ecdsa.PrivateKey) map[spiffeid.ID][]*x509.Certificate {
	b.Helper()
	now := time.Now()
	out := make(map[spiffeid.ID][]*x509.Certificate, len(m.Services))
	for i, s := range m.Services {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i) + 100),
			NotBefore:    now.Add(-time.Minute),
			NotAfter:     now.Add(time.Hour),
			URIs:         []*url.URL{s.ID.URL()},
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
		require.NoError(b, err)
		leaf, err := x509.ParseCertificate(der)
		require.NoError(b, err)
		out[s.ID] = []*x509.Certificate{leaf}
	}
	return out
}

// BenchmarkUpdate1000Nodes measures the fan-out cost of Update for a mesh of 1000 services
// (one snapshot key each; replicas share it): everything new, nothing changed, one SVID
// rotated, and the trust bundle rotated (every secret rebuilt, listeners and clusters reused).
func BenchmarkUpdate1000Nodes(b *testing.B) {
	const n = 1000
	now := time.Now()
	ca := newTestCA(b, now.Add(-time.Minute), now.Add(time.Hour))
	ca2 := newTestCA(b, now.Add(-time.Minute), now.Add(time.Hour))
	m := ringMesh(n)
	svids := benchSVIDs(b, ca, m)
	bundles := [2][]*x509.Certificate{{ca.cert}, {ca.cert, ca2.cert}}
	rotated := benchSVIDs(b, ca, &Mesh{TrustDomain: td, Services: m.Services[:1]})[m.Services[0].ID]
	newServer := func(b *testing.B) *Server {
		b.Helper()
		srv, err := New(Config{TLS: bundleTLS(bundles[0])})
		require.NoError(b, err)
		require.NoError(b, srv.Update(m, bundles[0], svids))
		return srv
	}

	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			srv, err := New(Config{TLS: bundleTLS(bundles[0])})
			require.NoError(b, err)
			b.StartTimer()
			if err := srv.Update(m, bundles[0], svids); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		srv := newServer(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := srv.Update(m, bundles[0], svids); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-svid-rotated", func(b *testing.B) {
		srv := newServer(b)
		chains := [2][]*x509.Certificate{svids[m.Services[0].ID], rotated}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			svids[m.Services[0].ID] = chains[i%2]
			if err := srv.Update(m, bundles[0], svids); err != nil {
				b.Fatal(err)
			}
		}
		svids[m.Services[0].ID] = chains[0]
	})
	b.Run("bundle-rotated", func(b *testing.B) {
		srv := newServer(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			if err := srv.Update(m, bundles[i%2], svids); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func bundleTLS(bundle []*x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	for _, c := range bundle {
		pool.AddCert(c)
	}
	return &tls.Config{ClientCAs: pool, MinVersion: tls.VersionTLS13}
}
