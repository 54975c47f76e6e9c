package cas_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/session"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

func doc(name string, rest ...string) []byte {
	return []byte("name: " + name + "\nversion: \"0.3\"\n" + strings.Join(rest, ""))
}

func TestNamespaces(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	mallory, _ := client(t)

	_, err := f.cas.Create(ctx, doc("demo/a"), f.owner)
	require.NoError(t, err, "the namespace's creator creates sessions in it")
	_, err = f.cas.Create(ctx, doc("demo/a/b"), f.owner)
	require.NoError(t, err, "and in the namespaces below")

	_, err = f.cas.Create(ctx, doc("demo/squat"), mallory)
	require.Error(t, err)
	assert.Equal(t, cas.CodeForbidden, cas.CodeOf(err))
	assert.Contains(t, err.Error(), `namespace session "demo"`)
	_, err = f.cas.Create(ctx, doc("nowhere/x"), f.owner)
	require.Error(t, err, "a namespace must exist")
	assert.Contains(t, err.Error(), `namespace session "nowhere" does not exist`)
	_, err = f.cas.Create(ctx, doc("demo"), mallory)
	assert.Equal(t, cas.CodeConflict, cas.CodeOf(err), "a namespace cannot be taken over")

	// A namespace that its owner opens to anyone.
	f.namespace(t, "open", f.owner, "ANY")
	_, err = f.cas.Create(ctx, doc("open/m"), mallory)
	require.NoError(t, err)

	// A namespace whose reader is told the precise reason.
	reader, readerCert := client(t)
	certPEM := strings.ReplaceAll(strings.TrimSpace(string(pemCert(readerCert))), "\n", "\n      ")
	_, err = f.cas.Create(ctx, doc("shared", "access_policy:\n  read:\n    - |\n      "+certPEM+"\n"), f.owner)
	require.NoError(t, err)
	_, err = f.cas.Create(ctx, doc("shared/x"), reader)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `namespace session "shared" does not let this client create sessions in it (its access_policy.create_sessions is [CREATOR])`)
}

// The security review's race: mallory is let into a namespace, and while her session's secrets
// are generated its owner takes her right away. Her session is not stored: the namespace is
// checked again in the same transaction as the write.
func TestNamespaceChangeDuringCreate(t *testing.T) {
	ctx := t.Context()
	st := openStore(t, t.TempDir(), testStoreKey(t))
	owner, _ := client(t)
	mallory, _ := client(t)
	var c *cas.CAS
	var once sync.Once
	closeDoor := func() {
		cur, err := c.Get(ctx, "ns", owner)
		require.NoError(t, err)
		_, err = c.Update(ctx, withPredecessor(doc("ns"), cur.Hash), owner)
		require.NoError(t, err)
	}
	c = cas.New(cas.Config{Store: st, Rand: readerFunc(func(b []byte) (int, error) {
		once.Do(closeDoor) // the first secret of mallory's session is being generated
		return rand.Read(b)
	})})
	_, err := c.Create(ctx, doc("ns", "access_policy:\n  create_sessions: [ANY]\n"), owner)
	require.NoError(t, err)
	_, err = c.Create(ctx, doc("ns/squat", "secrets:\n  - {name: v, kind: ascii}\n"), mallory)
	require.Error(t, err)
	assert.Equal(t, cas.CodeConflict, cas.CodeOf(err))
	assert.Contains(t, err.Error(), `cannot create session "ns/squat": its namespace session changed meanwhile`)
	n, err := c.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "only the namespace is stored")
	_, err = c.Create(ctx, doc("ns/squat", "secrets:\n  - {name: v, kind: ascii}\n"), mallory)
	assert.Equal(t, cas.CodeForbidden, cas.CodeOf(err), "and a retry meets the closed door: %v", err)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

// The security review's scenario 1 at the CAS: mallory cannot take the name that alice's export
// points to, so the import never reaches her.
func TestSquattingRefused(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	mallory, _ := client(t)
	_, err := f.cas.Create(ctx, example(t, "flask-session.yaml", exampleVars), mallory)
	require.Error(t, err)
	assert.Equal(t, cas.CodeForbidden, cas.CodeOf(err), "mallory cannot create demo/flask in alice's namespace")

	f.createExample(t)
	mine := doc("mallory", "secrets:\n  - name: stolen\n    import: {session: demo/redis, secret: redis_client_key}\n")
	_, err = f.cas.Create(ctx, doc("mallory-ns"), mallory)
	require.NoError(t, err)
	_, err = f.cas.Create(ctx, mine, mallory)
	require.Error(t, err)
	assert.Equal(t, cas.CodeInvalid, cas.CodeOf(err))
	assert.Contains(t, err.Error(), `from session "demo/redis": not found or not permitted`)
	for _, name := range []string{"redis_ca_key", "redis_client_cert", "demo/flask"} {
		assert.NotContains(t, err.Error(), name, "nothing about alice's session leaks to mallory")
	}
}

func TestCertificateExportCarriesNoKey(t *testing.T) {
	f := newFixture(t)
	f.createExample(t)
	ctx := t.Context()
	_, vals, err := f.cas.Lookup(ctx, flaskName)
	require.NoError(t, err)
	ca, ok := vals.Lookup("redis_ca_cert")
	require.True(t, ok)
	assert.NotEmpty(t, ca.CertPEM)
	assert.NotEmpty(t, ca.ChainPEM)
	assert.Empty(t, ca.KeyPEM, "the Redis CA's key stays in the Redis session")
	cl, ok := vals.Lookup("redis_client_cert")
	require.True(t, ok)
	assert.NotEmpty(t, cl.KeyPEM, "the client certificate's key is exported (redis_client_key)")

	_, rvals, err := f.cas.Lookup(ctx, redisName)
	require.NoError(t, err)
	own, _ := rvals.Lookup("redis_ca_cert")
	assert.NotEmpty(t, own.KeyPEM, "the exporter itself keeps the key")
}

func TestImportsCheckedAgainAtAttestation(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	vars := map[string]string{}
	for k, v := range exampleVars {
		vars[k] = v
	}
	// Mode downgrade: both simulation at first; then the exporter moves to hardware.
	f.createExample(t)
	cur, err := f.cas.Get(ctx, redisName, f.owner)
	require.NoError(t, err)
	vars["ATTESTATION_MODE"] = "hardware"
	_, err = f.cas.Update(ctx, withPredecessor(example(t, "redis-session.yaml", vars), cur.Hash), f.owner)
	require.NoError(t, err)
	_, _, err = f.cas.Lookup(ctx, flaskName)
	var ie *cas.ImportError
	require.ErrorAs(t, err, &ie)
	assert.Contains(t, err.Error(), `session "demo/redis" (security.attestation.mode: hardware) exports to session "demo/flask", `+
		`which accepts simulated quotes (security.attestation.mode: simulation)`)

	// And the same refusal when the importer is created after the exporter went hardware.
	g := newFixture(t)
	_, err = g.cas.Create(ctx, example(t, "redis-session.yaml", vars), g.owner)
	require.NoError(t, err)
	_, err = g.cas.Create(ctx, example(t, "flask-session.yaml", exampleVars), g.owner)
	require.Error(t, err)
	assert.Equal(t, cas.CodeInvalid, cas.CodeOf(err))
	assert.Contains(t, err.Error(), `session "demo/redis" (security.attestation.mode: hardware) exports to session "demo/flask", `+
		`which accepts simulated quotes (security.attestation.mode: simulation)`)
}

func TestSessionHashPinsTheImporter(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	alice, aliceCert := client(t)
	mallory, _ := client(t)
	byAlice := "access_policy:\n  update:\n    - |\n      " + strings.ReplaceAll(strings.TrimSpace(string(pemCert(aliceCert))), "\n", "\n      ") + "\n"
	importerWith := func(name, policy string) []byte {
		return doc(name, policy+"secrets:\n  - name: s\n    import: {session: demo/out, secret: pw}\n")
	}
	importer := importerWith("in", byAlice)
	_, err := f.cas.Create(ctx, doc("demo/out", "secrets:\n  - name: pw\n    kind: ascii\n"+
		"    export: [{session: in, session_hash: "+session.Hash(importer)+"}, {session: in2, session_hash: "+session.Hash(importerWith("in2", ""))+"}]\n"), f.owner)
	require.NoError(t, err)

	// A pinned document whose updater is CREATOR (the default) would belong to whoever uploads
	// its published bytes first: refused, at creation and at attestation alike.
	_, err = f.cas.Create(ctx, importerWith("in2", ""), alice)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `secret "pw" is exported to session "in2" by its document's hash (session_hash), which pins the document but not who uploads it`)

	// Mallory uploads alice's published importer first: it is hers to have, but not to change,
	// and alice, its updater, removes it and creates it herself.
	_, err = f.cas.Create(ctx, importer, mallory)
	require.NoError(t, err)
	cur, err := f.cas.Get(ctx, "in", mallory)
	require.NoError(t, err, "its CREATOR reads it")
	_, err = f.cas.Update(ctx, withPredecessor(importerWith("in", ""), cur.Hash), mallory)
	require.Error(t, err, "mallory is its CREATOR, not its updater")
	require.Error(t, f.cas.MayUpdate(ctx, "in", mallory), "so she can register no mesh for it either")
	require.NoError(t, f.cas.Delete(ctx, "in", alice))
	_, err = f.cas.Create(ctx, importer, alice)
	require.NoError(t, err, "the pinned document imports")
	_, _, err = f.cas.Lookup(ctx, "in")
	require.NoError(t, err)

	// Another version of the importer is no longer the pinned one.
	cur, err = f.cas.Get(ctx, "in", alice)
	require.NoError(t, err)
	require.Equal(t, session.Hash(importer), cur.Hash)
	_, err = f.cas.Update(ctx, withPredecessor(append(importer, "# changed\n"...), cur.Hash), alice)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `secret "s" imports "pw" from session "demo/out": not found or not permitted`,
		"alice may not read the exporter: she is told no more")

	// A document of another name cannot import it either.
	_, err = f.cas.Create(ctx, importerWith("in3", byAlice), alice)
	require.Error(t, err)
}

func TestLimits(t *testing.T) {
	st := openStore(t, t.TempDir(), testStoreKey(t))
	c := cas.New(cas.Config{Store: st, MeshSessions: meshSessions,
		Limits: cas.Limits{MaxSecrets: 3, MaxGeneratedBytes: 4096, MaxNewRSAKeys: 1, MaxSessionsPerClient: 3, MaxMeshesPerClient: 2}})
	owner, _ := client(t)
	ctx := t.Context()
	secrets := func(defs ...string) []byte { return doc("top", "secrets:\n"+strings.Join(defs, "")) }
	tests := []struct {
		name  string
		doc   []byte
		limit cas.Limit
		msg   string
	}{
		{"too many secrets", secrets("  - {name: a, kind: ascii}\n", "  - {name: b, kind: ascii}\n", "  - {name: c, kind: ascii}\n", "  - {name: d, kind: ascii}\n"),
			cas.LimitSecrets, `session "top" has 4 secrets, at most 3 are allowed per session`},
		{"too many declared bytes", secrets("  - {name: a, kind: binary, size: 65536}\n"),
			cas.LimitGeneratedBytes, `its ascii and binary secrets take 65536 bytes, at most 4096`},
		{"too many bytes once generated", secrets("  - {name: a, kind: binary, size: 3000}\n", "  - {name: k, kind: private-key, algorithm: RSA-2048}\n"),
			cas.LimitGeneratedBytes, `its secrets take`},
		{"too many RSA keys", secrets("  - {name: a, kind: private-key, algorithm: RSA-3072}\n", "  - {name: b, kind: private-key, algorithm: RSA-2048}\n"),
			cas.LimitKeyGeneration, `needs 2 new RSA keys, at most 1 are generated per request`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Create(ctx, tt.doc, owner)
			require.Error(t, err)
			assert.Equal(t, cas.CodeLimit, cas.CodeOf(err))
			assert.Equal(t, tt.limit, cas.LimitOf(err))
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
	n, err := c.Count(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "nothing refused was stored")

	for i := range 3 {
		_, err := c.Create(ctx, doc(fmt.Sprintf("s%d", i)), owner)
		require.NoError(t, err)
	}
	_, err = c.Create(ctx, doc("s3"), owner)
	assert.Equal(t, cas.LimitSessionsPerClient, cas.LimitOf(err))
	assert.Contains(t, err.Error(), "this client has created 3 sessions")
	other, _ := client(t)
	_, err = c.Create(ctx, doc("s3"), other)
	require.NoError(t, err, "the quota is per client")

	// Meshes: two per client; replacing one's own registration is not a new one.
	for i := range 2 {
		require.NoError(t, c.PutMesh(ctx, fmt.Sprintf("s%d", i), []byte("s0"), owner, nil))
	}
	require.NoError(t, c.PutMesh(ctx, "s0", []byte("s0 s1"), owner, nil), "a replacement")
	err = c.PutMesh(ctx, "s2", []byte("s0"), owner, nil)
	assert.Equal(t, cas.LimitMeshesPerClient, cas.LimitOf(err), "%v", err)
	assert.Contains(t, err.Error(), "this client has registered 2 meshes")
}

func TestKeyGenerationStopsWhenCancelled(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := f.cas.Create(ctx, doc("demo/rsa", "secrets:\n  - {name: a, kind: private-key, algorithm: RSA-3072}\n"), f.owner)
	require.Error(t, err)
	require.ErrorIs(t, err, context.Canceled)
}

func TestMeshRegistrationsFollowRights(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	mallory, _ := client(t)
	deputy, deputyCert := client(t)
	withDeputy := "access_policy:\n  update:\n    - CREATOR\n    - |\n      " +
		strings.ReplaceAll(strings.TrimSpace(string(pemCert(deputyCert))), "\n", "\n      ") + "\n"
	for _, name := range []string{"demo/x", "demo/y", "shared"} {
		_, err := f.cas.Create(ctx, doc(name, withDeputy), f.owner)
		require.NoError(t, err)
	}
	reg := []byte("demo/x demo/y")

	// A mesh is named after a session its registrant controls: mallory cannot take the name,
	// and under a name of her own she still cannot configure alice's sidecars.
	err := f.cas.PutMesh(ctx, "shared", reg, mallory, nil)
	require.Error(t, err, "mallory may not take alice's mesh name")
	assert.Contains(t, err.Error(), `a mesh is named after a session its registrant controls`)
	_, err = f.cas.Create(ctx, doc("mallorys"), mallory)
	require.NoError(t, err)
	err = f.cas.PutMesh(ctx, "mallorys", reg, mallory, nil)
	require.Error(t, err, "mallory may not configure alice's sidecars")
	assert.Contains(t, err.Error(), `it configures the sidecars of session "demo/x"`)

	// Alice's deputy registers; alice (who may update both sessions) may replace and delete it,
	// mallory may do neither and learns nothing of it.
	require.NoError(t, f.cas.PutMesh(ctx, "shared", reg, deputy, nil))
	require.NoError(t, f.cas.MeshAuthorized(ctx, meshNamed(t, f, "shared")))
	require.Error(t, f.cas.PutMesh(ctx, "shared", reg, mallory, nil))
	err = f.cas.DeleteMesh(ctx, "shared", mallory)
	assert.Equal(t, cas.CodeNotFound, cas.CodeOf(err))
	assert.Equal(t, strings.ReplaceAll(err.Error(), `"shared"`, `"nothing-here"`), f.cas.DeleteMesh(ctx, "nothing-here", mallory).Error(),
		"the same answer whether it exists or not")
	require.NoError(t, f.cas.PutMesh(ctx, "shared", reg, f.owner, nil), "an updater of every named session replaces it")
	assert.Equal(t, f.owner, meshNamed(t, f, "shared").Owner, "and becomes its registrant")
	require.NoError(t, f.cas.PutMesh(ctx, "shared", reg, deputy, nil))

	// Alice takes the deputy's rights away: the registration stops counting at once.
	cur, err := f.cas.Get(ctx, "demo/x", f.owner)
	require.NoError(t, err)
	_, err = f.cas.Update(ctx, withPredecessor(doc("demo/x"), cur.Hash), f.owner)
	require.NoError(t, err)
	err = f.cas.MeshAuthorized(ctx, meshNamed(t, f, "shared"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `may not keep mesh "shared": it configures the sidecars of session "demo/x"`)

	// The deputy, still an updater of demo/y, may delete it; so may alice.
	require.NoError(t, f.cas.DeleteMesh(ctx, "shared", deputy))
	ms, err := f.cas.Meshes(ctx)
	require.NoError(t, err)
	assert.Empty(t, ms)
	assert.Equal(t, cas.CodeNotFound, cas.CodeOf(f.cas.DeleteMesh(ctx, "shared", f.owner)))
}

func meshNamed(t *testing.T, f *fixture, name string) cas.Mesh {
	t.Helper()
	ms, err := f.cas.Meshes(t.Context())
	require.NoError(t, err)
	for _, m := range ms {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("mesh %q not registered", name)
	return cas.Mesh{}
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func testStoreKey(t *testing.T) store.Key {
	t.Helper()
	var k store.Key
	_, err := rand.Read(k[:])
	require.NoError(t, err)
	return k
}

// A session is deleted by its updaters or by its namespace's; strangers learn nothing; a
// namespace goes only after what is in it; what others created in one's namespace can be
// cleared out (the security review's squat that its victim could not remove).
func TestDelete(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	mallory, _ := client(t)
	f.namespace(t, "open", f.owner, "ANY")
	_, err := f.cas.Create(ctx, doc("open/squat"), mallory)
	require.NoError(t, err)
	_, err = f.cas.Create(ctx, doc("demo/mine"), f.owner)
	require.NoError(t, err)

	err = f.cas.Delete(ctx, "demo/mine", mallory)
	assert.Equal(t, cas.CodeNotFound, cas.CodeOf(err), "a stranger is told what a missing session would tell")
	assert.Contains(t, err.Error(), `session "demo/mine" not found or not permitted`)
	err = f.cas.Delete(ctx, "demo", f.owner)
	assert.Equal(t, cas.CodeConflict, cas.CodeOf(err))
	assert.Contains(t, err.Error(), `session "demo" has 1 sessions in its namespace (such as "demo/mine"): delete them first`)

	require.NoError(t, f.cas.Delete(ctx, "open/squat", f.owner), "the namespace's owner clears out a squat")
	require.NoError(t, f.cas.Delete(ctx, "demo/mine", f.owner))
	_, err = f.cas.Get(ctx, "demo/mine", f.owner)
	assert.Equal(t, cas.CodeNotFound, cas.CodeOf(err))
	require.NoError(t, f.cas.Delete(ctx, "demo", f.owner), "an empty namespace goes")
	assert.Equal(t, cas.CodeUnauthenticated, cas.CodeOf(f.cas.Delete(ctx, "open", cas.Client{})))
}
