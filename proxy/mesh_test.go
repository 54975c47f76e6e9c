package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/proxy"
	"github.com/attestmesh/attestmesh/proxy/proxytest"
)

const td = "attestmesh.local"

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sidecar is one running sidecar under test.
type sidecar struct {
	id       spiffeid.ID
	attestor *proxytest.Attestor
	reg      *prometheus.Registry
	admin    string
	logs     *syncBuffer
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

func newMesh(t testing.TB) *mesh {
	t.Helper()
	ca, err := proxytest.NewCA(td)
	require.NoError(t, err)
	x, err := proxytest.StartXDS(ca, "127.0.0.1:0", nil)
	require.NoError(t, err)
	t.Cleanup(func() { x.Stop() })
	echo, err := proxytest.StartEcho()
	require.NoError(t, err)
	t.Cleanup(echo.Close)
	m := &mesh{ca: ca, xds: x, echo: echo, serverID: ca.ID("/app/server"), clientID: ca.ID("/app/client")}
	m.serverInbound, err = proxytest.FreeAddr()
	require.NoError(t, err)
	m.clientOutbound, err = proxytest.FreeAddr()
	require.NoError(t, err)
	return m
}

// serverResources: inbound|port accepting the client, local cluster to echo.
func (m *mesh) serverResources(t testing.TB, withSecrets bool) proxytest.Resources {
	t.Helper()
	r := proxytest.Resources{
		Listeners: []types.Resource{proxytest.InboundListener(m.serverInbound, m.clientID)},
		Clusters:  []types.Resource{proxytest.LocalCluster(m.serverInbound, m.echo.Addr)},
	}
	if withSecrets {
		r.Secrets = m.secrets(t, m.serverID)
	}
	return r
}

// clientResources: outbound listener to the cluster of upstream (which must
// present serverID).
func (m *mesh) clientResources(t testing.TB, upstream string) proxytest.Resources {
	t.Helper()
	return proxytest.Resources{
		Listeners: []types.Resource{proxytest.OutboundListener("server", 9000, m.clientOutbound)},
		Clusters:  []types.Resource{proxytest.OutboundCluster("server", 9000, m.serverID, upstream)},
		Secrets:   m.secrets(t, m.clientID),
	}
}

func (m *mesh) secrets(t testing.TB, id spiffeid.ID) []types.Resource {
	t.Helper()
	chain, err := proxytest.ForeignSVIDPEM(m.ca, id)
	require.NoError(t, err)
	return proxytest.Secrets(chain, m.ca)
}

func (m *mesh) publish(t testing.TB, id spiffeid.ID, version string, r proxytest.Resources) {
	t.Helper()
	require.NoError(t, m.xds.Publish(t.Context(), id.String(), version, r))
}

// start runs a sidecar for id ("app/<service>") until the test ends.
func (m *mesh) start(t testing.TB, id spiffeid.ID, ttl time.Duration) *sidecar {
	t.Helper()
	adminAddr, err := proxytest.FreeAddr()
	require.NoError(t, err)
	s := &sidecar{
		id:       id,
		attestor: &proxytest.Attestor{CA: m.ca, ID: id, TTL: ttl},
		reg:      prometheus.NewRegistry(),
		admin:    adminAddr,
		logs:     &syncBuffer{},
	}
	cfg := proxy.Config{
		ConfigID:          id.Path()[1:],
		TrustDomain:       td,
		XDSAddr:           m.xds.Addr,
		AdminAddr:         adminAddr,
		Logger:            slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Attestor:          s.attestor,
		DrainTimeout:      2 * time.Second,
		Registry:          s.reg,
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
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Error("sidecar did not stop")
			}
		})
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("logs of %s:\n%s", id, s.logs.String())
		}
	})
	return s
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func (s *sidecar) waitReady(t testing.TB) {
	t.Helper()
	require.Eventually(t, func() bool {
		code, _ := httpGet(t, "http://"+s.admin+"/ready")
		return code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "sidecar %s never became ready", s.id)
}

// metric returns the value of the series of name with labels.
func (s *sidecar) metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	require.NoError(t, err)
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
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
}

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	var d net.Dialer
	c, err := d.DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// tlsDial connects to addr with cert and returns the error the peer's
// refusal produces (nil if an echo round trip succeeds).
func tlsDial(t testing.TB, addr string, cert tls.Certificate) error {
	t.Helper()
	c := dial(t, addr)
	tc := tls.Client(c, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, //nolint:gosec // the test client checks nothing; the sidecar is under test
	})
	require.NoError(t, tc.SetDeadline(time.Now().Add(5*time.Second)))
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
