package controlplane

import (
	"context"
	"crypto/x509"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
	"github.com/attestmesh/attestmesh/controlplane/xds"
)

// feed keeps the xDS server's snapshots in step with the registered meshes and the SVIDs
// issued to sidecars. Changes only signal; one goroutine rebuilds, so a burst of attestations
// costs one rebuild.
type feed struct {
	cas       *cas.CAS
	authority *ca.Authority
	xds       *xds.Server
	log       *slog.Logger
	metrics   *metrics

	mu    sync.Mutex
	svids map[spiffeid.ID][]*x509.Certificate
	kick  chan struct{}
}

func newFeed(c *cas.CAS, a *ca.Authority, x *xds.Server, m *metrics, log *slog.Logger) *feed {
	return &feed{cas: c, authority: a, xds: x, metrics: m, log: log.With("subsystem", "xds-feed"),
		svids: map[spiffeid.ID][]*x509.Certificate{}, kick: make(chan struct{}, 1)}
}

// changed asks for a rebuild. It never blocks.
func (f *feed) changed() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// svid records the latest SVID of a sidecar identity and asks for a rebuild.
func (f *feed) svid(id spiffeid.ID, chain []*x509.Certificate) {
	f.mu.Lock()
	f.svids[id] = chain
	f.mu.Unlock()
	f.changed()
}

// peer records the SVID that a sidecar presents on its xDS stream when it is newer than the
// one known (none after a restart: the control plane keeps issued SVIDs in memory only), so
// that a sidecar that attested before a restart gets its snapshot again without waiting to
// re-attest. The chain was verified against the trust bundle by the TLS handshake.
func (f *feed) peer(id spiffeid.ID, chain []*x509.Certificate) {
	if len(chain) == 0 {
		return
	}
	f.mu.Lock()
	known := f.svids[id]
	newer := len(known) == 0 || known[0].NotAfter.Before(chain[0].NotAfter)
	if newer {
		f.svids[id] = chain
	}
	f.mu.Unlock()
	if newer {
		f.changed()
	}
}

// Run rebuilds on every change until ctx is done.
func (f *feed) Run(ctx context.Context) error {
	f.changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-f.kick:
		}
		if err := f.rebuild(ctx); err != nil {
			// The last good snapshots stay published; the next change retries.
			f.log.ErrorContext(ctx, "xDS update failed; sidecars keep their last configuration", "error", err.Error())
		}
	}
}

func (f *feed) rebuild(ctx context.Context) error {
	start := time.Now()
	registered, err := f.cas.Meshes(ctx)
	if err != nil {
		return err
	}
	// A registration speaks for its registrant only while the registrant may still update
	// every session it names: checked again at every rebuild, so that taking someone's
	// update rights away also takes their sidecar configuration away.
	meshes := registered[:0:0]
	unauthorized := 0
	for _, m := range registered {
		if err := f.cas.MeshAuthorized(ctx, m); err != nil {
			if cas.CodeOf(err) == 0 {
				return err
			}
			unauthorized++
			f.metrics.excluded.WithLabelValues(excludedUnauthorized).Inc()
			f.log.WarnContext(ctx, "mesh left out of the xDS configuration: its registrant lost the rights it needs", "mesh", m.Name, "reason", err.Error())
			continue
		}
		meshes = append(meshes, m)
	}
	model, skipped := buildModel(f.authority.TrustDomain(), meshes)
	for name, err := range skipped {
		// One broken or conflicting mesh must not stop the others' updates.
		f.metrics.excluded.WithLabelValues(excludedInvalid).Inc()
		f.log.ErrorContext(ctx, "mesh left out of the xDS configuration", "mesh", name, "error", err.Error())
	}
	f.metrics.meshes.WithLabelValues("active").Set(float64(len(meshes) - len(skipped)))
	f.metrics.meshes.WithLabelValues("excluded").Set(float64(unauthorized + len(skipped)))
	f.mu.Lock()
	svids := make(map[spiffeid.ID][]*x509.Certificate, len(f.svids))
	for id, c := range f.svids {
		if time.Now().Before(c[0].NotAfter) {
			svids[id] = c
		}
	}
	f.mu.Unlock()
	if err := f.xds.Update(model, f.authority.Bundle(), svids); err != nil {
		return err
	}
	f.log.DebugContext(ctx, "xDS snapshots updated", "services", len(model.Services), "svids", len(svids), "took", time.Since(start).String())
	return nil
}

// buildModel merges the registered meshes into one xDS model, in the order given. A mesh that does
// not parse, or that conflicts with the meshes before it (a config ID or a port claimed
// twice), is left out and reported in skipped; the others are kept.
func buildModel(td spiffeid.TrustDomain, meshes []cas.Mesh) (*xds.Mesh, map[string]error) {
	model := &xds.Mesh{TrustDomain: td}
	skipped := map[string]error{}
	for _, m := range meshes {
		reg, parsed, err := mesh.ParseRegistration(m.Doc)
		if err != nil {
			skipped[m.Name] = err
			continue
		}
		svcs, err := reg.XDSServices(parsed, td)
		if err != nil {
			skipped[m.Name] = err
			continue
		}
		candidate := &xds.Mesh{TrustDomain: td, Services: append(slices.Clone(model.Services), svcs...)}
		if err := candidate.Validate(); err != nil {
			skipped[m.Name] = err
			continue
		}
		model = candidate
	}
	return model, skipped
}
