// Package mesh parses the mesh file (mesh.yaml): the application, its variables, its session
// templates and its services, as small as sconectl's mesh file. `attestmesh apply` substitutes
// the variables into the templates and uploads the sessions; `attestmesh up` also runs every
// service; the xDS model and the application's Helm chart are built from it.
//
//	name: flask-redis                  # the application; [a-z0-9-], Helm release name
//	variables:                         # $NAME in session templates and config_id
//	  REDIS_SESSION: flask-redis/redis
//	  REDIS_MRENCLAVE: {measure: /usr/bin/redis-server}   # simulated MRENCLAVE of a binary
//	sessions: [redis-session.yaml, flask-session.yaml]   # templates, exporters first
//	services:
//	  - name: redis                    # mesh name: DNS name and Kubernetes Service
//	    config_id: $REDIS_SESSION/redis  # the session/service it attests as
//	    binary: /usr/bin/redis-server  # what `attestmesh launch` measures and runs
//	    image: redis:7                 # container image (Kubernetes only)
//	    fspf: {src: app, dst: app.enc} # encrypt src into dst before uploading (optional)
//	    ports:
//	      - port: 6379                 # the app listens on its loopback; the sidecar serves
//	        expose: false              # the mesh on the same port; expose: the app itself is
//	                                   # reachable from outside the mesh (it serves its own TLS)
//	    connects: [{service: redis, port: 6379}]  # appears on the client's 127.0.0.1:6379
//	    # local_port (optional, default port) moves it: {service: redis, port: 6379, local_port: 16379},
//	    # for a client of two services that serve the same port, or an app that shares the
//	    # network namespace of the service it connects to
//
// Unknown keys are errors. Every error names the field; YAML syntax errors and unknown keys
// also name the line. docs/mesh.md documents every key.
package mesh

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/charts"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// Mesh is a parsed mesh file.
type Mesh struct {
	Name      string
	Variables map[string]Variable
	Sessions  []string // template paths, relative to Dir
	Services  []Service
	// Dir is the directory of the mesh file; relative paths resolve against it.
	Dir string
}

// Variable is a literal value or the simulated measurement of a binary.
type Variable struct {
	Value   string
	Measure string // path of a binary whose simulated MRENCLAVE is the value
}

// Service is one workload of the mesh.
type Service struct {
	Name     string
	ConfigID string // after variable substitution
	Binary   string
	Image    string
	FSPF     *FSPF
	Ports    []Port
	Connects []Connect
}

// FSPF asks apply/up to encrypt a directory for the service.
type FSPF struct {
	Src string
	Dst string
}

// Port is a port the service's app listens on (on its own loopback).
type Port struct {
	Port   uint32
	Expose bool
}

// Connect is a service the app connects to, on its loopback at LocalPort, by default at the
// same port.
type Connect struct {
	Service string
	Port    uint32
	// LocalPort is where the app expects the service on 127.0.0.1; 0 means Port.
	LocalPort uint32
}

// ListenPort is the port of the client sidecar's outbound listener on 127.0.0.1: LocalPort,
// or Port when LocalPort is not set.
func (c Connect) ListenPort() uint32 {
	if c.LocalPort != 0 {
		return c.LocalPort
	}
	return c.Port
}

type fileDoc struct {
	Name      string               `yaml:"name"`
	Variables map[string]yaml.Node `yaml:"variables"`
	Sessions  []string             `yaml:"sessions"`
	Services  []struct {
		Name     string `yaml:"name"`
		ConfigID string `yaml:"config_id"`
		Binary   string `yaml:"binary"`
		Image    string `yaml:"image"`
		FSPF     *struct {
			Src string `yaml:"src"`
			Dst string `yaml:"dst"`
		} `yaml:"fspf"`
		Ports []struct {
			Port   uint32 `yaml:"port"`
			Expose bool   `yaml:"expose"`
		} `yaml:"ports"`
		Connects []struct {
			Service   string `yaml:"service"`
			Port      uint32 `yaml:"port"`
			LocalPort uint32 `yaml:"local_port"`
		} `yaml:"connects"`
	} `yaml:"services"`
}

var (
	appName     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?$`)
	serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	varName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Load reads and validates a mesh file.
func Load(path string) (*Mesh, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	m, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Dir = filepath.Dir(path)
	return m, nil
}

// Parse parses and validates a mesh document. Variables are substituted into config_id.
func Parse(data []byte) (*Mesh, error) {
	var doc fileDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	m := &Mesh{Name: doc.Name, Sessions: doc.Sessions, Variables: map[string]Variable{}}
	if !appName.MatchString(doc.Name) {
		bad("name: %q must be a DNS label of at most 53 characters ([a-z0-9-])", doc.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(doc.Variables)) {
		n := doc.Variables[name]
		if !varName.MatchString(name) {
			bad("line %d: variables.%s: not a variable name", n.Line, name)
			continue
		}
		switch n.Kind {
		case yaml.ScalarNode:
			m.Variables[name] = Variable{Value: n.Value}
		case yaml.MappingNode:
			var v struct {
				Measure string `yaml:"measure"`
			}
			if err := n.Decode(&v); err != nil || v.Measure == "" || len(n.Content) != 2 {
				bad("line %d: variables.%s: want a value or {measure: /path/to/binary}", n.Line, name)
				continue
			}
			m.Variables[name] = Variable{Measure: v.Measure}
		default:
			bad("line %d: variables.%s: want a value or {measure: /path/to/binary}", n.Line, name)
		}
	}
	if len(doc.Sessions) == 0 {
		bad("sessions: list the session templates (exporters first)")
	}
	known := map[string]bool{}
	for i, s := range doc.Services {
		if !serviceName.MatchString(s.Name) {
			bad("services[%d].name: %q must be a DNS label ([a-z0-9-])", i, s.Name)
		}
		if known[s.Name] {
			bad("services[%d].name: duplicate service %q", i, s.Name)
		}
		known[s.Name] = true
	}
	for i, s := range doc.Services {
		svc := Service{Name: s.Name, Binary: s.Binary, Image: s.Image}
		cid, missing := substitute(s.ConfigID, m.Variables)
		for _, v := range missing {
			bad("services[%d].config_id: undefined variable $%s", i, v)
		}
		if strings.Count(cid, "/") < 1 || strings.HasPrefix(cid, "/") || strings.HasSuffix(cid, "/") {
			bad("services[%d].config_id: %q: want SESSION/SERVICE", i, cid)
		}
		svc.ConfigID = cid
		if s.Binary == "" || !filepath.IsAbs(s.Binary) {
			bad("services[%d].binary: %q: want the absolute path of the program to launch", i, s.Binary)
		}
		if s.FSPF != nil {
			if s.FSPF.Src == "" || s.FSPF.Dst == "" {
				bad("services[%d].fspf: want {src: DIR, dst: DIR}", i)
			}
			svc.FSPF = &FSPF{Src: s.FSPF.Src, Dst: s.FSPF.Dst}
		}
		ports := map[uint32]bool{}
		for j, p := range s.Ports {
			if p.Port == 0 || p.Port > 65535 {
				bad("services[%d].ports[%d].port: %d is not a TCP port", i, j, p.Port)
			}
			if ports[p.Port] {
				bad("services[%d].ports[%d].port: duplicate port %d", i, j, p.Port)
			}
			ports[p.Port] = true
			svc.Ports = append(svc.Ports, Port{Port: p.Port, Expose: p.Expose})
		}
		local := map[uint32]int{}
		for j, c := range s.Connects {
			conn := Connect{Service: c.Service, Port: c.Port, LocalPort: c.LocalPort}
			svc.Connects = append(svc.Connects, conn)
			if c.LocalPort > 65535 {
				bad("services[%d].connects[%d].local_port: %d is not a TCP port", i, j, c.LocalPort)
			} else if k, dup := local[conn.ListenPort()]; dup {
				bad("services[%d].connects[%d]: local port %d is also the local port of connects[%d] (set local_port on one of them)", i, j, conn.ListenPort(), k)
			} else {
				local[conn.ListenPort()] = j
			}
			if !known[c.Service] {
				bad("services[%d].connects[%d].service: unknown service %q (known: %s)", i, j, c.Service, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
				continue
			}
			if c.Service == s.Name {
				bad("services[%d].connects[%d].service: a service does not connect to itself through the mesh", i, j)
			}
			if ports[conn.ListenPort()] {
				if c.LocalPort != 0 {
					bad("services[%d].connects[%d].local_port: %d is also a port the service serves", i, j, c.LocalPort)
				} else {
					bad("services[%d].connects[%d].port: %d is also a port the service serves (set local_port)", i, j, c.Port)
				}
			}
		}
		m.Services = append(m.Services, svc)
	}
	for i, svc := range m.Services {
		for j, c := range svc.Connects {
			if target, ok := m.Service(c.Service); ok && !slices.ContainsFunc(target.Ports, func(p Port) bool { return p.Port == c.Port }) {
				bad("services[%d].connects[%d].port: service %q serves no port %d", i, j, c.Service, c.Port)
			}
		}
	}
	if len(m.Services) == 0 {
		bad("services: the mesh has no service")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("mesh: %d problem(s):\n  %s", len(problems), strings.Join(problems, "\n  "))
	}
	return m, nil
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// substitute replaces $NAME and ${NAME} with literal variable values.
func substitute(s string, vars map[string]Variable) (string, []string) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := strings.Trim(ref, "${}")
		v, ok := vars[name]
		if !ok || v.Measure != "" {
			missing = append(missing, name)
			return ref
		}
		return v.Value
	})
	return out, missing
}

// Service returns the named service.
func (m *Mesh) Service(name string) (*Service, bool) {
	for i := range m.Services {
		if m.Services[i].Name == name {
			return &m.Services[i], true
		}
	}
	return nil, false
}

// Resolve returns every variable's value, measuring the binaries that variables name.
func (m *Mesh) Resolve() (map[string]string, error) {
	out := make(map[string]string, len(m.Variables))
	for name, v := range m.Variables {
		if v.Measure == "" {
			out[name] = v.Value
			continue
		}
		mr, err := measure.File(v.Measure)
		if err != nil {
			return nil, fmt.Errorf("mesh: variables.%s: %w", name, err)
		}
		out[name] = mr.Hex()
	}
	return out, nil
}

// Documents expands the session templates with vars, in file order.
func (m *Mesh) Documents(vars map[string]string) ([][]byte, error) {
	var docs [][]byte
	for _, p := range m.Sessions {
		path := p
		if !filepath.IsAbs(path) {
			path = filepath.Join(m.Dir, p)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("mesh: sessions: %w", err)
		}
		doc, err := session.Expand(raw, vars)
		if err != nil {
			return nil, fmt.Errorf("mesh: %s: %w", p, err)
		}
		docs = append(docs, doc)
	}
	return docs, nil
}

// AllowedPeers returns, for each service and port, the services that connect to it.
func (m *Mesh) AllowedPeers(service string, port uint32) []string {
	var out []string
	for _, s := range m.Services {
		for _, c := range s.Connects {
			if c.Service == service && c.Port == port {
				out = append(out, s.Name)
			}
		}
	}
	return out
}

// ChartApp is what the application's Helm chart is written from (charts.WriteAppChart).
func (m *Mesh) ChartApp() *charts.App {
	app := &charts.App{Name: m.Name}
	for _, s := range m.Services {
		cs := charts.Service{Name: s.Name, ConfigID: s.ConfigID, Binary: s.Binary, Image: s.Image}
		for _, p := range s.Ports {
			cs.Ports = append(cs.Ports, charts.Port{Port: p.Port, Expose: p.Expose})
		}
		app.Services = append(app.Services, cs)
	}
	return app
}
