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
// where each service's sidecar is reachable), opaque to the CAS, and its owner.
type meshRecord struct {
	Doc     []byte    `json:"doc"`
	Owner   string    `json:"owner"`
	Updated time.Time `json:"updated"`
}

// Mesh is a registered mesh document.
type Mesh struct {
	Name string
	Doc  []byte
}

// PutMesh registers or replaces mesh name. The first client to register a name owns it; only
// the owner may replace it. The caller validates doc.
func (c *CAS) PutMesh(ctx context.Context, name string, doc []byte, client Client) error {
	if client.ID == "" {
		return errorf(CodeUnauthenticated, nil, "registering a mesh needs a client certificate")
	}
	key := meshPrefix + name
	cur, err := c.store.Get(ctx, key)
	var old []byte
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("cas: read mesh %q: %w", name, err)
	default:
		var rec meshRecord
		if err := json.Unmarshal(cur, &rec); err != nil {
			return fmt.Errorf("cas: decode mesh %q: %w", name, err)
		}
		if rec.Owner != client.ID {
			return errorf(CodeForbidden, nil, "mesh %q is registered by another client", name)
		}
		old = cur
	}
	val, err := json.Marshal(meshRecord{Doc: doc, Owner: client.ID, Updated: c.now().UTC()})
	if err != nil {
		return fmt.Errorf("cas: encode mesh %q: %w", name, err)
	}
	if err := c.store.CompareAndSwap(ctx, key, old, val); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(CodeConflict, nil, "mesh %q changed concurrently; retry", name)
		}
		return fmt.Errorf("cas: store mesh %q: %w", name, err)
	}
	c.log.InfoContext(ctx, "mesh registered", "mesh", name)
	c.changed("mesh:" + name)
	return nil
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
		out = append(out, Mesh{Name: kv.Key[len(meshPrefix):], Doc: rec.Doc})
	}
	return out, nil
}
