package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/xds"
)

// Parse decodes and validates a registration: the mesh file parses and every
// service has an IP endpoint, or, for a Kubernetes registration, none has.
func Parse(doc []byte) (*mgmtapi.Registration, *mesh.Mesh, error) {
	var r mgmtapi.Registration
	if err := json.Unmarshal(doc, &r); err != nil {
		return nil, nil, fmt.Errorf("registry: registration: %w", err)
	}
	m, err := mesh.Parse([]byte(r.Mesh))
	if err != nil {
		return nil, nil, err
	}
	if r.Kubernetes {
		if len(r.Endpoints) > 0 {
			return nil, nil, errors.New("registry: registration: a Kubernetes registration names no endpoints: they are the ready pods of each service")
		}
		return &r, m, nil
	}
	for _, s := range m.Services {
		ep, ok := r.Endpoints[s.Name]
		if !ok {
			return nil, nil, fmt.Errorf("registry: registration: no endpoint for service %q", s.Name)
		}
		if _, err := netip.ParseAddr(ep); err != nil {
			return nil, nil, fmt.Errorf("registry: registration: endpoint of service %q: %q is not an IP address", s.Name, ep)
		}
	}
	return &r, m, nil
}

// Sessions returns the sessions whose sidecars a registration configures (those of
// its services' config IDs), each once, in the mesh's order: what the CAS checks rights on.
func Sessions(doc []byte) ([]string, error) {
	_, m, err := Parse(doc)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range m.Services {
		name, _, err := attestapi.SplitConfigID(s.ConfigID)
		if err != nil {
			return nil, fmt.Errorf("registry: service %q: %w", s.Name, err)
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// Cluster returns the IPs of the ready pods of every config ID (endpoints.Watcher.Ready); nil
// when the control plane does not follow a cluster.
type Cluster func() map[string][]netip.Addr

// XDSServices converts a registered mesh into the xDS model. Service names are qualified with
// the mesh name ("<mesh>.<service>") so that meshes do not collide. A served port that no mesh
// service connects to gets no inbound listener: the sidecar admits nobody there, and an exposed
// port is served by the app itself on the service's address. The connections of a Kubernetes
// registration have no endpoints here: they are the ready pods of the moment, which the model
// fills in (BuildModel).
func XDSServices(r *mgmtapi.Registration, m *mesh.Mesh, td spiffeid.TrustDomain) ([]xds.Service, error) {
	qualify := func(s string) string { return m.Name + "." + s }
	addrs := func(service string) []netip.Addr {
		if r.Kubernetes {
			return nil
		}
		return []netip.Addr{netip.MustParseAddr(r.Endpoints[service])} // checked by Parse
	}
	out := make([]xds.Service, 0, len(m.Services))
	for _, s := range m.Services {
		id, err := attestapi.SPIFFEID(td, s.ConfigID)
		if err != nil {
			return nil, fmt.Errorf("registry: service %q: %w", s.Name, err)
		}
		xs := xds.Service{Name: qualify(s.Name), ID: id, BindAddress: r.Endpoints[s.Name], BindWorkloadIP: r.Kubernetes}
		for _, p := range s.Ports {
			peers := m.AllowedPeers(s.Name, p.Port)
			if len(peers) == 0 {
				continue
			}
			for i := range peers {
				peers[i] = qualify(peers[i])
			}
			xs.Ports = append(xs.Ports, xds.Port{Port: p.Port, AppPort: p.Port, Exposed: p.Expose, AllowedPeers: peers})
		}
		for _, c := range s.Connects {
			var eps []string
			for _, a := range addrs(c.Service) {
				eps = append(eps, net.JoinHostPort(a.String(), strconv.FormatUint(uint64(c.Port), 10)))
			}
			xs.Connects = append(xs.Connects, xds.Connect{
				Service: qualify(c.Service), Port: c.Port, LocalPort: c.ListenPort(), Endpoints: eps,
			})
		}
		out = append(out, xs)
	}
	return out, nil
}
