package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/cmd/attestmesh/cli"
	"github.com/attestmesh/attestmesh/controlplane/mgmt/mgmttest"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
)

// TestSessionCreateGetListUpdate drives `attestmesh session` against a real management API.
func TestSessionCreateGetListUpdate(t *testing.T) {
	srv := mgmttest.Start(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, srv.Authority.BundlePEM(), 0o600))
	common := []string{"--controlplane", srv.URL, "--ca-file", caFile, "--identity-dir", t.TempDir()}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := cli.Run(context.Background(), append(args, common...), &out, &errb)
		return code, out.String(), errb.String()
	}
	doc := filepath.Join(t.TempDir(), "s.yaml")
	require.NoError(t, os.WriteFile(doc, []byte("name: $NAME\nversion: \"0.3\"\nsecrets:\n  - name: pw\n    kind: ascii\n"), 0o600))

	code, _, errOut := run("session", "create", "-f", doc, "--var", "NAME=team/app")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `its namespace session "team" does not exist or does not let this client create sessions in it`)
	code, _, errOut = run("session", "create", "-f", doc, "--var", "NAME=team")
	require.Equal(t, 0, code, errOut)

	code, out, errOut := run("session", "create", "-f", doc, "--var", "NAME=team/app")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `"name": "team/app"`)
	assert.Contains(t, out, `"changed": [`)

	code, _, errOut = run("session", "create", "-f", doc, "--var", "NAME=team/app")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `session "team/app" already exists: update it with predecessor set to its current hash (HTTP 409)`)

	code, out, errOut = run("session", "get", "team/app")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "# session team/app, hash ")
	hash := strings.Fields(strings.SplitN(out, "hash ", 2)[1])[0]

	code, out, errOut = run("session", "list")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "\nteam/app\t"+hash+"\t", out)

	code, _, errOut = run("session", "update", "-f", doc, "--var", "NAME=team/app")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "predecessor: required to update session")

	upd := filepath.Join(t.TempDir(), "u.yaml")
	require.NoError(t, os.WriteFile(upd, []byte("predecessor: "+hash+"\nname: team/app\nversion: \"0.3\"\nsecrets:\n  - name: pw\n    kind: ascii\n"), 0o600))
	code, out, errOut = run("session", "update", "-f", upd)
	require.Equal(t, 0, code, errOut)
	assert.NotContains(t, out, hash)

	code, _, errOut = run("session", "get", "team/none")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `session "team/none" not found or not permitted (HTTP 404)`)
}

func TestMeshDelete(t *testing.T) {
	srv := mgmttest.Start(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, srv.Authority.BundlePEM(), 0o600))
	owner, other := t.TempDir(), t.TempDir()
	run := func(idDir string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := cli.Run(t.Context(), append(args, "--controlplane", srv.URL, "--ca-file", caFile, "--identity-dir", idDir), &out, &errb)
		return code, out.String(), errb.String()
	}
	doc := filepath.Join(t.TempDir(), "s.yaml")
	require.NoError(t, os.WriteFile(doc, []byte("name: $NAME\nversion: \"0.3\"\n"), 0o600))
	for _, name := range []string{"team", "team/db"} {
		code, _, errOut := run(owner, "session", "create", "-f", doc, "--var", "NAME="+name)
		require.Equal(t, 0, code, errOut)
	}
	id, err := mgmtapi.LoadOrCreateIdentity(owner)
	require.NoError(t, err)
	c, err := mgmtapi.NewClient(mgmtapi.ClientConfig{URL: srv.URL, Roots: srv.Roots, Identity: id})
	require.NoError(t, err)
	require.NoError(t, c.PutMesh(t.Context(), "team", []byte(`{"mesh": "name: team\nsessions: [s.yaml]\nservices:\n  - {name: db, config_id: team/db/db, binary: /bin/true, ports: [{port: 5432}]}\n", "endpoints": {"db": "10.0.0.2"}}`)))

	code, _, errOut := run(other, "mesh", "delete", "team")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `mesh "team" is not registered, or this client may not delete it (HTTP 404)`)
	code, out, errOut := run(owner, "mesh", "delete", "team")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "mesh team deleted\n", out)
	code, _, errOut = run(owner, "mesh", "delete", "team")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `mesh "team" is not registered, or this client may not delete it (HTTP 404)`)

	code, _, errOut = run(other, "session", "delete", "team/db")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `session "team/db" not found or not permitted (HTTP 404)`)
	code, _, errOut = run(owner, "session", "delete", "team")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `delete them first (HTTP 409)`)
	code, out, errOut = run(owner, "session", "delete", "team/db")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "session team/db deleted\n", out)
}
