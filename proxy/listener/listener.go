package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/attestmesh/attestmesh/proxy/resource"
)

// listener owns one bound socket. Its configuration (name, direction,
// cluster, allowed peers) is swapped atomically, so an update on the same
// address keeps the socket and every open connection.
type listener struct {
	m       *Manager
	ln      net.Listener
	state   atomic.Pointer[lstate]
	tlsConf *tls.Config // server side, used while the listener is inbound

	// guarded by m.mu
	accepting bool
	reason    string
}

func (m *Manager) newListener(ln net.Listener) *listener {
	l := &listener{m: m, ln: ln}
	creds := m.cfg.Creds
	l.tlsConf = &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The certificate is checked in VerifyConnection, which also runs on
		// resumed sessions; a missing one is refused there with its reason.
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return creds.Certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs.PeerCertificates, creds, l.authorizer())
		},
	}
	return l
}

func (l *listener) authorizer() tlsconfig.Authorizer {
	if p := l.state.Load().spec.Peers; p != nil {
		return p.Authorize
	}
	return nil
}

func (l *listener) acceptLoop() {
	defer l.m.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.m.log.Warn("accept failed; retrying", "listener", l.state.Load().spec.Name, "error", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		pc := &conn{down: c}
		if !l.m.track(pc) {
			_ = c.Close()
			continue
		}
		l.m.wg.Add(1)
		go l.serve(pc)
	}
}

// serve runs one connection on its own goroutine; pipe adds a second one.
func (l *listener) serve(pc *conn) {
	defer l.m.wg.Done()
	defer l.m.untrack(pc)
	st := l.state.Load()
	spec := st.spec
	st.conns.Inc()
	st.active.Inc()
	defer st.active.Dec()
	log := l.m.log.With("listener", spec.Name, "remote", pc.down.RemoteAddr().String())

	down := pc.down
	if spec.Direction == resource.Inbound {
		tc := tls.Server(pc.down, l.tlsConf)
		ctx, cancel := context.WithTimeout(l.m.ctx, l.m.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.refused(st, log, err)
			_ = pc.down.Close()
			return
		}
		down = tc
	}
	cl := (*l.m.clusters.Load())[spec.Cluster]
	if cl == nil {
		log.Warn("connection closed: unknown cluster", "cluster", spec.Cluster)
		_ = down.Close()
		return
	}
	up, err := l.dial(st, cl, log)
	if err != nil {
		_ = down.Close()
		return
	}
	l.m.setUpstream(pc, up)
	pipe(down, up, st.bytes, spec.IdleTimeout)
}

// refused counts and logs a failed handshake.
func (l *listener) refused(st *lstate, log *slog.Logger, err error) {
	reason := classify(err)
	if reason == reasonUnauthorized {
		st.denials.Inc()
		log.Warn("peer not authorized: handshake refused", "error", err)
		return
	}
	l.m.cfg.Metrics.HandshakeFailures.WithLabelValues(st.spec.Name, reason).Inc()
	if benign(err) {
		log.Debug("TLS handshake failed", "reason", reason, "error", err)
		return
	}
	log.Warn("TLS handshake failed", "reason", reason, "error", err)
}

// dial connects to the next endpoint of cl: plaintext for a local cluster,
// mTLS (authorizing the upstream's SPIFFE ID) for a remote one.
func (l *listener) dial(st *lstate, cl *cluster, log *slog.Logger) (net.Conn, error) {
	addr, ok := cl.next()
	if !ok {
		log.Warn("upstream connect failed: the cluster has no endpoints (no ready replica)", "cluster", cl.spec.Name)
		return nil, errNoEndpoints
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(l.m.ctx, cl.spec.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		log.Warn("upstream connect failed", "cluster", cl.spec.Name, "upstream", addr, "error", err)
		return nil, err
	}
	if cl.tlsConf == nil {
		cl.connect.Observe(time.Since(start).Seconds())
		return raw, nil
	}
	tc := tls.Client(raw, cl.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		l.refused(st, log.With("cluster", cl.spec.Name, "upstream", addr), err)
		return nil, err
	}
	cl.connect.Observe(time.Since(start).Seconds())
	return tc, nil
}

// cluster is a Cluster with its client TLS configuration.
type cluster struct {
	spec    *resource.Cluster
	tlsConf *tls.Config
	rr      atomic.Uint32
	connect prometheus.Observer
}

func (m *Manager) newCluster(s *resource.Cluster) *cluster {
	c := &cluster{spec: s, connect: m.cfg.Metrics.UpstreamConnect.WithLabelValues(s.Name)}
	if s.TLS == nil {
		return c
	}
	creds, authorize := m.cfg.Creds, s.TLS.Peers.Authorize
	c.tlsConf = &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: s.TLS.SNI,
		// Hostname verification is replaced by SPIFFE authentication in
		// VerifyConnection, which runs on full and resumed handshakes alike.
		InsecureSkipVerify: true, //nolint:gosec // G402: the peer is verified in VerifyConnection
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return creds.Certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs.PeerCertificates, creds, authorize)
		},
		ClientSessionCache: m.sessions,
	}
	return c
}

// errNoEndpoints refuses a connection to a cluster that has no endpoints.
var errNoEndpoints = errors.New("listener: cluster has no endpoints")

// next returns the next endpoint, round robin; false when there is none.
func (c *cluster) next() (string, bool) {
	if len(c.spec.Endpoints) == 0 {
		return "", false
	}
	n := c.rr.Add(1)
	return c.spec.Endpoints[int(n-1)%len(c.spec.Endpoints)], true
}
