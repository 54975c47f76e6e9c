package proxy_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/proxy"
	"github.com/attestmesh/attestmesh/proxy/proxytest"
)

const td = "attestmesh.local"

// sidecar is one running sidecar under test.
type sidecar struct {
	id       spiffeid.ID
	attestor *proxytest.Attestor
	admin    string
	logs     *proxytest.SyncBuffer
	stop     func()
}

// mesh is a control plane, an echo app, and the sidecars' addresses.
type mesh struct {
	ca             *proxytest.CA
	xds            *proxytest.XDSServer
	echo           *proxytest.Echo
	serverID       spiffeID
	clientID       spiffeID
	serverInbound  string // the server sidecar's mTLS port
	clientOutbound string // where the client app connects
}

type spiffeID = spiffeid.ID

func newMesh(tb testing.TB) *mesh {
	tb.Helper()
	ca, err := proxytest.NewCA(td)
	require.NoError(tb, err)
	x, err := proxytest.StartXDS(ca, "127.0.0.1:0", nil)
	require.NoError(tb, err)
	tb.Cleanup(func() { x.Stop() })
	echo, err := proxytest.StartEcho()
	require.NoError(tb, err)
	tb.Cleanup(echo.Close)
	m := &mesh{ca: ca, xds: x, echo: echo, serverID: ca.ID("/app/server"), clientID: ca.ID("/app/client")}
	m.serverInbound, err = proxytest.FreeAddr()
	require.NoError(tb, err)
	m.clientOutbound, err = proxytest.FreeAddr()
	require.NoError(tb, err)
	return m
}

// serverResources: inbound|port accepting the client, local cluster to echo.
func (m *mesh) serverResources(tb testing.TB, withSecrets bool) proxytest.Resources {
	tb.Helper()
	r := proxytest.Resources{
		Listeners: []types.Resource{proxytest.InboundListener(m.serverInbound, m.clientID)},
		Clusters:  []types.Resource{proxytest.LocalCluster(m.serverInbound, m.echo.Addr)},
	}
	if withSecrets {
		r.Secrets = m.secrets(tb, m.serverID)
	}
	return r
}

// clientResources: outbound listener to the cluster of upstream (which must
// present serverID).
func (m *mesh) clientResources(tb testing.TB, upstream string) proxytest.Resources {
	tb.Helper()
	return proxytest.Resources{
		Listeners: []types.Resource{proxytest.OutboundListener("server", 9000, m.clientOutbound)},
		Clusters:  []types.Resource{proxytest.OutboundCluster("server", 9000, m.serverID, upstream)},
		Secrets:   m.secrets(tb, m.clientID),
	}
}

func (m *mesh) secrets(tb testing.TB, id spiffeid.ID) []types.Resource {
	tb.Helper()
	chain, err := proxytest.ForeignSVIDPEM(m.ca, id)
	require.NoError(tb, err)
	return proxytest.Secrets(chain, m.ca)
}

func (m *mesh) publish(tb testing.TB, id spiffeid.ID, version string, r proxytest.Resources) {
	tb.Helper()
	require.NoError(tb, m.xds.Publish(tb.Context(), id.String(), version, r))
}

// start runs a sidecar for id ("app/<service>") until the test ends.
func (m *mesh) start(tb testing.TB, id spiffeid.ID, ttl time.Duration) *sidecar {
	tb.Helper()
	adminAddr, err := proxytest.FreeAddr()
	require.NoError(tb, err)
	s := &sidecar{
		id:       id,
		attestor: &proxytest.Attestor{CA: m.ca, ID: id, TTL: ttl},
		admin:    adminAddr,
		logs:     &proxytest.SyncBuffer{},
	}
	cfg := proxy.Config{
		ConfigID:          id.Path()[1:],
		TrustDomain:       td,
		XDSAddr:           m.xds.Addr,
		AdminAddr:         adminAddr,
		Logger:            slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Attestor:          s.attestor,
		DrainTimeout:      2 * time.Second,
		XDSInitialBackoff: 50 * time.Millisecond,
		XDSMaxBackoff:     400 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- proxy.Run(ctx, cfg) }()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(tb, err)
			case <-time.After(10 * time.Second):
				tb.Error("sidecar did not stop")
			}
		})
	}
	tb.Cleanup(func() {
		s.stop()
		if tb.Failed() {
			tb.Logf("logs of %s:\n%s", id, s.logs.String())
		}
	})
	return s
}

func httpGet(tb testing.TB, url string) (int, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(tb, err)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return resp.StatusCode, string(b)
}

func (s *sidecar) waitReady(tb testing.TB) {
	tb.Helper()
	require.Eventually(tb, func() bool {
		code, _ := httpGet(tb, "http://"+s.admin+"/ready")
		return code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "sidecar %s never became ready", s.id)
}

// metric returns the value of the series of name with labels, scraped from the admin endpoint.
func (s *sidecar) metric(tb testing.TB, name string, labels map[string]string) float64 {
	tb.Helper()
	code, body := httpGet(tb, "http://"+s.admin+"/metrics")
	require.Equal(tb, http.StatusOK, code, body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(tb, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// roundTrip writes msg on c and requires it echoed back.
func roundTrip(tb testing.TB, c net.Conn, msg string) {
	tb.Helper()
	require.NoError(tb, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := c.Write([]byte(msg))
	require.NoError(tb, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(tb, err)
	require.Equal(tb, msg, string(buf))
}

func dial(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	var d net.Dialer
	c, err := d.DialContext(tb.Context(), "tcp", addr)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// tlsDial connects to addr with cert and returns the error the peer's
// refusal produces (nil if an echo round trip succeeds).
func tlsDial(tb testing.TB, addr string, cert tls.Certificate) error {
	tb.Helper()
	c := dial(tb, addr)
	tc := tls.Client(c, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, //nolint:gosec // the test client checks nothing; the sidecar is under test
	})
	require.NoError(tb, tc.SetDeadline(time.Now().Add(5*time.Second)))
	if err := tc.Handshake(); err != nil {
		return err
	}
	// In TLS 1.3 the server's verdict on the client certificate arrives
	// after the client's handshake completes.
	if _, err := tc.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(tc, buf); err != nil {
		return err
	}
	return nil
}

func fmtLabels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func emptyCert() tls.Certificate { return tls.Certificate{} }
