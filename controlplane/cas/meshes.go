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

// PutMesh registers or replaces mesh name. The client must be allowed to update every session
// the document names: the mesh configures their sidecars. A registered name is replaced only by
// its registrant, or by a client that may update every session the registered mesh names; that
// client becomes the registrant. The caller validates the rest of doc.
func (c *CAS) PutMesh(ctx context.Context, name string, doc []byte, client Client) error {
	if client.ID == "" {
		return errorf(CodeUnauthenticated, nil, "registering a mesh needs a client certificate")
	}
	if err := c.mayUpdateAll(ctx, doc, client, "register mesh "+fmt.Sprintf("%q", name)); err != nil {
		return err
	}
	key := meshPrefix + name
	cur, rec, err := c.loadMesh(ctx, name)
	switch {
	case CodeOf(err) == CodeNotFound:
	case err != nil:
		return err
	case rec.Owner != client.ID:
		if err := c.mayUpdateAll(ctx, rec.Doc, client, fmt.Sprintf("replace mesh %q, registered by another client,", name)); err != nil {
			return err
		}
	}
	val, err := json.Marshal(meshRecord{Doc: doc, Owner: client.ID, Updated: c.now().UTC()})
	if err != nil {
		return fmt.Errorf("cas: encode mesh %q: %w", name, err)
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

// DeleteMesh removes mesh name: its sidecars lose the listeners and clusters it configured.
// The registrant may delete it, and so may any client that may update one of the sessions it
// names (an owner can always take their sessions' sidecars back).
func (c *CAS) DeleteMesh(ctx context.Context, name string, client Client) error {
	if client.ID == "" {
		return errorf(CodeUnauthenticated, nil, "deleting a mesh needs a client certificate")
	}
	cur, rec, err := c.loadMesh(ctx, name)
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
			return errorf(CodeForbidden, nil, "mesh %q was registered by another client, and this client may update none of the sessions it names", name)
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
