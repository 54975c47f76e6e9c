package cas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/attestmesh/attestmesh/controlplane/store"
)

const meshPrefix = "meshes/"

// meshRecord is a registered mesh: the document the deployment tool sent (the mesh file and
// where each service's sidecar is reachable), opaque to the CAS, and its registrant.
type meshRecord struct {
	Doc     []byte    `json:"doc"`
	Owner   string    `json:"owner"`
	Updated time.Time `json:"updated"`
}

// Mesh is a registered mesh document and the client that registered it.
type Mesh struct {
	Name  string
	Doc   []byte
	Owner Client
}

// MeshSessions returns the sessions a mesh document configures (the sessions of its config
// IDs); Config.MeshSessions supplies it, since the CAS does not read mesh documents.
type MeshSessions func(doc []byte) ([]string, error)

// PutMesh registers or replaces mesh name. A mesh is named after a session that its registrant
// controls, normally the namespace of its sessions (apply and up create it): the client must be
// allowed to update that session or to create sessions in it, so that nobody can take a mesh
// name that another owner uses. The client must also be allowed to update every session the
// document names: the mesh configures their sidecars. A registered name is replaced only by its
// registrant, or by a client that may update every session the registered mesh names; that
// client becomes the registrant. A client registers at most Limits.MaxMeshesPerClient meshes.
//
// validate (nil: none) checks the rest of doc against the registered meshes, after the rights
// above and atomically with the write: registrations are serialized, so that two conflicting
// ones cannot both pass. Its error is the request's (CodeInvalid unless it carries a code).
func (c *CAS) PutMesh(ctx context.Context, name string, doc []byte, client Client, validate func(context.Context) error) error {
	if client.ID == "" {
		return errorf(CodeUnauthenticated, nil, "registering a mesh needs a client certificate")
	}
	if err := c.mayNameMesh(ctx, name, client); err != nil {
		return err
	}
	if err := c.mayUpdateAll(ctx, doc, client, "register mesh "+fmt.Sprintf("%q", name)); err != nil {
		return err
	}
	key := meshPrefix + name
	cur, rec, err := c.loadMesh(ctx, name)
	switch {
	case CodeOf(err) == CodeNotFound:
		if err := c.checkMeshQuota(ctx, client); err != nil {
			return err
		}
	case err != nil:
		return err
	case rec.Owner != client.ID:
		// The registered document is another client's: say no more of it than that.
		if c.mayUpdateAll(ctx, rec.Doc, client, "") != nil {
			return errorf(CodeForbidden, nil, "mesh %q is registered by another client, and this client may not update every session it names", name)
		}
	}
	val, err := json.Marshal(meshRecord{Doc: doc, Owner: client.ID, Updated: c.now().UTC()})
	if err != nil {
		return fmt.Errorf("cas: encode mesh %q: %w", name, err)
	}
	c.meshMu.Lock()
	defer c.meshMu.Unlock()
	if validate != nil {
		if err := validate(ctx); err != nil {
			if CodeOf(err) != 0 {
				return err
			}
			return errorf(CodeInvalid, err, "invalid mesh registration")
		}
	}
	if err := c.store.CompareAndSwap(ctx, key, cur, val); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(CodeConflict, nil, "mesh %q changed concurrently; retry", name)
		}
		return fmt.Errorf("cas: store mesh %q: %w", name, err)
	}
	c.log.InfoContext(ctx, "mesh registered", "mesh", name, "replaced", cur != nil)
	c.changed("mesh:" + name)
	return nil
}

// mayNameMesh checks that client controls session name: it may update it or create sessions
// in it. The answer is the same whether the session exists or not.
func (c *CAS) mayNameMesh(ctx context.Context, name string, client Client) error {
	_, rec, s, err := c.load(ctx, name)
	if err != nil && CodeOf(err) != CodeNotFound {
		return err
	}
	if err == nil && (allowed(s.AccessPolicy.Update, rec.Creator, client) == nil || allowed(s.AccessPolicy.CreateSessions, rec.Creator, client) == nil) {
		return nil
	}
	return errorf(CodeForbidden, nil, "cannot register mesh %q: a mesh is named after a session its registrant controls, normally the "+
		"namespace of its sessions (attestmesh apply and up create it), and session %q does not exist or this client may neither update "+
		"it nor create sessions in it", name, name)
}

// checkMeshQuota refuses a new registration once the client has registered MaxMeshesPerClient.
func (c *CAS) checkMeshQuota(ctx context.Context, client Client) error {
	ms, err := c.Meshes(ctx)
	if err != nil {
		return err
	}
	n := 0
	for _, m := range ms {
		if m.Owner == client {
			n++
		}
	}
	if n >= c.limits.MaxMeshesPerClient {
		return limitf(LimitMeshesPerClient, "this client has registered %d meshes, the most one client may register (--max-meshes-per-client)", n)
	}
	return nil
}

// DeleteMesh removes mesh name: its sidecars lose the listeners and clusters it configured.
// The registrant may delete it, and so may any client that may update one of the sessions it
// names (an owner can always take their sessions' sidecars back). Others are told that it is
// not registered or not theirs to delete, whichever it is.
func (c *CAS) DeleteMesh(ctx context.Context, name string, client Client) error {
	if client.ID == "" {
		return errorf(CodeUnauthenticated, nil, "deleting a mesh needs a client certificate")
	}
	notYours := errorf(CodeNotFound, nil, "mesh %q is not registered, or this client may not delete it", name)
	cur, rec, err := c.loadMesh(ctx, name)
	if CodeOf(err) == CodeNotFound {
		return notYours
	}
	if err != nil {
		return err
	}
	if rec.Owner != client.ID {
		sessions, err := c.meshSessions(rec.Doc)
		if err != nil {
			return err
		}
		permitted := false
		for _, s := range sessions {
			if c.MayUpdate(ctx, s, client) == nil {
				permitted = true
				break
			}
		}
		if !permitted {
			return notYours
		}
	}
	// Delete only what was read: a concurrent replacement is not deleted unseen.
	if err := c.store.CompareAndSwap(ctx, meshPrefix+name, cur, nil); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(CodeConflict, nil, "mesh %q changed concurrently; retry", name)
		}
		return fmt.Errorf("cas: delete mesh %q: %w", name, err)
	}
	c.log.InfoContext(ctx, "mesh deleted", "mesh", name, "by_registrant", rec.Owner == client.ID)
	c.changed("mesh:" + name)
	return nil
}

// MeshAuthorized returns nil while the registrant of m may still update every session m names,
// else why not: the xDS feed leaves such a mesh out, so that a registration never outlives its
// registrant's rights.
func (c *CAS) MeshAuthorized(ctx context.Context, m Mesh) error {
	return c.mayUpdateAll(ctx, m.Doc, m.Owner, fmt.Sprintf("keep mesh %q", m.Name))
}

func (c *CAS) mayUpdateAll(ctx context.Context, doc []byte, client Client, what string) error {
	sessions, err := c.meshSessions(doc)
	if err != nil {
		return err
	}
	for _, s := range sessions {
		if err := c.MayUpdate(ctx, s, client); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return &Error{Code: e.Code, Msg: fmt.Sprintf("may not %s: it configures the sidecars of session %q, which this client may not update (%s)", what, s, e.Msg)}
			}
			return err
		}
	}
	return nil
}

func (c *CAS) meshSessions(doc []byte) ([]string, error) {
	if c.meshSessionsOf == nil {
		return nil, errors.New("cas: no mesh reader configured (Config.MeshSessions)")
	}
	sessions, err := c.meshSessionsOf(doc)
	if err != nil {
		return nil, errorf(CodeInvalid, err, "invalid mesh registration")
	}
	return sessions, nil
}

func (c *CAS) loadMesh(ctx context.Context, name string) ([]byte, *meshRecord, error) {
	cur, err := c.store.Get(ctx, meshPrefix+name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, errorf(CodeNotFound, nil, "mesh %q is not registered", name)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cas: read mesh %q: %w", name, err)
	}
	var rec meshRecord
	if err := json.Unmarshal(cur, &rec); err != nil {
		return nil, nil, fmt.Errorf("cas: decode mesh %q: %w", name, err)
	}
	return cur, &rec, nil
}

// Meshes returns every registered mesh, by name.
func (c *CAS) Meshes(ctx context.Context) ([]Mesh, error) {
	kvs, err := c.store.List(ctx, meshPrefix)
	if err != nil {
		return nil, fmt.Errorf("cas: list meshes: %w", err)
	}
	out := make([]Mesh, 0, len(kvs))
	for _, kv := range kvs {
		var rec meshRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("cas: decode mesh %q: %w", kv.Key, err)
		}
		out = append(out, Mesh{Name: kv.Key[len(meshPrefix):], Doc: rec.Doc, Owner: Client{ID: rec.Owner}})
	}
	return out, nil
}
