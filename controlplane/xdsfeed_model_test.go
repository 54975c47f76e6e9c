package controlplane

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
)

// buildModel leaves out a mesh that does not parse or conflicts with the meshes before it, and
// keeps the others: one bad registration cannot stop every sidecar's updates.
func TestBuildModelSkipsBrokenAndConflictingMeshes(t *testing.T) {
	reg := func(name, sessionPrefix string) []byte {
		doc, err := (&mesh.Registration{
			Mesh: "name: " + name + "\nsessions: [s.yaml]\nservices:\n" +
				"  - name: server\n    config_id: " + sessionPrefix + "/db/db\n    binary: /bin/true\n    ports: [{port: 6379}]\n" +
				"  - name: client\n    config_id: " + sessionPrefix + "/api/api\n    binary: /bin/true\n    connects: [{service: server, port: 6379, local_port: 16379}]\n",
			Endpoints: map[string]string{"server": "127.0.0.2", "client": "127.0.0.3"},
		}).Marshal()
		require.NoError(t, err)
		return doc
	}
	td := spiffeid.RequireTrustDomainFromString("attestmesh.local")
	model, skipped := buildModel(td, []cas.Mesh{
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
