package cas_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/session"
	"github.com/attestmesh/attestmesh/controlplane/store"
	"github.com/attestmesh/attestmesh/controlplane/store/storetest"
)

// Lookup keeps its results while the store's stamp holds: a second Lookup with nothing
// written in between reads no record. Over a store without stamps every Lookup reads.
func TestLookupKeepsItsResultWhileNothingChanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(*counting) store.Backend
		kept bool
	}{
		{"a store with stamps", func(c *counting) store.Backend { return c }, true},
		{"a store without", func(c *counting) store.Backend { return noStamp{c} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &counting{EncryptedBackend: storetest.Open(t).(*store.EncryptedBackend)}
			c := cas.New(cas.Config{Store: tc.wrap(st)})
			ctx := t.Context()
			owner := cas.Client{ID: "owner"}
			createExample(t, c, owner)
			s1, v1, err := c.Lookup(ctx, flaskName)
			require.NoError(t, err)
			st.gets.Store(0)
			s2, v2, err := c.Lookup(ctx, flaskName)
			require.NoError(t, err)
			if tc.kept {
				assert.Zero(t, st.gets.Load(), "records read by the second Lookup")
			} else {
				assert.Positive(t, st.gets.Load(), "records read by the second Lookup")
			}
			assert.Same(t, s1, s2)
			assert.Equal(t, v1, v2)
		})
	}
}

// counting counts the records read.
type counting struct {
	*store.EncryptedBackend
	gets atomic.Int32
}

func (c *counting) Get(ctx context.Context, key string) ([]byte, error) {
	c.gets.Add(1)
	return c.EncryptedBackend.Get(ctx, key)
}

// noStamp hides the store's Stamp.
type noStamp struct{ store.Backend }

// Every write that changes what Lookup answers for a session is seen by the next Lookup:
// writes to the session itself and to the sessions it imports from, made through this CAS
// (one replica on bbolt) or through another replica's CAS on the same etcd, with no watch.
// The first Lookup fills the cache; each case fails if its write did not invalidate it.
func TestLookupSeesEveryWrite(t *testing.T) {
	vars := func(kv ...string) map[string]string {
		m := maps.Clone(exampleVars)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	update := func(t *testing.T, c *cas.CAS, owner cas.Client, file, name string, v map[string]string) {
		t.Helper()
		cur, err := c.Get(t.Context(), name, owner)
		require.NoError(t, err)
		_, err = c.Update(t.Context(), withPredecessor(example(t, file, v), cur.Hash), owner)
		require.NoError(t, err)
	}
	newMR := strings.Repeat("e", 64)
	cases := []struct {
		name  string
		write func(t *testing.T, c *cas.CAS, owner cas.Client)
		check func(t *testing.T, before session.Values, s *session.Session, vals session.Values, err error)
	}{{
		name: "the session is updated",
		write: func(t *testing.T, c *cas.CAS, owner cas.Client) {
			t.Helper()
			update(t, c, owner, "flask-session.yaml", flaskName, vars("PYTHON_MRENCLAVE", newMR))
		},
		check: func(t *testing.T, _ session.Values, s *session.Session, _ session.Values, err error) {
			t.Helper()
			require.NoError(t, err)
			svc, ok := s.Service("flask_restapi")
			require.True(t, ok)
			assert.Equal(t, []string{newMR}, svc.MREnclaves, "the new policy")
		},
	}, {
		name: "the session is deleted",
		write: func(t *testing.T, c *cas.CAS, owner cas.Client) {
			t.Helper()
			require.NoError(t, c.Delete(t.Context(), flaskName, owner))
		},
		check: func(t *testing.T, _ session.Values, _ *session.Session, _ session.Values, err error) {
			t.Helper()
			assert.Equal(t, cas.CodeNotFound, cas.CodeOf(err), "%v", err)
		},
	}, {
		name: "the exporter re-issues the imported certificate",
		write: func(t *testing.T, c *cas.CAS, owner cas.Client) {
			t.Helper()
			update(t, c, owner, "redis-session.yaml", redisName, exampleVars)
		},
		check: func(t *testing.T, before session.Values, _ *session.Session, vals session.Values, err error) {
			t.Helper()
			require.NoError(t, err)
			was, ok := before.Lookup("redis_client_cert")
			require.True(t, ok)
			now, ok := vals.Lookup("redis_client_cert")
			require.True(t, ok)
			assert.NotEqual(t, string(was.CertPEM), string(now.CertPEM), "the exporter's current certificate")
		},
	}, {
		name: "the exporter stops exporting",
		write: func(t *testing.T, c *cas.CAS, owner cas.Client) {
			t.Helper()
			update(t, c, owner, "redis-session.yaml", redisName, vars("FLASK_SESSION", "demo/other"))
		},
		check: func(t *testing.T, _ session.Values, _ *session.Session, _ session.Values, err error) {
			t.Helper()
			var ie *cas.ImportError
			require.ErrorAs(t, err, &ie)
			assert.Contains(t, ie.Why, "not exported to this session")
		},
	}, {
		name: "the exporter moves to hardware",
		write: func(t *testing.T, c *cas.CAS, owner cas.Client) {
			t.Helper()
			update(t, c, owner, "redis-session.yaml", redisName, vars("ATTESTATION_MODE", "hardware"))
		},
		check: func(t *testing.T, _ session.Values, _ *session.Session, _ session.Values, err error) {
			t.Helper()
			var ie *cas.ImportError
			require.ErrorAs(t, err, &ie)
			assert.Contains(t, ie.Why, "security.attestation.mode: hardware")
		},
	}}
	replicas := []struct {
		name string
		open func(t *testing.T) (writer, reader *cas.CAS)
	}{{
		name: "one replica on bbolt",
		open: func(t *testing.T) (writer, reader *cas.CAS) {
			t.Helper()
			c := cas.New(cas.Config{Store: storetest.Open(t)})
			return c, c
		},
	}, {
		name: "two replicas on etcd",
		open: func(t *testing.T) (writer, reader *cas.CAS) {
			t.Helper()
			cfg := storetest.Etcd(t)
			ctx := t.Context()
			var key store.Key
			_, err := rand.Read(key[:])
			require.NoError(t, err)
			var cs [2]*cas.CAS
			for i := range cs {
				e, err := store.OpenEtcd(ctx, cfg)
				require.NoError(t, err)
				t.Cleanup(func() { _ = e.Close() })
				st, err := store.Encrypted(ctx, e, key)
				require.NoError(t, err)
				cs[i] = cas.New(cas.Config{Store: st})
			}
			return cs[0], cs[1]
		},
	}}
	for _, r := range replicas {
		t.Run(r.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					writer, reader := r.open(t)
					ctx := t.Context()
					owner := cas.Client{ID: "owner"}
					createExample(t, writer, owner)
					s, before, err := reader.Lookup(ctx, flaskName)
					require.NoError(t, err)
					again, _, err := reader.Lookup(ctx, flaskName)
					require.NoError(t, err)
					require.Same(t, s, again, "the reader keeps its result: the write below must invalidate it")

					tc.write(t, writer, owner)
					s, vals, err := reader.Lookup(ctx, flaskName)
					tc.check(t, before, s, vals, err)
				})
			}
		})
	}
}

// rollbackStamp is a store whose Stamp reports a rollback (an older sealed state put back).
type rollbackStamp struct{ *counting }

func (r rollbackStamp) Stamp(context.Context) (string, error) {
	return "", fmt.Errorf("store: %w: test", store.ErrRollback)
}

// A rollback that the stamp detects fails the Lookup: the records are not read (they would be
// the rolled-back ones) and nothing is served from them.
func TestLookupFailsOnARollback(t *testing.T) {
	st := &counting{EncryptedBackend: storetest.Open(t).(*store.EncryptedBackend)}
	ctx := t.Context()
	owner := cas.Client{ID: "owner"}
	setup := cas.New(cas.Config{Store: st})
	createExample(t, setup, owner)
	c := cas.New(cas.Config{Store: rollbackStamp{st}})
	st.gets.Store(0)
	_, _, err := c.Lookup(ctx, flaskName)
	require.ErrorIs(t, err, store.ErrRollback)
	assert.Zero(t, st.gets.Load(), "records read after the rollback was detected")
}

// createExample creates the namespace session demo and the example's two sessions in c.
func createExample(t *testing.T, c *cas.CAS, owner cas.Client) {
	t.Helper()
	_, err := c.Create(t.Context(), []byte("name: demo\nversion: \"0.3\"\n"), owner)
	require.NoError(t, err)
	for _, file := range []string{"redis-session.yaml", "flask-session.yaml"} {
		_, err := c.Create(t.Context(), example(t, file, exampleVars), owner)
		require.NoError(t, err)
	}
}
