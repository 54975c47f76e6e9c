package xds

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

func TestMeshValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(m *Mesh)
		wantErr []string // substrings; none means valid
	}{
		{name: "seed mesh", mutate: func(*Mesh) {}},
		{
			name: "inbound port equal to the app port on another address",
			mutate: func(m *Mesh) {
				m.Services[1].BindAddress = "10.0.0.12"
				m.Services[1].Ports[0].Port = 6379
				m.Services[0].Connects[0].Port = 6379
			},
		},
		{name: "nil trust domain", mutate: func(m *Mesh) { m.TrustDomain = spiffeid.TrustDomain{} }, wantErr: []string{"xds: mesh: trust domain is empty"}},
		{
			name:    "duplicate service name",
			mutate:  func(m *Mesh) { m.Services[1].Name = "flask" },
			wantErr: []string{`xds: mesh: services[1]: duplicate service name "flask" (also services[0])`},
		},
		{name: "empty name", mutate: func(m *Mesh) { m.Services[0].Name = "" }, wantErr: []string{"services[0]: name is empty"}},
		{
			name:    "id outside the trust domain",
			mutate:  func(m *Mesh) { m.Services[0].ID = spiffeid.RequireFromString("spiffe://other.org/flask") },
			wantErr: []string{`service "flask": id "spiffe://other.org/flask" is not in trust domain "attestmesh.local"`},
		},
		{
			name:    "shared id",
			mutate:  func(m *Mesh) { m.Services[1].ID = flaskID },
			wantErr: []string{`service "redis": id "spiffe://attestmesh.local/flask-redis/flask" is also the id of service "flask"`},
		},
		{name: "missing id", mutate: func(m *Mesh) { m.Services[0].ID = spiffeid.ID{} }, wantErr: []string{`service "flask": id is empty`}},
		{
			name:    "bind address not an IP",
			mutate:  func(m *Mesh) { m.Services[1].BindAddress = "redis.local" },
			wantErr: []string{`service "redis": bind_address "redis.local" is not an IP address`},
		},
		{
			name:    "unknown allowed peer",
			mutate:  func(m *Mesh) { m.Services[1].Ports[0].AllowedPeers = []string{"flask", "nginx"} },
			wantErr: []string{`service "redis": ports[0] (port 16379): allowed_peers: unknown service "nginx"`},
		},
		{
			name:    "allowed peer twice",
			mutate:  func(m *Mesh) { m.Services[1].Ports[0].AllowedPeers = []string{"flask", "flask"} },
			wantErr: []string{`allowed_peers: "flask" listed twice`},
		},
		{
			name:   "no allowed peers",
			mutate: func(m *Mesh) { m.Services[1].Ports[0].AllowedPeers = nil },
			wantErr: []string{
				`service "redis": ports[0] (port 16379): allowed_peers is empty`,
				`service "flask": connects[0]: service "redis" does not allow "flask" on port 16379`,
			},
		},
		{
			name: "duplicate port",
			mutate: func(m *Mesh) {
				m.Services[1].Ports = append(m.Services[1].Ports, Port{Port: 16379, AppPort: 6380, AllowedPeers: []string{"flask"}})
			},
			wantErr: []string{`service "redis": ports[1]: duplicate port 16379 (also ports[0])`, "port clash on 16379"},
		},
		{
			name:    "inbound port clashes with the app port",
			mutate:  func(m *Mesh) { m.Services[1].Ports[0].Port = 6379 },
			wantErr: []string{`service "redis": port clash on 6379: ports[0].port (inbound listener on 0.0.0.0) and ports[0].app_port (the app on 127.0.0.1)`},
		},
		{
			name: "local port clashes with an inbound port",
			mutate: func(m *Mesh) {
				m.Services[0].Ports = []Port{{Port: 6379, AppPort: 5000, AllowedPeers: []string{"redis"}}}
			},
			wantErr: []string{`service "flask": port clash on 6379: ports[0].port (inbound listener on 0.0.0.0) and connects[0].local_port (outbound listener on 127.0.0.1)`},
		},
		{
			name:    "port out of range",
			mutate:  func(m *Mesh) { m.Services[1].Ports[0].AppPort = 70000 },
			wantErr: []string{`service "redis": ports[0].app_port 70000 is not a TCP port (1-65535)`},
		},
		{
			name:    "zero port",
			mutate:  func(m *Mesh) { m.Services[1].Ports[0].Port = 0 },
			wantErr: []string{"ports[0].port 0 is not a TCP port", `connects[0]: service "redis" does not serve port 16379`},
		},
		{
			name:    "connect to an unknown service",
			mutate:  func(m *Mesh) { m.Services[0].Connects[0].Service = "postgres" },
			wantErr: []string{`service "flask": connects[0]: unknown service "postgres"`},
		},
		{
			name:    "connect to a port not served",
			mutate:  func(m *Mesh) { m.Services[0].Connects[0].Port = 6379 },
			wantErr: []string{`connects[0]: service "redis" does not serve port 6379`},
		},
		{
			name:    "duplicate connect",
			mutate:  func(m *Mesh) { m.Services[0].Connects = append(m.Services[0].Connects, m.Services[0].Connects[0]) },
			wantErr: []string{`connects[1]: duplicate connection to "redis" port 16379 (also connects[0])`, "port clash on 6379"},
		},
		// A service without a ready replica: its clients' clusters have no endpoints for now.
		{name: "no endpoints", mutate: func(m *Mesh) { m.Services[0].Connects[0].Endpoints = nil }},
		// Replicas bind their own pod IPs: the inbound port may equal the app's port.
		{name: "inbound on the workload's IP", mutate: func(m *Mesh) {
			m.Services[1].BindWorkloadIP = true
			m.Services[1].Ports[0].Port = 6379
			m.Services[0].Connects[0].Port = 6379
		}},
		{
			name: "bind address and the workload's IP",
			mutate: func(m *Mesh) {
				m.Services[1].BindWorkloadIP = true
				m.Services[1].BindAddress = "10.0.0.12"
			},
			wantErr: []string{`service "redis": bind_address "10.0.0.12" and bind_workload_ip exclude each other`},
		},
		{
			name:    "endpoint host name",
			mutate:  func(m *Mesh) { m.Services[0].Connects[0].Endpoints = []string{"redis:16379"} },
			wantErr: []string{`connects[0].endpoints[0]: endpoint "redis:16379": host "redis" is not an IP address (clusters are STATIC)`},
		},
		{
			name:    "endpoint without port",
			mutate:  func(m *Mesh) { m.Services[0].Connects[0].Endpoints = []string{"10.0.0.12"} },
			wantErr: []string{`connects[0].endpoints[0]: endpoint "10.0.0.12": want IP:port`},
		},
		{
			name:    "endpoint port zero",
			mutate:  func(m *Mesh) { m.Services[0].Connects[0].Endpoints = []string{"[fd00::12]:0"} },
			wantErr: []string{`endpoint "[fd00::12]:0": port "0" is not a TCP port`},
		},
		{
			name:    "local port zero",
			mutate:  func(m *Mesh) { m.Services[0].Connects[0].LocalPort = 0 },
			wantErr: []string{"connects[0].local_port 0 is not a TCP port"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := flaskRedis()
			tt.mutate(m)
			err := m.Validate()
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, want := range tt.wantErr {
				require.ErrorContains(t, err, want)
			}
		})
	}
}

func TestMeshValidateNil(t *testing.T) {
	var m *Mesh
	require.EqualError(t, m.Validate(), "xds: mesh: nil")
}
