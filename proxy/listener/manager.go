// Package listener is the sidecar's data plane: the inbound listeners that
// terminate mTLS and hand connections to the local app, the outbound listeners
// that take the app's plaintext on loopback and carry it over mTLS to the
// upstream sidecar, and the clusters they dial. Configuration changes are
// applied without dropping established connections.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attestmesh/attestmesh/proxy/identity"
	"github.com/attestmesh/attestmesh/proxy/metrics"
	"github.com/attestmesh/attestmesh/proxy/resource"
)

// DefaultHandshakeTimeout bounds a TLS handshake.
const DefaultHandshakeTimeout = 10 * time.Second

// Config configures a Manager.
type Config struct {
	// Creds supplies the SVID and the trust bundle for every handshake.
	Creds   *identity.Source
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// HandshakeTimeout bounds a TLS handshake (DefaultHandshakeTimeout if 0).
	HandshakeTimeout time.Duration
	// SessionCacheSize is the number of TLS client sessions kept for
	// resumption towards upstream sidecars (256 if 0).
	SessionCacheSize int
	// Multiplex offers and accepts MuxProto: app connections to and from other sidecars
	// travel as streams over shared mTLS connections.
	Multiplex bool
}

// Manager runs the listeners and holds the clusters. Its methods are safe for
// concurrent use.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	ctx      context.Context // canceled when a drain runs out of time
	cancel   context.CancelFunc
	sessions tls.ClientSessionCache

	clusters atomic.Pointer[map[string]*cluster]

	mu           sync.Mutex
	byAddr       map[string]*listener
	secrets      map[string]bool
	gotListeners bool
	closing      bool

	wg      sync.WaitGroup // accept loops and connection goroutines
	connsMu sync.Mutex
	conns   map[*conn]struct{}
	muxes   map[*muxConn]struct{}
	// yield lets other goroutines run before a multiplexed write (runtime.Gosched; tests
	// count the calls).
	yield    func()
	draining bool // no new connections are tracked once set
	connWG   sync.WaitGroup
}

// New returns a Manager with no listeners.
func New(cfg Config) (*Manager, error) {
	if cfg.Creds == nil || cfg.Metrics == nil || cfg.Logger == nil {
		return nil, errors.New("listener: Creds, Metrics and Logger are required")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.SessionCacheSize == 0 {
		cfg.SessionCacheSize = 256
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		cfg:      cfg,
		log:      cfg.Logger.With("subsystem", "listener"),
		ctx:      ctx,
		cancel:   cancel,
		sessions: &sessionCache{inner: tls.NewLRUClientSessionCache(cfg.SessionCacheSize), creds: cfg.Creds},
		byAddr:   map[string]*listener{},
		secrets:  map[string]bool{},
		conns:    map[*conn]struct{}{},
		muxes:    map[*muxConn]struct{}{},
		yield:    runtime.Gosched,
	}
	empty := map[string]*cluster{}
	m.clusters.Store(&empty)
	return m, nil
}

// sessionCache keys client sessions by the current SVID, so that after a
// rotation new connections make a full handshake with the new certificate
// instead of resuming a session established with the old one.
type sessionCache struct {
	inner tls.ClientSessionCache
	creds *identity.Source
}

func (s *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	return s.inner.Get(s.creds.SessionPrefix() + key)
}

func (s *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	s.inner.Put(s.creds.SessionPrefix()+key, cs)
}

// UpdateListeners replaces the set of listeners (state of the world). A
// listener whose address is unchanged keeps its socket and its connections;
// a removed one stops accepting and its connections drain. New sockets are
// bound before anything changes: if one cannot be bound, nothing changes and
// the error says why.
func (m *Manager) UpdateListeners(specs []*resource.Listener) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return errors.New("listener: shutting down")
	}
	fresh := map[string]*listener{}
	for _, s := range specs {
		if _, ok := m.byAddr[s.Address]; ok {
			continue
		}
		ln, err := net.Listen("tcp", s.Address) //nolint:noctx // bound once per listener; no context to follow
		if err != nil {
			for _, l := range fresh {
				_ = l.ln.Close()
			}
			return fmt.Errorf("listener: %s: bind %s: %w", s.Name, s.Address, err)
		}
		fresh[s.Address] = m.newListener(ln)
	}
	keep := map[string]bool{}
	for _, s := range specs {
		l := m.byAddr[s.Address]
		if l == nil {
			l = fresh[s.Address]
			m.byAddr[s.Address] = l
			m.log.Info("listener added", "listener", s.Name, "address", s.Address, "direction", s.Direction)
		} else if old := l.state.Load().spec; !sameSpec(old, s) {
			m.log.Info("listener updated in place", "listener", s.Name, "address", s.Address, "direction", s.Direction)
		}
		l.state.Store(m.newState(s))
		keep[s.Address] = true
	}
	for addr, l := range m.byAddr {
		if keep[addr] {
			continue
		}
		m.log.Info("listener removed; its connections drain", "listener", l.state.Load().spec.Name, "address", addr)
		l.removed.Store(true)
		_ = l.ln.Close()
		delete(m.byAddr, addr)
	}
	m.gotListeners = true
	m.reconcileLocked()
	m.forgetListenersLocked(specs)
	return nil
}

// forgetListenersLocked deletes the metric series of listeners that specs no longer has: names
// come from the control plane, and each would otherwise be served, and kept, forever. A
// removed listener's draining connections are no longer counted.
func (m *Manager) forgetListenersLocked(specs []*resource.Listener) {
	names := make(map[string]bool, len(specs))
	for _, s := range specs {
		names[s.Name] = true
	}
	keep := func(name string) bool { return names[name] }
	mt := m.cfg.Metrics
	mt.Connections.Retain("listener", keep)
	mt.ActiveConnections.Retain("listener", keep)
	mt.Bytes.Retain("listener", keep)
	mt.AuthzDenials.Retain("listener", keep)
	mt.HandshakeFailures.Retain("listener", keep)
}

func sameSpec(a, b *resource.Listener) bool {
	return a.Name == b.Name && a.Direction == b.Direction && a.Cluster == b.Cluster &&
		a.IdleTimeout == b.IdleTimeout && slices.Equal(matchers(a), matchers(b))
}

func matchers(l *resource.Listener) []string {
	if l.Peers == nil {
		return nil
	}
	return l.Peers.Matchers
}

// UpdateClusters replaces the set of clusters. Established connections keep
// their upstream; new connections use the new clusters.
func (m *Manager) UpdateClusters(specs []*resource.Cluster) error {
	// Under the lock: the metric handles taken here must not be deleted by the Retain of an
	// update that runs at the same time.
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make(map[string]*cluster, len(specs))
	for _, s := range specs {
		next[s.Name] = m.newCluster(s)
	}
	old := m.clusters.Swap(&next)
	for _, c := range *old {
		c.retire()
	}
	// A removed cluster's connect-latency series is deleted, as a removed listener's are.
	m.cfg.Metrics.UpstreamConnect.Retain("cluster", func(name string) bool { return next[name] != nil })
	m.log.Info("clusters updated", "clusters", slices.Sorted(maps.Keys(next)))
	m.reconcileLocked()
	return nil
}

// SecretsReady records that the named SDS secrets are present, which may
// warm listeners that reference them.
func (m *Manager) SecretsReady(names ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range names {
		m.secrets[n] = true
	}
	m.reconcileLocked()
}

// reconcileLocked starts accepting on every listener that became warm.
func (m *Manager) reconcileLocked() {
	if m.closing {
		return
	}
	for _, l := range m.byAddr {
		if l.accepting {
			continue
		}
		spec := l.state.Load().spec
		if reason := m.coldReasonLocked(spec); reason != "" {
			if reason != l.reason {
				m.log.Info("listener warming", "listener", spec.Name, "waiting_for", reason)
				l.reason = reason
			}
			continue
		}
		l.accepting, l.reason = true, ""
		m.log.Info("listener warm: accepting", "listener", spec.Name, "address", spec.Address)
		m.wg.Add(1)
		go l.acceptLoop()
	}
}

// coldReasonLocked says what a listener still waits for, or "" when warm.
func (m *Manager) coldReasonLocked(s *resource.Listener) string {
	var need []string
	if s.Peers != nil {
		need = append(need, s.Peers.CertSecret, s.Peers.BundleSecret)
	}
	if s.Direction == resource.Outbound {
		cl := (*m.clusters.Load())[s.Cluster]
		if cl == nil {
			return fmt.Sprintf("cluster %q", s.Cluster)
		}
		if cl.spec.TLS != nil {
			need = append(need, cl.spec.TLS.Peers.CertSecret, cl.spec.TLS.Peers.BundleSecret)
		}
	}
	for _, n := range need {
		if !m.secrets[n] {
			return fmt.Sprintf("secret %q", n)
		}
	}
	return ""
}

// Status is the state of one listener.
type Status struct {
	Name      string             `json:"name"`
	Address   string             `json:"address"`
	Direction resource.Direction `json:"direction"`
	Warm      bool               `json:"warm"`
	// WaitingFor says what a cold listener still needs.
	WaitingFor string             `json:"waiting_for,omitempty"`
	Spec       *resource.Listener `json:"-"`
}

// Listeners returns the state of every listener, sorted by name.
func (m *Manager) Listeners() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.byAddr))
	for _, l := range m.byAddr {
		s := l.state.Load().spec
		out = append(out, Status{
			Name: s.Name, Address: s.Address, Direction: s.Direction,
			Warm: l.accepting, WaitingFor: m.coldReasonLocked(s), Spec: s,
		})
	}
	slices.SortFunc(out, func(a, b Status) int { return cmpString(a.Name, b.Name) })
	return out
}

// Clusters returns the current clusters, sorted by name.
func (m *Manager) Clusters() []*resource.Cluster {
	cl := *m.clusters.Load()
	out := make([]*resource.Cluster, 0, len(cl))
	for _, c := range cl {
		out = append(out, c.spec)
	}
	slices.SortFunc(out, func(a, b *resource.Cluster) int { return cmpString(a.Name, b.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Ready reports whether listeners have been received and every one is warm;
// otherwise it says why not.
func (m *Manager) Ready() (bool, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return false, "draining"
	}
	if !m.gotListeners {
		return false, "no listeners received yet"
	}
	for _, l := range m.byAddr {
		if !l.accepting {
			s := l.state.Load().spec
			return false, fmt.Sprintf("listener %q is warming: waiting for %s", s.Name, m.coldReasonLocked(s))
		}
	}
	return true, ""
}

// Shutdown stops accepting on every listener and waits for open connections
// to finish until ctx is done; then it closes the remaining connections. It
// returns once every goroutine of the Manager has ended. It is idempotent.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	if !m.closing {
		m.closing = true
		for _, l := range m.byAddr {
			l.removed.Store(true)
			_ = l.ln.Close()
		}
		m.log.Info("draining connections", "active", m.activeConns())
	}
	m.mu.Unlock()
	m.connsMu.Lock()
	m.draining = true
	muxes := slices.Collect(maps.Keys(m.muxes))
	m.connsMu.Unlock()
	// Multiplexed connections take no new streams and close with their last one.
	for _, mc := range muxes {
		mc.drain()
	}

	drained := make(chan struct{})
	go func() {
		m.connWG.Wait()
		close(drained)
	}()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		n := m.closeAll()
		m.log.Warn("drain deadline reached: closing connections", "closed", n)
		err = fmt.Errorf("listener: drain: %d connections closed at the deadline: %w", n, ctx.Err())
		<-drained
	}
	m.cancel()
	m.wg.Wait()
	return err
}

func (m *Manager) activeConns() int {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	return len(m.conns)
}

// conn is one proxied connection, tracked for a forced close: down and up, or a stream of a
// multiplexed connection.
type conn struct {
	down, up net.Conn
	stream   *stream
}

func (m *Manager) track(c *conn) bool {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	if m.draining {
		return false
	}
	m.conns[c] = struct{}{}
	m.connWG.Add(1)
	return true
}

func (m *Manager) setUpstream(c *conn, up net.Conn) {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	c.up = up
}

func (m *Manager) untrack(c *conn) {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	delete(m.conns, c)
	m.connWG.Done()
}

func (m *Manager) closeAll() int {
	m.cancel()
	m.connsMu.Lock()
	muxes := slices.Collect(maps.Keys(m.muxes))
	conns := slices.Collect(maps.Keys(m.conns))
	m.connsMu.Unlock()
	for _, mc := range muxes {
		mc.close(errors.New("listener: drain deadline"))
	}
	for _, c := range conns {
		if c.stream != nil {
			c.stream.abort(true, errors.New("listener: drain deadline"))
			continue
		}
		_ = c.down.Close()
		if c.up != nil {
			_ = c.up.Close()
		}
	}
	return len(conns)
}

// lstate is a listener's configuration with its metric handles, swapped
// atomically on update.
type lstate struct {
	spec    *resource.Listener
	conns   *metrics.Counter
	active  *metrics.Gauge
	bytes   *metrics.Counter
	denials *metrics.Counter
	// failures holds a handle per handshake failure reason, taken with the others: a handshake
	// that fails on a listener already removed counts into its deleted series rather than
	// making them again.
	failures map[string]*metrics.Counter
}

// handshakeReasons are the values of the handshake failures' reason label.
var handshakeReasons = []string{
	metrics.ReasonNoClientCert, metrics.ReasonBadCertificate, metrics.ReasonExpired,
	metrics.ReasonUnknownCA, metrics.ReasonPlaintext, metrics.ReasonOther,
}

func (m *Manager) newState(s *resource.Listener) *lstate {
	dir := string(s.Direction)
	st := &lstate{
		spec:     s,
		conns:    m.cfg.Metrics.Connections.WithLabelValues(s.Name, dir),
		active:   m.cfg.Metrics.ActiveConnections.WithLabelValues(s.Name, dir),
		bytes:    m.cfg.Metrics.Bytes.WithLabelValues(s.Name, dir),
		denials:  m.cfg.Metrics.AuthzDenials.WithLabelValues(s.Name),
		failures: make(map[string]*metrics.Counter, len(handshakeReasons)),
	}
	for _, r := range handshakeReasons {
		st.failures[r] = m.cfg.Metrics.HandshakeFailures.WithLabelValues(s.Name, r)
	}
	return st
}

// failure returns the counter of handshake failures for reason ("other" for a reason that is
// not a label value).
func (st *lstate) failure(reason string) *metrics.Counter {
	if c, ok := st.failures[reason]; ok {
		return c
	}
	return st.failures[metrics.ReasonOther]
}
