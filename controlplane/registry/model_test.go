package registry

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/xds"
)

// buildModel leaves out a mesh that does not parse or conflicts with the meshes before it, and
// keeps the others: one bad registration cannot stop every sidecar's updates.
func TestBuildModelSkipsBrokenAndConflictingMeshes(t *testing.T) {
	reg := func(name, sessionPrefix string) []byte {
		doc, err := (&mgmtapi.Registration{
			Mesh: "name: " + name + "\nsessions: [s.yaml]\nservices:\n" +
				"  - name: server\n    config_id: " + sessionPrefix + "/db/db\n    binary: /bin/true\n    ports: [{port: 6379}]\n" +
				"  - name: client\n    config_id: " + sessionPrefix + "/api/api\n    binary: /bin/true\n    connects: [{service: server, port: 6379, local_port: 16379}]\n",
			Endpoints: map[string]string{"server": "127.0.0.2", "client": "127.0.0.3"},
		}).Marshal()
		require.NoError(t, err)
		return doc
	}
	td := spiffeid.RequireTrustDomainFromString("attestmesh.local")
	model, skipped := BuildModel(td, []cas.Mesh{
		{Name: "a", Doc: reg("a", "one")},
		{Name: "b", Doc: []byte("{not json")},
		{Name: "c", Doc: reg("c", "one")}, // the same config IDs as a
		{Name: "d", Doc: reg("d", "two")},
	}, nil)
	var names []string
	for _, s := range model.Services {
		names = append(names, s.Name)
	}
	assert.Equal(t, []string{"a.server", "a.client", "d.server", "d.client"}, names)
	require.Len(t, skipped, 2)
	assert.Contains(t, skipped["b"].Error(), "registration")
	assert.Contains(t, skipped["c"].Error(), "is also the id of service")
}

// TestLocalPortMovesTheOutboundListener: a client of two services that serve the same port
// gets one of them on another local port; the xDS model's outbound listener is there, and the
// cluster still targets the served port on the server's endpoint.
func TestLocalPortMovesTheOutboundListener(t *testing.T) {
	m, err := mesh.Parse([]byte("name: app\nsessions: [s.yaml]\nservices:\n" +
		"  - name: a\n    config_id: ns/a\n    binary: /bin/true\n    ports: [{port: 80}]\n" +
		"  - name: b\n    config_id: ns/b\n    binary: /bin/true\n    ports: [{port: 80}]\n" +
		"  - name: c\n    config_id: ns/c\n    binary: /bin/true\n    connects: [{service: a, port: 80}, {service: b, port: 80, local_port: 8081}]\n"))
	require.NoError(t, err)
	td := spiffeid.RequireTrustDomainFromString("attestmesh.local")
	reg := &mgmtapi.Registration{Endpoints: map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}}
	svcs, err := XDSServices(reg, m, td)
	require.NoError(t, err)
	require.Len(t, svcs, 3)
	assert.Equal(t, []xds.Connect{
		{Service: "app.a", Port: 80, LocalPort: 80, Endpoints: []string{"10.0.0.1:80"}},
		{Service: "app.b", Port: 80, LocalPort: 8081, Endpoints: []string{"10.0.0.2:80"}},
	}, svcs[2].Connects)
	require.NoError(t, (&xds.Mesh{TrustDomain: td, Services: svcs}).Validate())
}

// BenchmarkValidateAmongMeshes is the cost of validating one more registration among n
// registered ones (the security review saw it grow from 36 ms to 1.5 s over 400 registrations
// when every registration was parsed again each time). Compare the sizes within one run.
func BenchmarkValidateAmongMeshes(b *testing.B) {
	td := spiffeid.RequireTrustDomainFromString("attestmesh.local")
	for _, n := range []int{100, 400} {
		b.Run(fmt.Sprintf("meshes=%d", n), func(b *testing.B) {
			meshes := make([]cas.Mesh, 0, n+1)
			for i := range n + 1 {
				name := fmt.Sprintf("m%d", i)
				var svcs strings.Builder
				endpoints := map[string]string{}
				for j := range 20 {
					fmt.Fprintf(&svcs, "  - {name: s%d, config_id: %s/s%d/s, binary: /bin/true, ports: [{port: %d}]}\n", j, name, j, 1000+j)
					endpoints[fmt.Sprintf("s%d", j)] = fmt.Sprintf("10.%d.%d.1", i/250, i%250)
				}
				doc, err := (&mgmtapi.Registration{Mesh: "name: " + name + "\nsessions: [s.yaml]\nservices:\n" + svcs.String(), Endpoints: endpoints}).Marshal()
				require.NoError(b, err)
				meshes = append(meshes, cas.Mesh{Name: name, Doc: doc})
			}
			bld := newBuilder(td)
			_, skipped := bld.model(meshes[:n], nil)
			require.Empty(b, skipped)
			b.ReportAllocs()
			for b.Loop() {
				_, skipped := bld.model(meshes, nil)
				if len(skipped) != 0 {
					b.Fatal(skipped)
				}
			}
		})
	}
}

// TestKubernetesRegistration: the endpoints of a Kubernetes registration are the ready pods of
// each service's config ID at the time of the build, every replica's port; inbound listeners
// bind each pod's own IP; a service without a ready pod leaves its clients' clusters empty.
// Such a registration names no endpoints itself.
func TestKubernetesRegistration(t *testing.T) {
	meshDoc := "name: app\nsessions: [s.yaml]\nservices:\n" +
		"  - name: redis\n    config_id: ns/redis/redis\n    binary: /usr/bin/redis-server\n    ports: [{port: 6379}]\n" +
		"  - name: api\n    config_id: ns/flask/api\n    binary: /usr/bin/python3\n    ports: [{port: 4996, expose: true}]\n    connects: [{service: redis, port: 6379}]\n"
	doc, err := (&mgmtapi.Registration{Mesh: meshDoc, Kubernetes: true}).Marshal()
	require.NoError(t, err)
	td := spiffeid.RequireTrustDomainFromString("attestmesh.local")
	b := newBuilder(td)

	two := map[string][]netip.Addr{"ns/redis/redis": {netip.MustParseAddr("10.232.0.5"), netip.MustParseAddr("10.232.0.9")}}
	model, skipped := b.model([]cas.Mesh{{Name: "app", Doc: doc}}, two)
	require.Empty(t, skipped)
	require.Len(t, model.Services, 2)
	redis, api := model.Services[0], model.Services[1]
	assert.True(t, redis.BindWorkloadIP)
	assert.Empty(t, redis.BindAddress)
	assert.Equal(t, []xds.Port{{Port: 6379, AppPort: 6379, AllowedPeers: []string{"app.api"}}}, redis.Ports,
		"the app's own port: the sidecar binds the pod IP, the app 127.0.0.1")
	require.Len(t, api.Connects, 1)
	assert.Equal(t, []string{"10.232.0.5:6379", "10.232.0.9:6379"}, api.Connects[0].Endpoints)
	require.NoError(t, model.Validate())

	// The same document again, with the pods of another moment: the builder remembers the
	// parse, not the endpoints.
	model, skipped = b.model([]cas.Mesh{{Name: "app", Doc: doc}}, map[string][]netip.Addr{"ns/redis/redis": {netip.MustParseAddr("10.232.0.7")}})
	require.Empty(t, skipped)
	assert.Equal(t, []string{"10.232.0.7:6379"}, model.Services[1].Connects[0].Endpoints)
	model, skipped = b.model([]cas.Mesh{{Name: "app", Doc: doc}}, nil)
	require.Empty(t, skipped, "no ready pod yet is no error")
	assert.Empty(t, model.Services[1].Connects[0].Endpoints)

	bad, err := (&mgmtapi.Registration{Mesh: meshDoc, Kubernetes: true, Endpoints: map[string]string{"redis": "10.0.0.1"}}).Marshal()
	require.NoError(t, err)
	_, _, err = Parse(bad)
	require.ErrorContains(t, err, "a Kubernetes registration names no endpoints")
}
