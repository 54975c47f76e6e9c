package proxy_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/attestmesh/attestmesh/proxy/proxytest"
	"github.com/attestmesh/attestmesh/proxy/resource"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestTunnel runs a client and a server sidecar against a real ADS server:
// bytes flow app -> client sidecar -> mTLS -> server sidecar -> echo, and
// peers that are not allowed are refused during the handshake.
func TestTunnel(t *testing.T) {
	m := newMesh(t)
	server := m.start(t, m.serverID, time.Hour)
	client := m.start(t, m.clientID, time.Hour)

	// Before any configuration the sidecars are not ready.
	code, body := httpGet(t, "http://"+server.admin+"/ready")
	if code != 0 { // the admin endpoint may not listen yet
		assert.Equal(t, http.StatusServiceUnavailable, code)
		assert.Contains(t, body, "NOT READY")
	}
	// Listeners and clusters without secrets: the listener stays cold.
	m.publish(t, m.serverID, "v1", m.serverResources(t, false))
	require.Eventually(t, func() bool {
		code, body := httpGet(t, "http://"+server.admin+"/ready")
		return code == http.StatusServiceUnavailable && strings.Contains(body, `waiting for secret "svid"`)
	}, 5*time.Second, 20*time.Millisecond)

	m.publish(t, m.serverID, "v2", m.serverResources(t, true))
	m.publish(t, m.clientID, "v1", m.clientResources(t, m.serverInbound))
	server.waitReady(t)
	client.waitReady(t)
	require.Eventually(t, func() bool { return m.xds.Acked(resource.ListenerType, "v2") }, 5*time.Second, 20*time.Millisecond)

	c := dial(t, m.clientOutbound)
	for i := range 3 {
		roundTrip(t, c, strings.Repeat("hello through the tunnel ", i+1))
	}
	assert.Positive(t, client.metric(t, "attestmesh_sidecar_bytes_total", fmtLabels("listener", "outbound|server|9000", "direction", "outbound")))
	assert.InDelta(t, 1, server.metric(t, "attestmesh_sidecar_connections_total", fmtLabels("listener", "inbound|"+port(m.serverInbound), "direction", "inbound")), 0)
	assert.InDelta(t, 1, server.metric(t, "attestmesh_sidecar_active_connections", fmtLabels("direction", "inbound")), 0)
	assert.InDelta(t, 1, client.metric(t, "attestmesh_sidecar_upstream_connect_seconds", fmtLabels("cluster", "outbound|server|9000")), 0)
	assert.Positive(t, client.metric(t, "attestmesh_sidecar_svid_expiry_timestamp_seconds", nil))
	assert.Positive(t, client.metric(t, "attestmesh_sidecar_xds_updates_total", fmtLabels("type_url", resource.SecretType, "result", "ack")))

	inbound := "inbound|" + port(m.serverInbound)
	other, err := proxytest.NewCA(td)
	require.NoError(t, err)
	thirdCert, err := m.ca.TLSCertificate(m.ca.ID("/app/intruder"), time.Hour)
	require.NoError(t, err)
	otherCACert, err := other.TLSCertificate(m.clientID, time.Hour)
	require.NoError(t, err)
	expired, err := m.ca.TLSCertificateAt(m.clientID, time.Now().Add(-2*time.Hour), time.Hour)
	require.NoError(t, err)

	tests := []struct {
		name       string
		try        func() error
		reason     string // handshake failure reason, or "" for an authz denial
		logMessage string
	}{
		{"allowed trust domain, wrong ID", func() error { return tlsDial(t, m.serverInbound, thirdCert) }, "", "spiffe://attestmesh.local/app/intruder"},
		{"right ID, another CA", func() error { return tlsDial(t, m.serverInbound, otherCACert) }, "unknown_ca", "reason=unknown_ca"},
		{"expired certificate", func() error { return tlsDial(t, m.serverInbound, expired) }, "expired", "reason=expired"},
		{"plaintext", func() error {
			c := dial(t, m.serverInbound)
			roundTripErr := func() error {
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write([]byte("PING\r\n\r\n\r\n")); err != nil {
					return err
				}
				buf := make([]byte, 64)
				_, err := c.Read(buf)
				return err
			}
			return roundTripErr()
		}, "plaintext", "reason=plaintext"},
		{"no client certificate", func() error { return tlsDial(t, m.serverInbound, emptyCert()) }, "no_client_cert", "reason=no_client_cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := server.metric(t, "attestmesh_sidecar_authz_denials_total", fmtLabels("listener", inbound))
			beforeFail := server.metric(t, "attestmesh_sidecar_tls_handshake_failures_total", fmtLabels("listener", inbound, "reason", tt.reason))
			require.Error(t, tt.try())
			require.Eventually(t, func() bool {
				if tt.reason == "" {
					return server.metric(t, "attestmesh_sidecar_authz_denials_total", fmtLabels("listener", inbound)) == before+1
				}
				return server.metric(t, "attestmesh_sidecar_tls_handshake_failures_total", fmtLabels("listener", inbound, "reason", tt.reason)) == beforeFail+1
			}, 5*time.Second, 10*time.Millisecond)
			// The refusal is counted, then logged: wait for the log line too.
			assert.Eventually(t, func() bool { return strings.Contains(server.logs.String(), tt.logMessage) },
				5*time.Second, 10*time.Millisecond, "log line %q", tt.logMessage)
		})
	}
	assert.Contains(t, server.logs.String(), "peer not authorized")

	// The tunnel still works, and the admin endpoint describes it.
	roundTrip(t, c, "still here")
	code, body = httpGet(t, "http://"+server.admin+"/config_dump")
	require.Equal(t, http.StatusOK, code)
	var dump struct {
		Listeners []struct {
			Name string `json:"name"`
			Warm bool   `json:"warm"`
		} `json:"listeners"`
		Secrets struct {
			SVID struct {
				SPIFFEID string `json:"spiffe_id"`
			} `json:"svid"`
		} `json:"secrets"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &dump))
	require.Len(t, dump.Listeners, 1)
	assert.Equal(t, inbound, dump.Listeners[0].Name)
	assert.True(t, dump.Listeners[0].Warm)
	assert.Equal(t, m.serverID.String(), dump.Secrets.SVID.SPIFFEID)
	assert.NotContains(t, body, "PRIVATE KEY")
	code, body = httpGet(t, "http://"+server.admin+"/metrics")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `attestmesh_sidecar_authz_denials_total{listener="`+inbound+`"} 1`)
}

func port(addr string) string {
	return addr[strings.LastIndexByte(addr, ':')+1:]
}

// TestNACKKeepsLastGoodConfig publishes a listener with an unsupported
// filter: the sidecar NACKs with the reason and keeps serving.
func TestNACKKeepsLastGoodConfig(t *testing.T) {
	m := newMesh(t)
	server := m.start(t, m.serverID, time.Hour)
	client := m.start(t, m.clientID, time.Hour)
	m.publish(t, m.serverID, "v1", m.serverResources(t, true))
	m.publish(t, m.clientID, "v1", m.clientResources(t, m.serverInbound))
	server.waitReady(t)
	client.waitReady(t)
	c := dial(t, m.clientOutbound)
	roundTrip(t, c, "before")

	bad := m.serverResources(t, true)
	l := proxytest.InboundListener(m.serverInbound, m.clientID)
	l.FilterChains[0].Filters[0].Name = "envoy.filters.network.http_connection_manager"
	bad.Listeners = []types.Resource{l}
	m.publish(t, m.serverID, "v2", bad)

	require.Eventually(t, func() bool {
		_, ok := m.xds.NACK(resource.ListenerType)
		return ok
	}, 5*time.Second, 20*time.Millisecond)
	reason, _ := m.xds.NACK(resource.ListenerType)
	assert.Contains(t, reason, `unsupported filter "envoy.filters.network.http_connection_manager"`)
	// go-control-plane re-sends the rejected version after each NACK; the
	// sidecar holds repeated NACKs back (50, 100, 200 ms ...) instead of spinning.
	time.Sleep(300 * time.Millisecond)
	nacks := server.metric(t, "attestmesh_sidecar_xds_updates_total", fmtLabels("type_url", resource.ListenerType, "result", "nack"))
	assert.GreaterOrEqual(t, nacks, 1.0)
	assert.LessOrEqual(t, nacks, 5.0)

	roundTrip(t, c, "open connection survives")
	roundTrip(t, dial(t, m.clientOutbound), "new connection on the old config")
	server.waitReady(t)
}

// TestControlPlaneOutage stops the ADS server: traffic keeps flowing on the
// cached configuration; after a restart on the same address the sidecar
// reconnects and ACKs.
func TestControlPlaneOutage(t *testing.T) {
	m := newMesh(t)
	server := m.start(t, m.serverID, time.Hour)
	client := m.start(t, m.clientID, time.Hour)
	m.publish(t, m.serverID, "v1", m.serverResources(t, true))
	m.publish(t, m.clientID, "v1", m.clientResources(t, m.serverInbound))
	server.waitReady(t)
	client.waitReady(t)
	c := dial(t, m.clientOutbound)
	roundTrip(t, c, "before the outage")

	m.xds.Stop()
	require.Eventually(t, func() bool { return strings.Contains(client.logs.String(), "xDS stream lost") }, 5*time.Second, 20*time.Millisecond)
	roundTrip(t, c, "during the outage")
	roundTrip(t, dial(t, m.clientOutbound), "new connection during the outage")
	client.waitReady(t)

	restarted, err := proxytest.StartXDS(m.ca, m.xds.Addr, m.xds.Cache)
	require.NoError(t, err)
	t.Cleanup(restarted.Stop)
	m.xds = restarted
	require.Eventually(t, func() bool {
		return restarted.Acked(resource.ListenerType, "v1") && restarted.Acked(resource.SecretType, "v1")
	}, 10*time.Second, 20*time.Millisecond, "no ACK after the restart")
	roundTrip(t, c, "after the outage")
}

// TestRotation gives the client a 3 s SVID: it renews at half-life, an open
// connection keeps working across several rotations, and every new
// connection presents the newest certificate to the server.
func TestRotation(t *testing.T) {
	m := newMesh(t)
	serverCert, err := m.ca.TLSCertificate(m.serverID, time.Hour)
	require.NoError(t, err)
	upstream, err := proxytest.StartTLSEcho(serverCert)
	require.NoError(t, err)
	t.Cleanup(upstream.Close)
	client := m.start(t, m.clientID, 3*time.Second)
	m.publish(t, m.clientID, "v1", m.clientResources(t, upstream.Addr))
	client.waitReady(t)

	open := dial(t, m.clientOutbound)
	roundTrip(t, open, "first")
	for round := range 3 {
		issued := len(client.attestor.Issued())
		require.Eventually(t, func() bool { return len(client.attestor.Issued()) > issued }, 5*time.Second, 20*time.Millisecond, "no renewal in round %d", round)
		newest := client.attestor.Issued()[len(client.attestor.Issued())-1]
		// The attestor records an SVID when it issues it; the sidecar installs it just after.
		installed := "msg=\"attested: SVID installed\" spiffe_id=" + m.clientID.String() + " serial=" + newest.SerialNumber.Text(16) + " "
		require.Eventually(t, func() bool { return strings.Contains(client.logs.String(), installed) }, 5*time.Second, 10*time.Millisecond,
			"SVID %s not installed in round %d", newest.SerialNumber.Text(16), round)
		roundTrip(t, open, "open across rotation")
		c := dial(t, m.clientOutbound)
		roundTrip(t, c, "new connection")
		serials := upstream.Serials()
		got := serials[len(serials)-1]
		// A renewal may land between reading newest and the handshake.
		all := client.attestor.Issued()
		assert.Contains(t, []string{newest.SerialNumber.Text(16), all[len(all)-1].SerialNumber.Text(16)}, got, "round %d", round)
		_ = c.Close()
	}
	assert.GreaterOrEqual(t, len(client.attestor.Issued()), 4)
	assert.Contains(t, client.logs.String(), "attested: SVID installed")
}
