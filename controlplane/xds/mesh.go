package xds

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultBindAddress is where an inbound listener binds when the mesh names no address.
const DefaultBindAddress = "0.0.0.0"

// Mesh is the part of the mesh description that the xDS resources are built from: which services
// exist, which ports they serve, who may connect to them and whom they connect to. It is fed from
// the sessions and the mesh file; Validate checks it as a whole.
type Mesh struct {
	TrustDomain spiffeid.TrustDomain
	Services    []Service
}

// Service is one service of the mesh. All replicas of a service share its SPIFFE ID and
// therefore its xDS resources.
type Service struct {
	// Name is the service's name in the mesh, unique, as used by AllowedPeers and Connect.Service.
	Name string
	// ID is the workload identity, spiffe://<trust-domain>/<session>/<service>.
	ID spiffeid.ID
	// BindAddress is the IP address the inbound listeners bind to; DefaultBindAddress when empty.
	BindAddress string
	// BindWorkloadIP says that the service's replicas have addresses of their own (pods), which
	// one snapshot shared by all of them cannot name: the inbound listeners are sent on
	// DefaultBindAddress and every sidecar binds them to its own workload's IP (its pod IP,
	// `attestmesh proxy --inbound-ip`), so that they do not clash with the app's ports on
	// 127.0.0.1. BindAddress must then be empty.
	BindWorkloadIP bool
	// Ports are the ports the service serves to the mesh through its sidecar.
	Ports []Port
	// Connects are the mesh services this service's app talks to through its sidecar.
	Connects []Connect
}

// Port is a port a service serves through its sidecar: the sidecar terminates mTLS on Port and
// hands the plaintext connection to the app on 127.0.0.1:AppPort.
type Port struct {
	// Port is the mesh-facing inbound port of the sidecar.
	Port uint32
	// AppPort is the port the app listens on, on the loopback interface.
	AppPort uint32
	// Exposed marks a port that is also reachable from outside the mesh. It does not weaken the
	// sidecar: the inbound listener still requires a client certificate from the mesh with an
	// allowed SPIFFE ID. Clients outside the mesh reach the app's own TLS endpoint (Flask's
	// HTTPS, for example), which the deployment publishes; Exposed tells it to.
	Exposed bool
	// AllowedPeers are the names of the mesh services whose SPIFFE IDs may connect. It must not
	// be empty: an empty SAN match list would admit every workload of the trust domain.
	AllowedPeers []string
}

// Connect is a connection the service's app makes to another mesh service: the sidecar listens
// on 127.0.0.1:LocalPort and carries each connection over mTLS to one of Endpoints.
type Connect struct {
	// Service is the name of the mesh service connected to.
	Service string
	// Port is the served Port of that service.
	Port uint32
	// LocalPort is where the app expects its server, on 127.0.0.1.
	LocalPort uint32
	// Endpoints are the IP:port addresses of the server sidecars' inbound listeners. They are IP
	// literals because the clusters are STATIC. Empty while the service has no ready replica: the
	// sidecar's outbound listener then closes the app's connections until one is there.
	Endpoints []string
}

func (s *Service) bindAddress() string {
	if s.BindAddress == "" {
		return DefaultBindAddress
	}
	return s.BindAddress
}

// index maps service names to services; with duplicate names (an invalid mesh) the first wins.
func (m *Mesh) index() map[string]*Service {
	idx := make(map[string]*Service, len(m.Services))
	for i := range m.Services {
		if _, dup := idx[m.Services[i].Name]; !dup {
			idx[m.Services[i].Name] = &m.Services[i]
		}
	}
	return idx
}

// Validate checks the mesh as a whole and returns every problem it finds, joined, each naming the
// service and the field: unknown services in AllowedPeers or Connects, duplicate ports, port
// clashes between the sidecar's listeners and the app, malformed IDs and addresses.
func (m *Mesh) Validate() error {
	if m == nil {
		return errors.New("xds: mesh: nil")
	}
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("xds: mesh: "+format, args...)) }

	if m.TrustDomain.IsZero() {
		add("trust domain is empty")
	}
	names := make(map[string]int, len(m.Services))
	ids := make(map[spiffeid.ID]string, len(m.Services))
	for i := range m.Services {
		s := &m.Services[i]
		if s.Name == "" {
			add("services[%d]: name is empty", i)
		} else if j, dup := names[s.Name]; dup {
			add("services[%d]: duplicate service name %q (also services[%d])", i, s.Name, j)
		} else {
			names[s.Name] = i
		}
		switch {
		case s.ID.IsZero():
			add("service %q: id is empty", s.Name)
		case !m.TrustDomain.IsZero() && !s.ID.MemberOf(m.TrustDomain):
			add("service %q: id %q is not in trust domain %q", s.Name, s.ID, m.TrustDomain)
		default:
			if other, dup := ids[s.ID]; dup {
				add("service %q: id %q is also the id of service %q", s.Name, s.ID, other)
			}
			ids[s.ID] = s.Name
		}
		if s.BindAddress != "" && s.BindWorkloadIP {
			add("service %q: bind_address %q and bind_workload_ip exclude each other", s.Name, s.BindAddress)
		}
		if s.BindAddress != "" {
			if _, err := netip.ParseAddr(s.BindAddress); err != nil {
				add("service %q: bind_address %q is not an IP address", s.Name, s.BindAddress)
			}
		}
	}
	idx := m.index()
	for i := range m.Services {
		errs = append(errs, validatePorts(idx, &m.Services[i])...)
	}
	return errors.Join(errs...)
}

// portUse is one port a service's sidecar or app binds, for clash detection.
type portUse struct {
	addr string
	what string
}

func validatePorts(idx map[string]*Service, s *Service) []error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("xds: mesh: service %q: "+format, append([]any{s.Name}, args...)...))
	}
	uses := make(map[uint32][]portUse)
	claim := func(port uint32, addr, what string) {
		for _, u := range uses[port] {
			if addrsOverlap(u.addr, addr) {
				add("port clash on %d: %s and %s", port, u.what, what)
				return
			}
		}
		uses[port] = append(uses[port], portUse{addr: addr, what: what})
	}
	bind := s.bindAddress()
	if s.BindWorkloadIP {
		bind = "the workload's IP" // never the app's 127.0.0.1
	}
	for i, p := range s.Ports {
		if !validPort(p.Port) {
			add("ports[%d].port %d is not a TCP port (1-65535)", i, p.Port)
			continue
		}
		if !validPort(p.AppPort) {
			add("ports[%d].app_port %d is not a TCP port (1-65535)", i, p.AppPort)
			continue
		}
		for j := range i {
			if s.Ports[j].Port == p.Port {
				add("ports[%d]: duplicate port %d (also ports[%d])", i, p.Port, j)
			}
		}
		if len(p.AllowedPeers) == 0 {
			add("ports[%d] (port %d): allowed_peers is empty: list the mesh services that may connect "+
				"(an empty list would admit every workload of the trust domain)", i, p.Port)
		}
		seen := make(map[string]bool, len(p.AllowedPeers))
		for _, peer := range p.AllowedPeers {
			switch {
			case idx[peer] == nil:
				add("ports[%d] (port %d): allowed_peers: unknown service %q", i, p.Port, peer)
			case seen[peer]:
				add("ports[%d] (port %d): allowed_peers: %q listed twice", i, p.Port, peer)
			}
			seen[peer] = true
		}
	}
	// Clashes: the sidecar's inbound listeners on the bind address, the app's ports and the
	// outbound listeners on 127.0.0.1 share the service's network namespace.
	appPorts := make(map[uint32]bool)
	for i, p := range s.Ports {
		if !validPort(p.Port) || !validPort(p.AppPort) {
			continue
		}
		claim(p.Port, bind, fmt.Sprintf("ports[%d].port (inbound listener on %s)", i, bind))
		if !appPorts[p.AppPort] { // several mesh ports may lead to one app port
			appPorts[p.AppPort] = true
			claim(p.AppPort, "127.0.0.1", fmt.Sprintf("ports[%d].app_port (the app on 127.0.0.1)", i))
		}
	}
	type target struct {
		service string
		port    uint32
	}
	targets := make(map[target]int)
	for i, c := range s.Connects {
		peer := idx[c.Service]
		switch {
		case peer == nil:
			add("connects[%d]: unknown service %q", i, c.Service)
		case !servesPort(peer, c.Port):
			add("connects[%d]: service %q does not serve port %d", i, c.Service, c.Port)
		case !allows(peer, c.Port, s.Name):
			add("connects[%d]: service %q does not allow %q on port %d (add it to allowed_peers)", i, c.Service, s.Name, c.Port)
		}
		if j, dup := targets[target{c.Service, c.Port}]; dup {
			add("connects[%d]: duplicate connection to %q port %d (also connects[%d])", i, c.Service, c.Port, j)
		}
		targets[target{c.Service, c.Port}] = i
		if !validPort(c.LocalPort) {
			add("connects[%d].local_port %d is not a TCP port (1-65535)", i, c.LocalPort)
		} else {
			claim(c.LocalPort, "127.0.0.1", fmt.Sprintf("connects[%d].local_port (outbound listener on 127.0.0.1)", i))
		}
		for j, ep := range c.Endpoints {
			if _, _, err := splitEndpoint(ep); err != nil {
				add("connects[%d].endpoints[%d]: %v", i, j, err)
			}
		}
	}
	return errs
}

func validPort(p uint32) bool { return p >= 1 && p <= 65535 }

func servesPort(s *Service, port uint32) bool {
	for _, p := range s.Ports {
		if p.Port == port {
			return true
		}
	}
	return false
}

func allows(s *Service, port uint32, peer string) bool {
	for _, p := range s.Ports {
		if p.Port != port {
			continue
		}
		for _, a := range p.AllowedPeers {
			if a == peer {
				return true
			}
		}
	}
	return false
}

// addrsOverlap reports whether binding the same port on a and b would clash: equal addresses, or
// one of them the wildcard address.
func addrsOverlap(a, b string) bool {
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return pa == pb || pa.IsUnspecified() || pb.IsUnspecified()
}

// splitEndpoint parses an endpoint "IP:port".
func splitEndpoint(ep string) (string, uint32, error) {
	host, portStr, err := net.SplitHostPort(ep)
	if err != nil {
		return "", 0, fmt.Errorf("endpoint %q: want IP:port: %w", ep, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return "", 0, fmt.Errorf("endpoint %q: host %q is not an IP address (clusters are STATIC)", ep, host)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("endpoint %q: port %q is not a TCP port (1-65535)", ep, portStr)
	}
	return host, uint32(port), nil
}
