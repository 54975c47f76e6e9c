package ca

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"net"
	"testing"
	"time"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/der"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var testTD = spiffeid.RequireTrustDomainFromString("attestmesh.local")

func mustAuthority(tb testing.TB) *Authority {
	tb.Helper()
	a, err := NewAuthority(AuthorityConfig{TrustDomain: testTD})
	require.NoError(tb, err)
	return a
}

func TestNewAuthority(t *testing.T) {
	now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	a, err := NewAuthority(AuthorityConfig{TrustDomain: testTD, Now: func() time.Time { return now }})
	require.NoError(t, err)
	bundle := a.Bundle()
	require.Len(t, bundle, 1)
	root := bundle[0]
	assert.Equal(t, "attestmesh CA attestmesh.local", root.Subject.CommonName)
	assert.Equal(t, []string{"attestmesh"}, root.Subject.Organization)
	assert.Equal(t, root.Subject.String(), root.Issuer.String())
	assert.True(t, root.IsCA)
	assert.Equal(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, root.KeyUsage)
	alg, err := AlgorithmOf(root.PublicKey)
	require.NoError(t, err)
	assert.Equal(t, P256, alg)
	require.Len(t, root.URIs, 1)
	assert.Equal(t, "spiffe://attestmesh.local", root.URIs[0].String())
	assert.Equal(t, now.Add(-ClockSkew), root.NotBefore)
	assert.Equal(t, now.Add(DefaultRootValidity), root.NotAfter)
	assert.Equal(t, testTD, a.TrustDomain())
	assert.Equal(t, "spiffe://attestmesh.local/controlplane", a.ControlPlaneID().String())

	certs, err := ParseCertsPEM(a.BundlePEM())
	require.NoError(t, err)
	require.Len(t, certs, 1)
	assert.Equal(t, root.Raw, certs[0].Raw)

	_, err = NewAuthority(AuthorityConfig{})
	require.EqualError(t, err, "ca: new authority: trust domain is empty")
}

// TestIssueSVID parses every SVID with go-spiffe, verifies it against the bundle, and checks
// the X.509-SVID rules and the attestapi.TEE marking.
func TestIssueSVID(t *testing.T) {
	a := mustAuthority(t)
	id := spiffeid.RequireFromPath(testTD, "/redis/redis-server")
	tests := []struct {
		name   string
		alg    Algorithm
		tee    attestapi.TEE
		wantOU []string
	}{
		{name: "P-256 hardware", alg: P256, tee: attestapi.TEESGX},
		{name: "P-256 simulation", alg: P256, tee: attestapi.TEESimulation, wantOU: []string{attestapi.SimulatedTEEUnit}},
		{name: "Ed25519 hardware", alg: Ed25519, tee: attestapi.TEESGX},
		{name: "Ed25519 simulation", alg: Ed25519, tee: attestapi.TEESimulation, wantOU: []string{attestapi.SimulatedTEEUnit}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := mustKey(t, tt.alg)
			csr, err := ParseCSR(mustCSR(t, key))
			require.NoError(t, err)
			chain, err := a.IssueSVID(csr, id, 10*time.Minute, tt.tee)
			require.NoError(t, err)
			require.Len(t, chain, 1)
			leaf := chain[0]

			keyDER, err := x509.MarshalPKCS8PrivateKey(key)
			require.NoError(t, err)
			svid, err := x509svid.ParseRaw(leaf.Raw, keyDER)
			require.NoError(t, err)
			assert.Equal(t, id, svid.ID)

			gotID, chains, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(testTD, a.Bundle()))
			require.NoError(t, err)
			assert.Equal(t, id, gotID)
			require.Len(t, chains, 1)

			require.Len(t, leaf.URIs, 1)
			assert.Equal(t, id.String(), leaf.URIs[0].String())
			assert.Empty(t, leaf.DNSNames, "nothing from the CSR is copied")
			assert.Empty(t, leaf.Subject.CommonName)
			assert.False(t, leaf.IsCA)
			assert.Equal(t, x509.KeyUsageDigitalSignature, leaf.KeyUsage)
			assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, leaf.ExtKeyUsage)
			assert.Equal(t, 10*time.Minute+ClockSkew, leaf.NotAfter.Sub(leaf.NotBefore))
			assert.Equal(t, tt.wantOU, leaf.Subject.OrganizationalUnit)
			assert.Equal(t, tt.tee, attestapi.TEEOf(leaf))
			for _, ext := range leaf.Extensions {
				if ext.Id.Equal(attestapi.OIDTEE) {
					assert.False(t, ext.Critical)
				}
			}
			requireOpenSSLOK(t, a.Bundle()[0], leaf, nil, "-purpose", "sslclient")
		})
	}
}

func TestIssueSVIDDefaultsAndClamp(t *testing.T) {
	start := time.Now()
	now := start
	a, err := NewAuthority(AuthorityConfig{TrustDomain: testTD, RootValidity: 2 * time.Hour, Now: func() time.Time { return now }})
	require.NoError(t, err)
	csr, err := ParseCSR(mustCSR(t, mustKey(t, P256)))
	require.NoError(t, err)
	id := spiffeid.RequireFromPath(testTD, "/flask/api")

	chain, err := a.IssueSVID(csr, id, 0, attestapi.TEESGX)
	require.NoError(t, err)
	assert.Equal(t, DefaultSVIDTTL+ClockSkew, chain[0].NotAfter.Sub(chain[0].NotBefore))

	chain, err = a.IssueSVID(csr, id, 10*time.Hour, attestapi.TEESGX)
	require.NoError(t, err)
	assert.Equal(t, a.Bundle()[0].NotAfter, chain[0].NotAfter, "never past the root")

	now = start.Add(3 * time.Hour)
	_, err = a.IssueSVID(csr, id, time.Hour, attestapi.TEESGX)
	require.ErrorContains(t, err, `ca: issue SVID: issuer "attestmesh CA attestmesh.local" expired at`)
}

func TestIssueSVIDRefusals(t *testing.T) {
	a := mustAuthority(t)
	id := spiffeid.RequireFromPath(testTD, "/s/svc")
	good, err := ParseCSR(mustCSR(t, mustKey(t, P256)))
	require.NoError(t, err)

	// Key types and signatures are ParseCSR's to refuse (TestParseCSR); a CSR that it did not
	// make has no key to issue to.
	tests := []struct {
		name    string
		csr     *CSR
		id      spiffeid.ID
		ttl     time.Duration
		tee     attestapi.TEE
		wantErr string
	}{
		{name: "nil CSR", id: id, tee: attestapi.TEESGX, wantErr: "ca: issue SVID: no CSR (ParseCSR makes one)"},
		{name: "CSR not from ParseCSR", csr: &CSR{}, id: id, tee: attestapi.TEESGX, wantErr: "ca: issue SVID: no CSR (ParseCSR makes one)"},
		{name: "empty ID", csr: good, tee: attestapi.TEESGX, wantErr: "ca: issue SVID: empty SPIFFE ID"},
		{name: "other trust domain", csr: good, id: spiffeid.RequireFromString("spiffe://evil.example/s/svc"), tee: attestapi.TEESGX,
			wantErr: `ca: issue SVID: spiffe://evil.example/s/svc is not in trust domain "attestmesh.local"`},
		{name: "trust domain ID", csr: good, id: testTD.ID(), tee: attestapi.TEESGX, wantErr: "has no path"},
		{name: "negative ttl", csr: good, id: id, ttl: -time.Second, tee: attestapi.TEESGX, wantErr: "ca: issue SVID: negative ttl -1s"},
		{name: "unknown TEE", csr: good, id: id, tee: "tdx", wantErr: `ca: issue SVID: unknown attestapi.TEE "tdx" (want "sgx" or "simulation")`},
		{name: "no TEE", csr: good, id: id, wantErr: `ca: issue SVID: unknown attestapi.TEE ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := a.IssueSVID(tt.csr, tt.id, tt.ttl, tt.tee)
			require.ErrorContains(t, err, tt.wantErr)
			assert.Nil(t, chain)
		})
	}
}

func TestAuthorityPersistence(t *testing.T) {
	a := mustAuthority(t)
	data, err := a.MarshalPEM()
	require.NoError(t, err)

	loaded, err := LoadAuthority(data, AuthorityConfig{})
	require.NoError(t, err)
	assert.Equal(t, a.Bundle()[0].Raw, loaded.Bundle()[0].Raw)
	assert.Equal(t, testTD, loaded.TrustDomain())

	// An SVID from the loaded CA verifies against the original bundle.
	csr, err := ParseCSR(mustCSR(t, mustKey(t, P256)))
	require.NoError(t, err)
	id := spiffeid.RequireFromPath(testTD, "/ns/session/svc")
	chain, err := loaded.IssueSVID(csr, id, time.Minute, attestapi.TEESGX)
	require.NoError(t, err)
	gotID, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(testTD, a.Bundle()))
	require.NoError(t, err)
	assert.Equal(t, id, gotID)

	other := mustAuthority(t)
	otherPEM, err := other.MarshalPEM()
	require.NoError(t, err)
	otherKeyPEM := otherPEM[len(other.BundlePEM()):]
	leafKey := mustKey(t, P256)
	leaf, err := IssueLeaf(LeafRequest{PublicKey: leafKey.Public(), IssuerKey: leafKey, CommonName: "leaf", ValidFor: time.Hour})
	require.NoError(t, err)
	leafKeyPEM, err := MarshalKeyPEM(leafKey)
	require.NoError(t, err)

	tests := []struct {
		name    string
		in      []byte
		cfg     AuthorityConfig
		wantErr string
	}{
		{name: "empty", in: nil, wantErr: "ca: load authority: want one CERTIFICATE and one PRIVATE KEY PEM block"},
		{name: "certificate only", in: a.BundlePEM(), wantErr: "want one CERTIFICATE and one PRIVATE KEY"},
		{name: "two certificates", in: append(append([]byte{}, data...), a.BundlePEM()...), wantErr: `unexpected PEM block "CERTIFICATE"`},
		{name: "key of another CA", in: append(a.BundlePEM(), otherKeyPEM...), wantErr: "ca: load authority: the private key does not match the certificate"},
		{name: "not a CA", in: append(MarshalCertsPEM(leaf), leafKeyPEM...), wantErr: "ca: load authority: the certificate is not a CA with keyCertSign"},
		{name: "other trust domain", in: data, cfg: AuthorityConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("prod.example")},
			wantErr: `ca: load authority: the CA is for trust domain "attestmesh.local", configured "prod.example"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadAuthority(tt.in, tt.cfg)
			require.ErrorContains(t, err, tt.wantErr)
			assert.NotContains(t, err.Error(), "PRIVATE KEY-----")
		})
	}
}

// TestServerCertTLS serves TLS on 127.0.0.1 with a server certificate from the Authority and
// connects with a client that trusts only the bundle.
func TestServerCertTLS(t *testing.T) {
	a := mustAuthority(t)
	key := mustKey(t, P256)
	cert, err := a.IssueServerCert(key.Public(), []string{"localhost", "attestmesh-controlplane.attestmesh.svc"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	require.NoError(t, err)
	assert.Equal(t, DefaultServerTTL+ClockSkew, cert.NotAfter.Sub(cert.NotBefore))
	require.Len(t, cert.URIs, 1)
	assert.Equal(t, a.ControlPlaneID().String(), cert.URIs[0].String())
	requireOpenSSLOK(t, a.Bundle()[0], cert, nil, "-verify_hostname", "localhost", "-purpose", "sslserver")
	requireOpenSSLOK(t, a.Bundle()[0], cert, nil, "-verify_ip", "127.0.0.1", "-purpose", "sslserver")

	// It is an SVID too: sidecars can authorize the control plane by ID.
	gotID, _, err := x509svid.Verify([]*x509.Certificate{cert}, x509bundle.FromX509Authorities(testTD, a.Bundle()))
	require.NoError(t, err)
	assert.Equal(t, a.ControlPlaneID(), gotID)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS13,
	})
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // the listener is closed
			}
			_, _ = c.Write([]byte("hello")) // completes the handshake; the client asserts
			_ = c.Close()
		}
	}()

	pool := x509.NewCertPool()
	pool.AddCert(a.Bundle()[0])
	for _, serverName := range []string{"localhost", "127.0.0.1"} {
		t.Run(serverName, func(t *testing.T) {
			d := tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS13}}
			conn, err := d.DialContext(t.Context(), "tcp", ln.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			got, err := io.ReadAll(conn)
			require.NoError(t, err)
			assert.Equal(t, "hello", string(got))
		})
	}

	// A client that trusts another CA refuses the certificate.
	otherPool := x509.NewCertPool()
	otherPool.AddCert(mustAuthority(t).Bundle()[0])
	d := tls.Dialer{Config: &tls.Config{RootCAs: otherPool, ServerName: "localhost", MinVersion: tls.VersionTLS13}}
	_, err = d.DialContext(t.Context(), "tcp", ln.Addr().String())
	var unknownAuthority x509.UnknownAuthorityError
	require.ErrorAs(t, err, &unknownAuthority)

	rsaKey := mustKey(t, RSA2048)
	rsaCert, err := a.IssueServerCert(rsaKey.Public(), []string{"localhost"}, nil, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment, rsaCert.KeyUsage)

	_, err = a.IssueServerCert(key.Public(), nil, nil, -time.Hour)
	require.EqualError(t, err, "ca: issue server certificate: negative ttl -1h0m0s")
	_, err = a.IssueServerCert(key.Public(), []string{"bad name"}, nil, time.Hour)
	require.ErrorContains(t, err, `ca: issue server certificate: ca: DNS name "bad name"`)
}

func TestTEEOf(t *testing.T) {
	key := mustKey(t, P256)
	plain, err := IssueLeaf(LeafRequest{PublicKey: key.Public(), IssuerKey: key, CommonName: "plain", ValidFor: time.Hour})
	require.NoError(t, err)
	ouOnly := *plain
	ouOnly.Subject.OrganizationalUnit = []string{attestapi.SimulatedTEEUnit}
	garbled := *plain
	garbled.Extensions = append(append([]pkix.Extension{}, plain.Extensions...), pkix.Extension{Id: attestapi.OIDTEE, Value: []byte{0xff}})

	tests := []struct {
		name string
		cert *x509.Certificate
		want attestapi.TEE
	}{
		{name: "nil", cert: nil, want: attestapi.TEEUnknown},
		{name: "unmarked", cert: plain, want: attestapi.TEEUnknown},
		{name: "OU alone marks simulation", cert: &ouOnly, want: attestapi.TEESimulation},
		{name: "undecodable extension", cert: &garbled, want: attestapi.TEEUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, attestapi.TEEOf(tt.cert))
		})
	}
}

// constReader is a random source that repeats one byte: two issuances from it get the same
// serial number.
type constReader byte

func (c constReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

// TestIssueSVIDIsX509s checks that an SVID from package der (IssueSVID's path for the
// authority's ECDSA key) is what crypto/x509 makes of the same template, byte for byte before
// the signature, for both TEEs and with extra extensions; and that an issuer key der does not
// sign with (RSA) still issues, through crypto/x509.
func TestIssueSVIDIsX509s(t *testing.T) {
	now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	a, err := NewAuthority(AuthorityConfig{TrustDomain: testTD, Rand: constReader(0x5a), Now: func() time.Time { return now }})
	require.NoError(t, err)
	id := spiffeid.RequireFromPath(testTD, "/demo/flask")
	extra := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 7}, Value: []byte{0x04, 0x01, 0x2a}}
	issue := func(t *testing.T, s signer, tee attestapi.TEE) *x509.Certificate {
		t.Helper()
		return signSVID(t, s, id, tee, extra)
	}
	for _, tee := range []attestapi.TEE{attestapi.TEESGX, attestapi.TEESimulation} {
		t.Run(string(tee), func(t *testing.T) {
			require.True(t, der.Supported(a.key), "the SVID path under test is package der's")
			key := mustKey(t, P256)
			s := a.signer(key.Public(), time.Hour)
			s.svid = true
			got := issue(t, s, tee)
			s.svid = false
			want := issue(t, s, tee)
			require.Equal(t, want.RawTBSCertificate, got.RawTBSCertificate)
			require.NoError(t, got.CheckSignatureFrom(a.Bundle()[0]))
		})
	}
	t.Run("RSA issuer", func(t *testing.T) {
		rsaKey := mustKey(t, RSA2048)
		root, err := IssueCA(CARequest{PublicKey: rsaKey.Public(), IssuerKey: rsaKey, CommonName: "rsa root", ValidFor: time.Hour})
		require.NoError(t, err)
		s := signer{pub: mustKey(t, P256).Public(), issuer: root, issuerKey: rsaKey, validFor: time.Hour, svid: true}
		cert := issue(t, s, attestapi.TEESGX)
		require.Equal(t, x509.SHA256WithRSA, cert.SignatureAlgorithm)
		require.NoError(t, cert.CheckSignatureFrom(root))
	})
}

// IssueSVIDDER issues what IssueSVID does, unparsed: the same certificate from the same
// randomness and time (ECDSA's signature aside, which takes entropy of its own), and an SVID
// that verifies for the CSR's key.
func TestIssueSVIDDER(t *testing.T) {
	now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	a, err := NewAuthority(AuthorityConfig{TrustDomain: testTD, Rand: constReader(0x5a), Now: func() time.Time { return now }})
	require.NoError(t, err)
	id := spiffeid.RequireFromPath(testTD, "/demo/flask")
	for _, alg := range []Algorithm{P256, Ed25519} {
		t.Run(string(alg), func(t *testing.T) {
			csr, err := ParseCSR(mustCSR(t, mustKey(t, alg)))
			require.NoError(t, err)
			ders, err := a.IssueSVIDDER(csr, id, time.Hour, attestapi.TEESimulation)
			require.NoError(t, err)
			require.Len(t, ders, 1)
			chain, err := a.IssueSVID(csr, id, time.Hour, attestapi.TEESimulation)
			require.NoError(t, err)
			leaf, err := x509.ParseCertificate(ders[0])
			require.NoError(t, err)
			assert.Equal(t, chain[0].RawTBSCertificate, leaf.RawTBSCertificate)
			assert.Equal(t, csr.RawSubjectPublicKeyInfo(), leaf.RawSubjectPublicKeyInfo)
			gotID, _, err := x509svid.Verify([]*x509.Certificate{leaf}, x509bundle.FromX509Authorities(testTD, a.Bundle()), x509svid.WithTime(now))
			require.NoError(t, err)
			assert.Equal(t, id, gotID)
		})
	}
	_, err = a.IssueSVIDDER(nil, id, time.Hour, attestapi.TEESGX)
	require.EqualError(t, err, "ca: issue SVID: no CSR (ParseCSR makes one)")
}
