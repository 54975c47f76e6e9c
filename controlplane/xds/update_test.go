package xds

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	sidecar "github.com/attestmesh/attestmesh/proxy/resource"
)

func newTestServer(t *testing.T) *Server {
	t.Helper()
	srv, err := New(Config{TLS: &tls.Config{ClientCAs: x509.NewCertPool()}})
	require.NoError(t, err)
	return srv
}

func snapshotOf(t *testing.T, srv *Server, id spiffeid.ID) *cache.Snapshot {
	t.Helper()
	s, err := srv.cache.GetSnapshot(id.String())
	require.NoError(t, err)
	return s.(*cache.Snapshot)
}

func TestUpdateSharesAndVersions(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now.Add(-time.Minute), now.Add(time.Hour))
	bundle := []*x509.Certificate{ca.cert}
	flaskLeaf, _ := ca.issue(t, flaskID, "", now.Add(-time.Minute), now.Add(time.Hour))
	redisLeaf, _ := ca.issue(t, redisID, "", now.Add(-time.Minute), now.Add(time.Hour))
	svids := map[spiffeid.ID][]*x509.Certificate{flaskID: {flaskLeaf}, redisID: {redisLeaf}}
	srv := newTestServer(t)
	require.NoError(t, srv.Update(flaskRedis(), bundle, svids))
	flask1, redis1 := snapshotOf(t, srv, flaskID), snapshotOf(t, srv, redisID)
	assert.Same(t, flask1.Resources[types.Secret].Items[sidecar.SecretTrustBundle].Resource,
		redis1.Resources[types.Secret].Items[sidecar.SecretTrustBundle].Resource, "the trust bundle secret is one object")

	// Same inputs: the same snapshot objects, nothing re-published.
	require.NoError(t, srv.Update(flaskRedis(), bundle, svids))
	assert.Same(t, flask1, snapshotOf(t, srv, flaskID))
	assert.Same(t, redis1, snapshotOf(t, srv, redisID))

	// A new SVID for redis: only redis's secrets version changes.
	redisLeaf2, _ := ca.issue(t, redisID, "", now.Add(-time.Minute), now.Add(time.Hour))
	svids[redisID] = []*x509.Certificate{redisLeaf2}
	require.NoError(t, srv.Update(flaskRedis(), bundle, svids))
	redis2 := snapshotOf(t, srv, redisID)
	assert.Same(t, flask1, snapshotOf(t, srv, flaskID))
	assert.Equal(t, redis1.GetVersion(resource.ListenerType), redis2.GetVersion(resource.ListenerType))
	assert.Equal(t, redis1.GetVersion(resource.ClusterType), redis2.GetVersion(resource.ClusterType))
	assert.NotEqual(t, redis1.GetVersion(resource.SecretType), redis2.GetVersion(resource.SecretType))
	assert.Same(t, redis1.Resources[types.Listener].Items["inbound|16379"].Resource,
		redis2.Resources[types.Listener].Items["inbound|16379"].Resource, "unchanged listeners are reused")

	// A mesh change for flask only: its endpoint moves; only its clusters change.
	m := flaskRedis()
	m.Services[0].Connects[0].Endpoints = []string{"10.0.0.13:16379"}
	require.NoError(t, srv.Update(m, bundle, svids))
	flask3 := snapshotOf(t, srv, flaskID)
	assert.NotEqual(t, flask1.GetVersion(resource.ClusterType), flask3.GetVersion(resource.ClusterType))
	assert.Equal(t, flask1.GetVersion(resource.ListenerType), flask3.GetVersion(resource.ListenerType))
	assert.Equal(t, flask1.GetVersion(resource.SecretType), flask3.GetVersion(resource.SecretType))
	assert.Same(t, redis2, snapshotOf(t, srv, redisID))

	// A new trust bundle: every node's secrets change, with one new bundle secret, marshalled
	// once, and the SVID secrets reused; the listeners and clusters do not change.
	ca2 := newTestCA(t, now.Add(-time.Minute), now.Add(time.Hour))
	bundle2 := []*x509.Certificate{ca.cert, ca2.cert}
	require.NoError(t, srv.Update(m, bundle2, svids))
	flask4, redis4 := snapshotOf(t, srv, flaskID), snapshotOf(t, srv, redisID)
	assert.NotEqual(t, flask3.GetVersion(resource.SecretType), flask4.GetVersion(resource.SecretType))
	assert.NotEqual(t, redis2.GetVersion(resource.SecretType), redis4.GetVersion(resource.SecretType))
	assert.Equal(t, flask3.GetVersion(resource.ListenerType), flask4.GetVersion(resource.ListenerType))
	assert.Same(t, flask3.Resources[types.Secret].Items[sidecar.SecretSVID].Resource,
		flask4.Resources[types.Secret].Items[sidecar.SecretSVID].Resource, "the SVID secret is reused")
	flaskWire, redisWire := srv.current(flaskID).wireOf(resource.SecretType), srv.current(redisID).wireOf(resource.SecretType)
	assert.Equal(t, []string{sidecar.SecretSVID, sidecar.SecretTrustBundle}, flaskWire.names)
	assert.Same(t, flaskWire.anys[1], redisWire.anys[1], "the trust bundle is marshalled once")
	assert.Equal(t, flask4.GetVersion(resource.SecretType), flaskWire.version)
	var got tlsv3.Secret
	require.NoError(t, flaskWire.anys[1].UnmarshalTo(&got))
	assert.Equal(t, append(pemOf(ca.cert), pemOf(ca2.cert)...), got.GetValidationContext().GetTrustedCa().GetInlineBytes())
	require.NoError(t, flaskWire.anys[0].UnmarshalTo(&got))
	assert.Equal(t, pemOf(flaskLeaf), got.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	require.NoError(t, srv.Update(m, bundle, svids)) // back to the first bundle
	flask3, redis2 = snapshotOf(t, srv, flaskID), snapshotOf(t, srv, redisID)
	assert.Same(t, flask4.Resources[types.Secret].Items[sidecar.SecretSVID].Resource,
		flask3.Resources[types.Secret].Items[sidecar.SecretSVID].Resource)
	assert.NotSame(t, redis4, redis2)

	// All or nothing: an SVID with the wrong identity publishes nothing.
	bad := map[spiffeid.ID][]*x509.Certificate{flaskID: {redisLeaf}, redisID: {redisLeaf}}
	require.ErrorContains(t, srv.Update(flaskRedis(), bundle, bad), `SVID for "spiffe://attestmesh.local/flask-redis/flask" holds SPIFFE ID`)
	assert.Same(t, flask3, snapshotOf(t, srv, flaskID))
	require.ErrorContains(t, srv.Update(&Mesh{}, bundle, svids), "xds: mesh: trust domain is empty")
	require.ErrorContains(t, srv.Update(flaskRedis(), nil, svids), "xds: build: trust bundle is empty")
	assert.Same(t, flask3, snapshotOf(t, srv, flaskID))

	// A service without an SVID, or gone from the mesh, loses its snapshot.
	delete(svids, redisID)
	require.NoError(t, srv.Update(m, bundle, svids))
	_, err := srv.cache.GetSnapshot(redisID.String())
	require.Error(t, err)
	assert.Same(t, flask3, snapshotOf(t, srv, flaskID))
}

func TestNewConfig(t *testing.T) {
	pool := x509.NewCertPool()
	reg := prometheus.NewRegistry()
	_, err := New(Config{TLS: &tls.Config{ClientCAs: pool}, Metrics: reg})
	require.NoError(t, err)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no TLS", Config{}, "xds: config: TLS is required"},
		{"no client CAs", Config{TLS: &tls.Config{}}, "xds: config: TLS.ClientCAs is required"},
		{"metrics registered twice", Config{TLS: &tls.Config{ClientCAs: pool}, Metrics: reg}, "xds: register metrics: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestEnforceMTLS(t *testing.T) {
	weak := &tls.Config{ClientAuth: tls.NoClientCert, MinVersion: tls.VersionTLS12}
	tests := []struct {
		name string
		cfg  *tls.Config
	}{
		{"static", weak.Clone()},
		{"GetConfigForClient", &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return weak, nil }}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := enforceMTLS(tt.cfg)
			if got.GetConfigForClient != nil {
				var err error
				got, err = got.GetConfigForClient(&tls.ClientHelloInfo{})
				require.NoError(t, err)
			}
			assert.Equal(t, tls.RequireAndVerifyClientCert, got.ClientAuth)
			assert.Equal(t, uint16(tls.VersionTLS13), got.MinVersion)
		})
	}
	assert.Equal(t, tls.NoClientCert, weak.ClientAuth, "the caller's config is not modified")
}
