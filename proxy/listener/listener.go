package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/attestmesh/attestmesh/proxy/metrics"
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
	// removed is set when the listener stops accepting: its multiplexed connections take no
	// new streams.
	removed atomic.Bool

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
		// Records as large as the data: a tunnel has no first paint to hurry.
		DynamicRecordSizingDisabled: true,
	}
	if m.cfg.Multiplex {
		l.tlsConf.NextProtos = []string{MuxProto}
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
		pc := &conn{down: rawIO(c)}
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
	log := l.m.log.With("listener", spec.Name, "remote", pc.down.RemoteAddr().String())

	down := pc.down
	if spec.Direction == resource.Inbound {
		tc := tls.Server(pc.down, l.tlsConf)
		ctx, cancel := context.WithTimeout(l.m.ctx, l.m.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			st.conns.Inc()
			l.refused(st, log, err)
			_ = pc.down.Close()
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == MuxProto {
			l.serveMux(tc, log)
			return
		}
		down = tc
	}
	st.conns.Inc()
	st.active.Inc()
	defer st.active.Dec()
	cl := (*l.m.clusters.Load())[spec.Cluster]
	if cl == nil {
		log.Warn("connection closed: unknown cluster", "cluster", spec.Cluster)
		_ = down.Close()
		return
	}
	if cl.tlsConf != nil && l.m.cfg.Multiplex {
		s, up, err := l.openStream(st, cl, down, log)
		if err != nil {
			_ = down.Close()
			return
		}
		if s != nil {
			if err := s.run(); err != nil && !benign(err) {
				log.Debug("stream ended", "error", err)
			}
			return
		}
		l.m.setUpstream(pc, up)
		pipe(down, up, st.bytes, spec.IdleTimeout)
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

// serveMux serves a multiplexed connection from another sidecar: each stream is one app
// connection for the listener's cluster, admitted under the listener's current policy.
func (l *listener) serveMux(tc *tls.Conn, log *slog.Logger) {
	mc := l.m.newMuxConn(tc, false, log, nil)
	mc.accept = l.acceptStream
	if err := mc.readLoop(); err != nil && !benign(err) {
		log.Warn("multiplexed connection lost", "error", err)
	}
}

// acceptStream admits a stream opened by the peer (on the read loop: it must not block) and
// serves it on a goroutine of its own: the dial to the app, then the copy from the app.
func (l *listener) acceptStream(mc *muxConn, s *stream) {
	st, err := l.admit(mc)
	if err != nil {
		s.abort(true, err)
		return
	}
	pc := &conn{stream: s}
	if !l.m.track(pc) {
		s.abort(true, errors.New("listener: draining"))
		return
	}
	spec := st.spec
	s.bytes, s.idle = st.bytes, spec.IdleTimeout
	st.conns.Inc()
	st.active.Inc()
	l.m.wg.Add(1)
	go func() {
		defer l.m.wg.Done()
		defer l.m.untrack(pc)
		defer st.active.Dec()
		log := mc.log.With("stream", s.id)
		cl := (*l.m.clusters.Load())[spec.Cluster]
		if cl == nil {
			log.Warn("stream refused: unknown cluster", "cluster", spec.Cluster)
			s.abort(true, fmt.Errorf("listener: unknown cluster %q", spec.Cluster))
			return
		}
		up, err := l.dial(st, cl, log)
		if err != nil {
			s.abort(true, err)
			return
		}
		s.setLocal(up)
		if err := s.run(); err != nil && !benign(err) {
			log.Debug("stream ended", "error", err)
		}
	}()
}

// admit authorizes a new stream on mc under the listener's current policy and trust bundle,
// as a new connection would be; the verdict is kept while neither changes and the peer's
// certificate is valid.
func (l *listener) admit(mc *muxConn) (*lstate, error) {
	st := l.state.Load()
	if l.removed.Load() || st.spec.Direction != resource.Inbound {
		mc.drain()
		return nil, errors.New("listener: removed")
	}
	if time.Now().After(mc.peerNotAfter) {
		mc.drain()
		return nil, errors.New("listener: the peer's certificate has expired")
	}
	var bundle *x509bundle.Bundle
	if len(mc.peer) > 0 {
		if id, err := x509svid.IDFromCert(mc.peer[0]); err == nil {
			bundle, _ = l.m.cfg.Creds.GetX509BundleForTrustDomain(id.TrustDomain())
		}
	}
	if mc.authState == st && mc.authBundle == bundle && bundle != nil {
		return st, nil
	}
	if err := verifyPeer(mc.peer, l.m.cfg.Creds, l.authorizer()); err != nil {
		if classify(err) == reasonUnauthorized {
			st.denials.Inc()
		}
		mc.log.Warn("stream refused: the peer is no longer allowed", "error", err)
		mc.authState, mc.authBundle = nil, nil
		return nil, err
	}
	mc.authState, mc.authBundle = st, bundle
	return st, nil
}

// refused counts and logs a failed handshake.
func (l *listener) refused(st *lstate, log *slog.Logger, err error) {
	reason := classify(err)
	if reason == reasonUnauthorized {
		st.denials.Inc()
		log.Warn("peer not authorized: handshake refused", "error", err)
		return
	}
	st.failure(reason).Inc()
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
	c, err := l.dialAddr(ctx, st, cl, addr, log)
	if err != nil {
		return nil, err
	}
	cl.connect.Observe(time.Since(start).Seconds())
	return c, nil
}

func (l *listener) dialAddr(ctx context.Context, st *lstate, cl *cluster, addr string, log *slog.Logger) (net.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		log.Warn("upstream connect failed", "cluster", cl.spec.Name, "upstream", addr, "error", err)
		return nil, err
	}
	raw = rawIO(raw)
	if cl.tlsConf == nil {
		return raw, nil
	}
	tc := tls.Client(raw, cl.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		l.refused(st, log.With("cluster", cl.spec.Name, "upstream", addr), err)
		return nil, err
	}
	return tc, nil
}

// openStream carries down to the next endpoint of cl as a stream over a multiplexed
// connection, dialing one if none has room. When the upstream does not speak MuxProto, the
// connection it dialed becomes down's own tunnel: up is set and s is nil.
func (l *listener) openStream(st *lstate, cl *cluster, down net.Conn, log *slog.Logger) (s *stream, up net.Conn, err error) {
	addr, ok := cl.next()
	if !ok {
		log.Warn("upstream connect failed: the cluster has no endpoints (no ready replica)", "cluster", cl.spec.Name)
		return nil, nil, errNoEndpoints
	}
	p := cl.pool(addr)
	start := time.Now()
	ctx, cancel := context.WithTimeout(l.m.ctx, cl.spec.ConnectTimeout)
	defer cancel()
	for ctx.Err() == nil {
		if mc := p.pick(); mc != nil {
			s, err := mc.openStream(down, st.bytes, st.spec.IdleTimeout)
			if err == nil {
				cl.connect.Observe(time.Since(start).Seconds())
				return s, nil, nil
			}
			continue // it filled up or closed meanwhile: pick again
		}
		wait, dialing := p.dialOrWait()
		if !dialing {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
		c, err := l.dialAddr(ctx, st, cl, addr, log)
		if err != nil {
			p.dialed(nil)
			return nil, nil, err
		}
		tc := c.(*tls.Conn)
		if tc.ConnectionState().NegotiatedProtocol != MuxProto {
			p.dialed(nil)
			cl.connect.Observe(time.Since(start).Seconds())
			return nil, tc, nil
		}
		mc := l.m.newMuxConn(tc, true, l.m.log.With("cluster", cl.spec.Name, "upstream", addr), p.remove)
		p.dialed(mc)
		l.m.wg.Add(1)
		go func() {
			defer l.m.wg.Done()
			if err := mc.readLoop(); err != nil && !benign(err) {
				mc.log.Warn("multiplexed connection lost", "error", err)
			}
		}()
		s, err := mc.openStream(down, st.bytes, st.spec.IdleTimeout)
		if err != nil {
			return nil, nil, err
		}
		cl.connect.Observe(time.Since(start).Seconds())
		return s, nil, nil
	}
	return nil, nil, ctx.Err()
}

// cluster is a Cluster with its client TLS configuration and, for a remote cluster, its
// multiplexed connections by endpoint.
type cluster struct {
	spec    *resource.Cluster
	tlsConf *tls.Config
	rr      atomic.Uint32
	connect *metrics.Histogram

	mu      sync.Mutex
	pools   map[string]*pool
	retired bool
}

func (m *Manager) newCluster(s *resource.Cluster) *cluster {
	c := &cluster{spec: s, connect: m.cfg.Metrics.UpstreamConnect.WithLabelValues(s.Name), pools: map[string]*pool{}}
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
		ClientSessionCache:          m.sessions,
		DynamicRecordSizingDisabled: true,
	}
	if m.cfg.Multiplex {
		c.tlsConf.NextProtos = []string{MuxProto}
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

func (c *cluster) pool(addr string) *pool {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pools[addr]
	if p == nil {
		p = &pool{retired: c.retired}
		c.pools[addr] = p
	}
	return p
}

// retire drains the cluster's multiplexed connections: it was replaced, and new connections
// use the new one (with its policy); open streams go on.
func (c *cluster) retire() {
	c.mu.Lock()
	c.retired = true
	pools := make([]*pool, 0, len(c.pools))
	for _, p := range c.pools {
		pools = append(pools, p)
	}
	c.mu.Unlock()
	for _, p := range pools {
		p.retire()
	}
}

// pool holds the multiplexed connections to one endpoint of a cluster. At most one dial is
// in flight: streams that find no room wait for it rather than dial their own.
type pool struct {
	mu      sync.Mutex
	conns   []*muxConn
	dialing chan struct{}
	retired bool
}

// pick returns a connection with room for a stream, or nil.
func (p *pool) pick() *muxConn {
	now := time.Now()
	p.mu.Lock()
	conns := slices.Clone(p.conns)
	p.mu.Unlock()
	for _, mc := range conns {
		if mc.usable(now) {
			return mc
		}
	}
	return nil
}

// dialOrWait either makes the caller the one to dial (dialing true; it must call dialed) or
// returns a channel that closes when the dial in flight ends.
func (p *pool) dialOrWait() (wait <-chan struct{}, dialing bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dialing != nil {
		return p.dialing, false
	}
	p.dialing = make(chan struct{})
	return nil, true
}

// dialed ends a dial: mc (nil when it failed or is no multiplexed connection) joins the pool.
func (p *pool) dialed(mc *muxConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.dialing)
	p.dialing = nil
	if mc == nil {
		return
	}
	p.conns = append(p.conns, mc)
	if p.retired {
		go mc.drain()
	}
}

func (p *pool) remove(mc *muxConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = slices.DeleteFunc(p.conns, func(c *muxConn) bool { return c == mc })
}

func (p *pool) retire() {
	p.mu.Lock()
	p.retired = true
	conns := slices.Clone(p.conns)
	p.mu.Unlock()
	for _, mc := range conns {
		mc.drain()
	}
}
