package registry

import (
	"fmt"
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
	})
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
			_, skipped := bld.model(meshes[:n])
			require.Empty(b, skipped)
			b.ReportAllocs()
			for b.Loop() {
				_, skipped := bld.model(meshes)
				if len(skipped) != 0 {
					b.Fatal(skipped)
				}
			}
		})
	}
}
