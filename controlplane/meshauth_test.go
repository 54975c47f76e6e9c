package controlplane_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

// A mesh registration configures the sidecars of every config ID it names (their listeners and
// the peers they admit): only a client allowed to update each named session may register it.
func TestPutMeshNeedsUpdateRightsOnItsSessions(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err := store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	cp := start(t, filepath.Join(t.TempDir(), "data"), keyFile)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner := cp.client(t, t.TempDir())
	stranger := cp.client(t, t.TempDir())
	_, err = owner.Create(ctx, []byte("name: victim\nversion: \"0.3\"\n"))
	require.NoError(t, err)
	_, err = stranger.Create(ctx, []byte("name: evil\nversion: \"0.3\"\n"))
	require.NoError(t, err)
	for _, s := range [][2]string{{"victim/db", "db"}, {"victim/api", "api"}} {
		_, err := owner.Create(ctx, itSession(s[0], s[1]))
		require.NoError(t, err)
	}
	_, err = stranger.Create(ctx, itSession("evil/x", "x"))
	require.NoError(t, err)

	reg := func(name, serverID, clientID string) []byte {
		doc, err := (&mgmtapi.Registration{
			Mesh: fmt.Sprintf(`name: %s
sessions: [unused.yaml]
services:
  - name: server
    config_id: %s
    binary: /bin/true
    ports: [{port: 6379}]
  - name: client
    config_id: %s
    binary: /bin/true
    connects: [{service: server, port: 6379, local_port: 16379}]
`, name, serverID, clientID),
			Endpoints: map[string]string{"server": "127.0.0.2", "client": "127.0.0.3"},
		}).Marshal()
		require.NoError(t, err)
		return doc
	}
	tests := []struct {
		name   string
		client *mgmtapi.Client
		mesh   string
		doc    []byte
		status int
		msg    string
	}{
		// The stranger may not read the victim's sessions: it learns only "not found or not
		// permitted", as for a session that does not exist.
		{"stranger lets itself into the victim's db", stranger, "evil", reg("evil", "victim/db/db", "evil/x/x"), http.StatusNotFound, `session "victim/db" not found or not permitted`},
		{"stranger names an unknown session", stranger, "evil", reg("evil", "nosuch/db", "evil/x/x"), http.StatusNotFound, `session "nosuch" not found or not permitted`},
		// A mesh is named after a session its registrant controls.
		{"stranger takes the victim's mesh name", stranger, "victim", reg("victim", "evil/x/x", "evil/y/y"), http.StatusForbidden,
			`cannot register mesh "victim": a mesh is named after a session its registrant controls`},
		{"owner of every session", owner, "victim", reg("victim", "victim/db/db", "victim/api/api"), 0, ""},
	}
	for _, tt := range tests {
		err := tt.client.PutMesh(ctx, tt.mesh, tt.doc)
		if tt.status == 0 {
			require.NoError(t, err, tt.name)
			continue
		}
		var apiErr *mgmtapi.APIError
		require.ErrorAs(t, err, &apiErr, tt.name)
		assert.Equal(t, tt.status, apiErr.Status, tt.name)
		assert.Contains(t, apiErr.Msg, tt.msg, tt.name)
	}
}

// A mesh that claims a config ID another registered mesh already configures is refused at
// registration, saying with which, and the first mesh stays served.
func TestPutMeshRefusesConflictWithRegisteredMesh(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "store.key")
	_, err := store.GenerateKeyFile(keyFile)
	require.NoError(t, err)
	cp := start(t, filepath.Join(t.TempDir(), "data"), keyFile)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner := cp.client(t, t.TempDir())
	for _, ns := range []string{"app", "first", "second"} {
		_, err = owner.Create(ctx, fmt.Appendf(nil, "name: %s\nversion: \"0.3\"\n", ns))
		require.NoError(t, err)
	}
	for _, s := range [][2]string{{"app/db", "db"}, {"app/api", "api"}} {
		_, err := owner.Create(ctx, itSession(s[0], s[1]))
		require.NoError(t, err)
	}
	reg := func(name, serverIP string) []byte {
		doc, err := (&mgmtapi.Registration{
			Mesh: "name: " + name + "\nsessions: [unused.yaml]\nservices:\n" +
				"  - name: server\n    config_id: app/db/db\n    binary: /bin/true\n    ports: [{port: 6379}]\n" +
				"  - name: client\n    config_id: app/api/api\n    binary: /bin/true\n    connects: [{service: server, port: 6379, local_port: 16379}]\n",
			Endpoints: map[string]string{"server": serverIP, "client": "127.0.0.3"},
		}).Marshal()
		require.NoError(t, err)
		return doc
	}
	require.NoError(t, owner.PutMesh(ctx, "first", reg("first", "127.0.0.2")))
	err = owner.PutMesh(ctx, "second", reg("second", "127.0.0.4"))
	var apiErr *mgmtapi.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusBadRequest, apiErr.Status)
	assert.Contains(t, apiErr.Msg, `mesh "second" does not fit with the registered meshes`)
	assert.Contains(t, apiErr.Msg, `is also the id of service "first.server"`)

	// Re-registering the same mesh (an update) does not conflict with itself.
	require.NoError(t, owner.PutMesh(ctx, "first", reg("first", "127.0.0.5")))
}
