package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/xds"
	sidecar "github.com/attestmesh/attestmesh/proxy/resource"
)

// FuzzParse feeds untrusted registrations (the body of PUT /v1/meshes/{name}) through Parse,
// Sessions and BuildModel. A registration the registry accepts must give every one of its
// services xDS resources that the control plane publishes (xds.ValidateSnapshot) and that the
// sidecar accepts (proxy/resource's parsers): the registry must not take in a mesh that it
// cannot serve. Seeds: the example's mesh file and the shapes of the registry's tests.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "..", "examples", "flask-redis", "mesh.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, r := range []mgmtapi.Registration{
		{Mesh: string(example), Endpoints: map[string]string{"redis": "10.231.0.2", "api": "10.231.0.3"}},
		{
			Mesh: "name: a\nsessions: [s.yaml]\nservices:\n" +
				"  - name: server\n    config_id: one/db/db\n    binary: /bin/true\n    ports: [{port: 6379}]\n" +
				"  - name: client\n    config_id: one/api/api\n    binary: /bin/true\n    connects: [{service: server, port: 6379, local_port: 16379}]\n",
			Endpoints: map[string]string{"server": "127.0.0.2", "client": "127.0.0.3"},
		},
		{
			Mesh: "name: app\nsessions: [s.yaml]\nvariables: {NS: ns}\nservices:\n" +
				"  - name: a\n    config_id: $NS/a\n    binary: /bin/true\n    ports: [{port: 80}]\n" +
				"  - name: b\n    config_id: ${NS}/b\n    binary: /bin/true\n    ports: [{port: 80, expose: true}]\n" +
				"  - name: c\n    config_id: ns/c\n    binary: /bin/true\n    connects: [{service: a, port: 80}, {service: b, port: 80, local_port: 8081}]\n",
			Endpoints: map[string]string{"a": "fd00::1", "b": "10.0.0.2", "c": "10.0.0.3"},
		},
		{Mesh: "name: x\nsessions: [s.yaml]\nservices:\n  - name: s\n    config_id: x/s\n    binary: /bin/true\n", Endpoints: map[string]string{"s": "redis"}},
	} {
		doc, err := r.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(doc)
	}
	f.Add([]byte("{not json"))

	td := spiffeid.RequireTrustDomainFromString("attestmesh.local")
	pki := newFuzzPKI(f, td)
	f.Fuzz(func(t *testing.T, doc []byte) {
		reg, m, err := Parse(doc)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refusal without a reason")
			}
			return
		}
		if reg == nil || m == nil || len(m.Services) == 0 {
			t.Fatalf("accepted without a mesh: %v %v", reg, m)
		}
		model, skipped := BuildModel(td, []cas.Mesh{{Name: m.Name, Doc: doc}}, nil)
		if skipped[m.Name] != nil {
			return
		}
		if sessions, err := Sessions(doc); err != nil || len(sessions) == 0 {
			t.Fatalf("mesh accepted into the model, but its sessions are %v: %v", sessions, err)
		}
		if err := model.Validate(); err != nil {
			t.Fatalf("model does not validate: %v", err)
		}
		for _, s := range model.Services {
			res, err := xds.Build(model, s.Name, []*x509.Certificate{pki.ca}, pki.svid(t, s.ID))
			if err != nil {
				t.Fatalf("service %q: build: %v", s.Name, err)
			}
			snap, err := cache.NewSnapshot("1", res)
			if err != nil {
				t.Fatalf("service %q: snapshot: %v", s.Name, err)
			}
			if err := xds.ValidateSnapshot(snap); err != nil {
				t.Fatalf("service %q: the control plane would not publish: %v", s.Name, err)
			}
			if _, err := sidecar.ParseListeners(packAll(t, res[sidecar.ListenerType])); err != nil {
				t.Fatalf("service %q: the sidecar would NACK the listeners: %v", s.Name, err)
			}
			if _, err := sidecar.ParseClusters(packAll(t, res[sidecar.ClusterType])); err != nil {
				t.Fatalf("service %q: the sidecar would NACK the clusters: %v", s.Name, err)
			}
			if _, err := sidecar.ParseSecrets(packAll(t, res[sidecar.SecretType])); err != nil {
				t.Fatalf("service %q: the sidecar would NACK the secrets: %v", s.Name, err)
			}
		}
	})
}

func packAll(t *testing.T, rs []types.Resource) []*anypb.Any {
	t.Helper()
	out := make([]*anypb.Any, 0, len(rs))
	for _, r := range rs {
		a, err := anypb.New(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// fuzzPKI issues SVIDs for any SPIFFE ID of its trust domain, all for one key.
type fuzzPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	leafPK *ecdsa.PublicKey
}

func newFuzzPKI(tb testing.TB, td spiffeid.TrustDomain) *fuzzPKI {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fuzz CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &fuzzPKI{ca: ca, caKey: caKey, leafPK: &leafKey.PublicKey}
}

func (p *fuzzPKI) svid(tb testing.TB, id spiffeid.ID) []*x509.Certificate {
	tb.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		NotBefore:    p.ca.NotBefore,
		NotAfter:     p.ca.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, p.leafPK, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return []*x509.Certificate{leaf}
}
