package registry

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/attestmesh/attestmesh/controlplane/cas"
	"github.com/attestmesh/attestmesh/controlplane/xds"
)

// builder turns registrations into one xDS model. Each mesh is parsed and validated on its own,
// once per document (the result is remembered by the document's hash), and then only checked
// against the identities and names of the meshes before it: a rebuild or a validation costs
// time linear in the services, not a parse of every registration each time.
// Safe for concurrent use.
type builder struct {
	td spiffeid.TrustDomain

	mu    sync.Mutex
	built map[[sha256.Size]byte]built
}

type built struct {
	svcs []xds.Service
	err  error
}

func newBuilder(td spiffeid.TrustDomain) *builder {
	return &builder{td: td, built: map[[sha256.Size]byte]built{}}
}

// services returns the xDS services of one registration, valid on their own.
func (b *builder) services(doc []byte) ([]xds.Service, error) {
	sum := sha256.Sum256(doc)
	b.mu.Lock()
	r, ok := b.built[sum]
	b.mu.Unlock()
	if ok {
		return r.svcs, r.err
	}
	r.svcs, r.err = b.parse(doc)
	b.mu.Lock()
	b.built[sum] = r
	b.mu.Unlock()
	return r.svcs, r.err
}

func (b *builder) parse(doc []byte) ([]xds.Service, error) {
	reg, parsed, err := Parse(doc)
	if err != nil {
		return nil, err
	}
	svcs, err := XDSServices(reg, parsed, b.td)
	if err != nil {
		return nil, err
	}
	if err := (&xds.Mesh{TrustDomain: b.td, Services: svcs}).Validate(); err != nil {
		return nil, err
	}
	return svcs, nil
}

// model merges meshes in the order given; see BuildModel. It forgets what it remembered of
// documents that are no longer registered. What it remembers of a Kubernetes registration has
// no endpoints: they are the ready pods of the moment, filled in here.
func (b *builder) model(meshes []cas.Mesh, ready map[string][]netip.Addr) (*xds.Mesh, map[string]error) {
	model := &xds.Mesh{TrustDomain: b.td}
	skipped := map[string]error{}
	names := map[string]string{}    // service name -> mesh
	ids := map[spiffeid.ID]string{} // service ID -> service name
	live := make(map[[sha256.Size]byte]bool, len(meshes))
	for _, m := range meshes {
		live[sha256.Sum256(m.Doc)] = true
		svcs, err := b.services(m.Doc)
		if err == nil {
			err = fits(svcs, names, ids)
		}
		if err != nil {
			skipped[m.Name] = err
			continue
		}
		for _, s := range svcs {
			names[s.Name], ids[s.ID] = m.Name, s.Name
		}
		model.Services = append(model.Services, withClusterEndpoints(svcs, ready)...)
	}
	b.mu.Lock()
	if len(b.built) > 2*len(live)+16 {
		for sum := range b.built {
			if !live[sum] {
				delete(b.built, sum)
			}
		}
	}
	b.mu.Unlock()
	return model, skipped
}

// fits checks a mesh's services against the names and identities already taken.
func fits(svcs []xds.Service, names map[string]string, ids map[spiffeid.ID]string) error {
	for _, s := range svcs {
		if other, dup := names[s.Name]; dup {
			return fmt.Errorf("xds: mesh: duplicate service name %q (also in mesh %q)", s.Name, other)
		}
		if other, dup := ids[s.ID]; dup {
			return fmt.Errorf("xds: mesh: service %q: id %q is also the id of service %q", s.Name, s.ID, other)
		}
	}
	return nil
}

// withClusterEndpoints returns svcs with the connections to services that bind their workloads'
// IPs (a Kubernetes registration's) leading to the ready pods of the target's config ID; svcs
// itself, which the builder keeps, is not changed.
func withClusterEndpoints(svcs []xds.Service, ready map[string][]netip.Addr) []xds.Service {
	byName := make(map[string]*xds.Service, len(svcs))
	for i := range svcs {
		byName[svcs[i].Name] = &svcs[i]
	}
	out := slices.Clone(svcs)
	for i := range out {
		if !slices.ContainsFunc(out[i].Connects, func(c xds.Connect) bool { return byName[c.Service] != nil && byName[c.Service].BindWorkloadIP }) {
			continue
		}
		out[i].Connects = slices.Clone(out[i].Connects)
		for j := range out[i].Connects {
			c := &out[i].Connects[j]
			target := byName[c.Service]
			if target == nil || !target.BindWorkloadIP {
				continue
			}
			c.Endpoints = nil
			for _, a := range ready[strings.TrimPrefix(target.ID.Path(), "/")] {
				c.Endpoints = append(c.Endpoints, net.JoinHostPort(a.String(), strconv.FormatUint(uint64(c.Port), 10)))
			}
		}
	}
	return out
}
