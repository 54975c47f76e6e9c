// Package registry is the control plane's mesh registry: it decides which registered meshes
// configure sidecars and keeps the xDS snapshots in step with them. A registration (PUT
// /v1/meshes/NAME, see mgmtapi.Registration) names a mesh file and where each service's
// sidecar is reachable; the CAS stores it with its registrant. The registry
//
//   - validates a registration before it is stored (Validate): it parses, names the mesh of its
//     path, and fits with the meshes already registered (no config ID or address twice);
//   - rebuilds the xDS model on every change (Run): a registration whose registrant lost
//     update rights on a session it names is left out, as is one that does not parse or no
//     longer fits, each logged and counted; the model goes, with every sidecar's latest SVID,
//     to the xDS server (Publisher), which pushes each sidecar its own configuration.
//
// Changes only signal; one goroutine rebuilds, so a burst of attestations costs one rebuild.
package registry

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/xds"
)

// Publisher receives the rebuilt model: the xDS server. Update is called from one goroutine.
type Publisher interface {
	Update(m *xds.Mesh, bundle []*x509.Certificate, svids map[spiffeid.ID][]*x509.Certificate) error
}

// Config configures a Registry.
type Config struct {
	CAS         *cas.CAS
	TrustDomain spiffeid.TrustDomain
	// Bundle returns the trust bundle pushed to sidecars.
	Bundle func() []*x509.Certificate
	// Changes signals a change of the sessions or meshes (the CAS's OnChange): the registry
	// rebuilds.
	Changes <-chan struct{}
	// Cluster, when set, gives the endpoints of Kubernetes registrations: the ready pods of each
	// config ID. Call Changed when they change.
	Cluster    Cluster
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Registry is the mesh registry. Its methods are safe for concurrent use; Run is called once.
type Registry struct {
	cfg     Config
	log     *slog.Logger
	build   *builder
	meshes  *prometheus.GaugeVec
	exclude *prometheus.CounterVec

	mu    sync.Mutex
	svids map[spiffeid.ID][]*x509.Certificate
	kick  chan struct{}
}

// Reasons for leaving a registered mesh out of the xDS configuration (metric labels).
const (
	ExcludedUnauthorized = "registrant_lost_rights"
	ExcludedInvalid      = "invalid_or_conflicting"
)

// New returns a Registry and registers its metrics.
func New(cfg Config) *Registry {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Registry{
		cfg: cfg, log: log.With("subsystem", "registry"), build: newBuilder(cfg.TrustDomain),
		svids: map[spiffeid.ID][]*x509.Certificate{}, kick: make(chan struct{}, 1),
		meshes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "attestmesh_mesh_registrations",
			Help: "Registered meshes by state: active (in the xDS configuration) or excluded.",
		}, []string{"state"}),
		exclude: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attestmesh_mesh_exclusions_total",
			Help: "xDS rebuilds that left a registered mesh out, by reason: registrant_lost_rights, invalid_or_conflicting.",
		}, []string{"reason"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.meshes, r.exclude)
	}
	return r
}

// Validate checks a registration from client before the CAS stores it (the CAS itself checks
// the client's rights on the sessions it names).
func (r *Registry) Validate(ctx context.Context, name string, doc []byte, _ cas.Client) error {
	_, m, err := Parse(doc)
	if err != nil {
		return err
	}
	if m.Name != name {
		return fmt.Errorf("the path names mesh %q but the document names %q", name, m.Name)
	}
	others, err := r.cfg.CAS.Meshes(ctx)
	if err != nil {
		return err
	}
	others = slices.DeleteFunc(others, func(o cas.Mesh) bool { return o.Name == name })
	_, skipped := r.build.model(append(others, cas.Mesh{Name: name, Doc: doc}), r.ready())
	if err := skipped[name]; err != nil {
		return fmt.Errorf("mesh %q does not fit with the registered meshes: %w", name, err)
	}
	return nil
}

// Changed asks for a rebuild. It never blocks.
func (r *Registry) Changed() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// SVID records the latest SVID of a sidecar identity and asks for a rebuild.
func (r *Registry) SVID(id spiffeid.ID, chain []*x509.Certificate) {
	r.mu.Lock()
	r.svids[id] = chain
	r.mu.Unlock()
	r.Changed()
}

// Peer records the SVID that a sidecar presents on its xDS stream when it is newer than the
// one known (none after a restart: the control plane keeps issued SVIDs in memory only), so
// that a sidecar that attested before a restart gets its snapshot again without waiting to
// re-attest. The chain was verified against the trust bundle by the TLS handshake.
func (r *Registry) Peer(id spiffeid.ID, chain []*x509.Certificate) {
	if len(chain) == 0 {
		return
	}
	r.mu.Lock()
	known := r.svids[id]
	newer := len(known) == 0 || known[0].NotAfter.Before(chain[0].NotAfter)
	if newer {
		r.svids[id] = chain
	}
	r.mu.Unlock()
	if newer {
		r.Changed()
	}
}

// Run rebuilds and publishes to pub on every change until ctx is done.
func (r *Registry) Run(ctx context.Context, pub Publisher) error {
	r.Changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		case <-r.cfg.Changes:
		}
		if err := r.rebuild(ctx, pub); err != nil {
			// The last good snapshots stay published; the next change retries.
			r.log.ErrorContext(ctx, "xDS update failed; sidecars keep their last configuration", "error", err.Error())
		}
	}
}

func (r *Registry) rebuild(ctx context.Context, pub Publisher) error {
	start := time.Now()
	registered, err := r.cfg.CAS.Meshes(ctx)
	if err != nil {
		return err
	}
	// A registration speaks for its registrant only while the registrant may still update
	// every session it names: checked again at every rebuild, so that taking someone's
	// update rights away also takes their sidecar configuration away.
	meshes := registered[:0:0]
	unauthorized := 0
	for _, m := range registered {
		if err := r.cfg.CAS.MeshAuthorized(ctx, m); err != nil {
			if cas.CodeOf(err) == 0 {
				return err
			}
			unauthorized++
			r.exclude.WithLabelValues(ExcludedUnauthorized).Inc()
			r.log.WarnContext(ctx, "mesh left out of the xDS configuration: its registrant lost the rights it needs", "mesh", m.Name, "reason", err.Error())
			continue
		}
		meshes = append(meshes, m)
	}
	model, skipped := r.build.model(meshes, r.ready())
	for name, err := range skipped {
		// One broken or conflicting mesh must not stop the others' updates.
		r.exclude.WithLabelValues(ExcludedInvalid).Inc()
		r.log.ErrorContext(ctx, "mesh left out of the xDS configuration", "mesh", name, "error", err.Error())
	}
	r.meshes.WithLabelValues("active").Set(float64(len(meshes) - len(skipped)))
	r.meshes.WithLabelValues("excluded").Set(float64(unauthorized + len(skipped)))
	r.mu.Lock()
	svids := make(map[spiffeid.ID][]*x509.Certificate, len(r.svids))
	for id, c := range r.svids {
		if time.Now().Before(c[0].NotAfter) {
			svids[id] = c
		}
	}
	r.mu.Unlock()
	if err := pub.Update(model, r.cfg.Bundle(), svids); err != nil {
		return err
	}
	r.log.DebugContext(ctx, "xDS snapshots updated", "services", len(model.Services), "svids", len(svids), "took", time.Since(start).String())
	return nil
}

// ready is the cluster's ready pods by config ID (nil without a cluster).
func (r *Registry) ready() map[string][]netip.Addr {
	if r.cfg.Cluster == nil {
		return nil
	}
	return r.cfg.Cluster()
}

// BuildModel merges the registered meshes into one xDS model, in the order given. A mesh that
// does not parse, or that conflicts with the meshes before it (a config ID claimed twice), is
// left out and reported in skipped; the others are kept. ready gives the endpoints of
// Kubernetes registrations: the IPs of the ready pods of each config ID.
func BuildModel(td spiffeid.TrustDomain, meshes []cas.Mesh, ready map[string][]netip.Addr) (*xds.Mesh, map[string]error) {
	return newBuilder(td).model(meshes, ready)
}
