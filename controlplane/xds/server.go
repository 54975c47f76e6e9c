package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attestmesh/attestmesh/controlplane/xds/h2"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// DefaultAddr is where the xDS server listens unless configured.
const DefaultAddr = ":18000"

// maxStreamsPerConn bounds the concurrent gRPC streams of one sidecar connection.
const maxStreamsPerConn = 8

// A state-of-the-world stream handles at most requestRate requests a second, after a burst of
// requestBurst; beyond, its handler waits before it handles the next one (and stops reading, so
// gRPC's flow control holds the sidecar back), it drops none. A sidecar sends a request per type
// when it connects and one per response (its ACK), a handful per change: the limit is far above
// that, and bounds what a client that repeats requests the control plane answers (an old version
// with the current nonce is answered each time) has it send.
const (
	requestRate  = 20
	requestBurst = 100
)

// Config configures a Server.
type Config struct {
	// Logger receives the server's logs; discarded when nil.
	Logger *slog.Logger
	// TLS holds the server certificate and, in ClientCAs, the trust bundle that client SVIDs
	// must chain to (or a GetConfigForClient that supplies both, for hot reloading). The server
	// always requires and verifies a client certificate, with TLS 1.3 at least.
	TLS *tls.Config
	// Addr is the listen address of Run; DefaultAddr when empty.
	Addr string
	// Metrics is where the server registers its metrics; not registered when nil.
	Metrics prometheus.Registerer
	// OnPeer, when set, is called for every stream that opens, with its node's SPIFFE ID and
	// the certificate chain it presented (the leaf first, verified against the trust bundle).
	// A control plane that restarted learns from it the SVIDs of sidecars that attested
	// before, so that it can publish their snapshots again. It must not block.
	OnPeer func(id spiffeid.ID, chain []*x509.Certificate)
}

// Server is the ADS (state of the world and delta) server. The node of a stream is the
// authenticated peer: its SPIFFE ID comes from the verified client certificate, and it only ever
// receives the snapshot published for that ID. Update and the stream callbacks are safe for
// concurrent use.
type Server struct {
	log     *slog.Logger
	tls     *tls.Config
	addr    string
	cache   cache.SnapshotCache
	metrics *metrics
	onPeer  func(spiffeid.ID, []*x509.Certificate)

	mu       sync.Mutex // serializes Update; guards bundle and services
	bundle   *bundleState
	services map[spiffeid.ID]*serviceState

	streamsMu sync.Mutex // guards streams and published
	streams   map[streamKey]*streamState
	published map[string]time.Time // node ID -> when its current snapshot was published

	snaps       atomic.Pointer[map[spiffeid.ID]*serviceState] // what Update published last, for the streams
	sotwStreams atomic.Int64                                  // numbers the state-of-the-world streams
	requests    atomic.Int64                                  // requests handled (tests wait for them)

	// requestRate and requestBurst limit the requests of a state-of-the-world stream (tests
	// lower them).
	requestRate  rate.Limit
	requestBurst int
}

// streamKey identifies a stream: state-of-the-world and delta streams are numbered separately.
type streamKey struct {
	delta bool
	id    int64
}

type streamState struct {
	node      spiffeid.ID
	peer      string
	requested []requestTime // of the last request of each type; a stream asks for a few types
	sotw      *sotwStream   // nil for a delta stream
}

type requestTime struct {
	typeURL string
	at      time.Time
}

// New returns a Server; it serves once Run or Serve is called, and Update may be called before.
func New(cfg Config) (*Server, error) {
	if cfg.TLS == nil {
		return nil, errors.New("xds: config: TLS is required (server certificate and client CA pool)")
	}
	if cfg.TLS.ClientCAs == nil && cfg.TLS.GetConfigForClient == nil {
		return nil, errors.New("xds: config: TLS.ClientCAs is required: the trust bundle that sidecar SVIDs chain to")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("subsystem", "xds")
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	return &Server{
		log:       logger,
		tls:       enforceMTLS(cfg.TLS),
		addr:      addr,
		cache:     cache.NewSnapshotCache(true, cache.IDHash{}, slogAdapter{logger.With("component", "go-control-plane")}),
		metrics:   m,
		onPeer:    cfg.OnPeer,
		services:  make(map[spiffeid.ID]*serviceState),
		streams:   make(map[streamKey]*streamState),
		published: make(map[string]time.Time),

		requestRate:  requestRate,
		requestBurst: requestBurst,
	}, nil
}

// enforceMTLS returns a copy of c that requires and verifies a client certificate with TLS 1.3,
// also for configurations that GetConfigForClient returns.
func enforceMTLS(c *tls.Config) *tls.Config {
	out := c.Clone()
	out.ClientAuth = tls.RequireAndVerifyClientCert
	if out.MinVersion < tls.VersionTLS13 {
		out.MinVersion = tls.VersionTLS13
	}
	if get := c.GetConfigForClient; get != nil {
		out.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			inner, err := get(hello)
			if err != nil || inner == nil {
				return inner, err
			}
			inner = inner.Clone()
			inner.ClientAuth = tls.RequireAndVerifyClientCert
			if inner.MinVersion < tls.VersionTLS13 {
				inner.MinVersion = tls.VersionTLS13
			}
			return inner, nil
		}
	}
	return out
}

// maxRequestSize bounds an ADS request: 8 streams of a connection may hold 8 MiB.
const maxRequestSize = 1 << 20

// Run listens on the configured address and serves until ctx is done; a cancelled context is a
// clean stop.
func (s *Server) Run(ctx context.Context) error {
	lis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("xds: listen: %w", err)
	}
	return s.Serve(ctx, lis)
}

// Serve serves ADS on lis until ctx is done, then ends the streams and stops the gRPC server
// (forcibly after a few seconds). It closes lis.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	xctx, cancel := context.WithCancel(ctx)
	defer cancel()
	xds := &adsServer{
		Server: server.NewServer(xctx, s.cache, s.callbacks(), sotw.WithLogger(slogAdapter{s.log})),
		s:      s,
	}
	// The sidecars' connections are served by package h2: one goroutine per connection and one
	// per stream, where gRPC's server transport runs four (see docs/performance.md).
	hs, err := h2.NewServer(h2.Config{
		TLS: s.tls,
		// A sidecar opens one ADS stream; a few more allow a reconnect to overlap.
		MaxConcurrentStreams: maxStreamsPerConn,
		// A request is a few hundred bytes (a NACK's detail, Envoy's node metadata: some KiB);
		// the bound is what a connection's streams may make the control plane hold.
		MaxRecvMsgSize:   maxRequestSize,
		KeepaliveTime:    30 * time.Second,
		KeepaliveTimeout: 10 * time.Second,
		MinPingInterval:  5 * time.Second, // sidecars ping every 10 s
		Logger:           s.log,
	})
	if err != nil {
		_ = lis.Close()
		return fmt.Errorf("xds: %w", err)
	}
	discovery.RegisterAggregatedDiscoveryServiceServer(hs, xds)
	// State-of-the-world streams are served on their connection's goroutine (see sotw.go).
	hs.RegisterEvents(discovery.AggregatedDiscoveryService_StreamAggregatedResources_FullMethodName,
		func(st h2.Stream) (h2.Events, error) { return s.newSotW(st.Context(), st) }) //nolint:contextcheck // a stream's context is its own; it ends with its connection, which Stop closes

	s.log.Info("serving ADS", "addr", lis.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }() //nolint:contextcheck // the streams' contexts end with their connections, which Stop closes
	select {
	case err := <-errc:
		hs.Stop()
		return fmt.Errorf("xds: serve: %w", err)
	case <-ctx.Done():
	}
	// A state-of-the-world stream waits in its receive call, which only the sidecar or the end
	// of the connection ends: the connections are closed rather than drained. A sidecar sees its
	// stream fail (Unavailable) rather than end, and reconnects alike. Stop returns once every
	// stream's handler has.
	cancel()
	hs.Stop()
	if err := <-errc; err != nil && !errors.Is(err, h2.ErrServerStopped) {
		return fmt.Errorf("xds: serve: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

func (s *Server) callbacks() server.Callbacks {
	return server.CallbackFuncs{
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			return s.onStreamOpen(ctx, streamKey{delta: true, id: id})
		},
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) { s.onStreamClosed(streamKey{delta: true, id: id}) },
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			node, err := s.onRequest(streamKey{delta: true, id: id}, req.GetNode(), req.GetTypeUrl(), req.GetErrorDetail(),
				"", req.GetResponseNonce())
			req.Node = node
			return err
		},
		StreamDeltaResponseFunc: func(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
			s.onResponse(streamKey{delta: true, id: id}, resp.GetTypeUrl())
		},
		FetchRequestFunc: func(context.Context, *discovery.DiscoveryRequest) error {
			return status.Error(codes.Unimplemented, "xds: only ADS streams are served")
		},
	}
}

// peerID returns the SPIFFE ID of the verified client certificate of the stream, the peer's
// address and the chain it presented.
func peerID(ctx context.Context) (spiffeid.ID, string, []*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, "", nil, errors.New("xds: no peer on the stream")
	}
	addr := ""
	if p.Addr != nil {
		addr = p.Addr.String()
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return spiffeid.ID{}, addr, nil, errors.New("xds: stream is not over TLS")
	}
	if len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return spiffeid.ID{}, addr, nil, errors.New("xds: client presented no verified certificate")
	}
	id, err := x509svid.IDFromCert(info.State.VerifiedChains[0][0])
	if err != nil {
		return spiffeid.ID{}, addr, nil, fmt.Errorf("xds: client certificate is not an X.509-SVID: %w", err)
	}
	return id, addr, info.State.PeerCertificates, nil
}

func (s *Server) onStreamOpen(ctx context.Context, key streamKey) error {
	id, addr, chain, err := peerID(ctx)
	if err != nil {
		s.metrics.refused.WithLabelValues(refusedNoSVID).Inc()
		s.log.Warn("stream refused", "peer", addr, "reason", err.Error())
		return status.Error(codes.Unauthenticated, err.Error())
	}
	s.streamsMu.Lock()
	s.streams[key] = &streamState{node: id, peer: addr}
	s.streamsMu.Unlock()
	s.metrics.connected.Inc()
	s.log.Info("sidecar connected", "node", id.String(), "peer", addr, "stream", key.id, "delta", key.delta)
	if s.onPeer != nil {
		s.onPeer(id, chain)
	}
	return nil
}

func (s *Server) onStreamClosed(key streamKey) {
	s.streamsMu.Lock()
	st, ok := s.streams[key]
	delete(s.streams, key)
	s.streamsMu.Unlock()
	if !ok { // refused at open
		return
	}
	s.metrics.connected.Dec()
	s.log.Info("sidecar disconnected", "node", st.node.String(), "peer", st.peer, "stream", key.id, "delta", key.delta)
}

// onRequest makes the authenticated SPIFFE ID the request's node ID, refusing a request that
// claims another, and counts NACKs.
func (s *Server) onRequest(key streamKey, node *core.Node, typeURL string, nack *rpcstatus.Status,
	version, nonce string,
) (*core.Node, error) {
	s.requests.Add(1)
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	st, ok := s.streams[key]
	if !ok {
		return node, status.Error(codes.Unauthenticated, "xds: stream has no authenticated node")
	}
	want := st.node.String()
	if node.GetId() != "" && node.GetId() != want {
		s.metrics.refused.WithLabelValues(refusedNodeIDMismatch).Inc()
		s.log.Warn("stream refused", "peer", st.peer, "node", want, "claimed_node_id", node.GetId(),
			"reason", "node.id differs from the client certificate's SPIFFE ID")
		return node, status.Errorf(codes.PermissionDenied,
			"xds: node.id %q does not match the SPIFFE ID %q of the client certificate", node.GetId(), want)
	}
	if node == nil {
		node = &core.Node{}
	}
	node.Id = want
	if nack != nil {
		s.metrics.nacks.WithLabelValues(typeLabel(typeURL)).Inc()
		s.log.Warn("NACK", "node", want, "type_url", typeURL, "version", version, "nonce", nonce,
			"error", nack.GetMessage())
		return node, nil
	}
	now := time.Now()
	for i := range st.requested {
		if st.requested[i].typeURL == typeURL {
			st.requested[i].at = now
			return node, nil
		}
	}
	st.requested = append(st.requested, requestTime{typeURL: typeURL, at: now})
	return node, nil
}

func (s *Server) onResponse(key streamKey, typeURL string) {
	s.metrics.pushes.WithLabelValues(typeLabel(typeURL)).Inc()
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	st, ok := s.streams[key]
	if !ok {
		return
	}
	var start time.Time
	for _, r := range st.requested {
		if r.typeURL == typeURL {
			start = r.at
		}
	}
	if pub := s.published[st.node.String()]; pub.After(start) {
		start = pub
	}
	if !start.IsZero() {
		s.metrics.latency.Observe(time.Since(start).Seconds())
	}
}

// Update rebuilds, validates and publishes the snapshot of every service of m that has an SVID
// in svids, all or nothing: if any snapshot is invalid, nothing is published and the error names
// the resource and the field. Versions are content hashes per resource type, so a sidecar is sent
// only the types that changed; services whose inputs did not change keep their snapshot object.
// A sidecar with an SVID that no service of the mesh names (its mesh was removed, or left out
// because its registrant lost its rights) gets an empty configuration: no listeners, no
// clusters, so that what it served before stops at once. Services without an SVID lose their
// snapshot.
func (s *Server) Update(m *Mesh, bundle []*x509.Certificate, svids map[spiffeid.ID][]*x509.Certificate) error {
	if err := m.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := m.index()
	b, err := s.trustBundle(bundle)
	if err != nil {
		return err
	}
	all := slices.Clone(m.Services)
	inMesh := make(map[spiffeid.ID]bool, len(all))
	for _, svc := range all {
		inMesh[svc.ID] = true
	}
	for _, id := range slices.SortedFunc(maps.Keys(svids), func(a, b spiffeid.ID) int { return strings.Compare(a.String(), b.String()) }) {
		if !inMesh[id] {
			all = append(all, Service{ID: id}) // serves nothing, connects to nothing
		}
	}
	next := make([]*serviceState, len(all))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i := range all {
		svc := &all[i]
		chain := svids[svc.ID]
		if len(chain) == 0 {
			s.log.Debug("no SVID yet, no snapshot", "node", svc.ID.String())
			continue
		}
		old := s.services[svc.ID]
		g.Go(func() error {
			st, err := buildService(idx, svc, old, b, chain)
			if err != nil {
				return err
			}
			next[i] = st
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}

	services := make(map[spiffeid.ID]*serviceState, len(all))
	var changed []*serviceState
	for _, st := range next {
		if st == nil {
			continue
		}
		services[st.id] = st
		if old := s.services[st.id]; old == nil || old.snap != st.snap {
			changed = append(changed, st)
		}
	}
	now := time.Now()
	s.streamsMu.Lock()
	for _, st := range changed {
		s.published[st.id.String()] = now
	}
	var removed []spiffeid.ID
	for id := range s.services {
		if _, ok := services[id]; !ok {
			removed = append(removed, id)
			delete(s.published, id.String())
		}
	}
	s.snaps.Store(&services) // before the pushes: a stream reads it under its own lock
	isChanged := make(map[spiffeid.ID]bool, len(changed))
	for _, st := range changed {
		isChanged[st.id] = true
	}
	var push []*sotwStream
	for _, st := range s.streams {
		if st.sotw != nil && isChanged[st.node] {
			push = append(push, st.sotw)
		}
	}
	s.streamsMu.Unlock()
	for _, st := range push {
		st.push()
	}

	var errs []error
	for _, st := range changed {
		if err := s.cache.SetSnapshot(context.Background(), st.id.String(), st.snap); err != nil {
			errs = append(errs, fmt.Errorf("xds: publish snapshot for %q: %w", st.id, err))
		}
	}
	for _, id := range removed {
		s.cache.ClearSnapshot(id.String())
	}
	s.services = services
	s.log.Info("snapshots updated", "services", len(services), "published", len(changed),
		"unchanged", len(services)-len(changed), "removed", len(removed))
	return errors.Join(errs...)
}

// trustBundle returns the trust bundle secret, reusing the previous one when the bundle did not
// change. s.mu must be held.
func (s *Server) trustBundle(bundle []*x509.Certificate) (*bundleState, error) {
	key := hashCerts(bundle)
	if s.bundle != nil && s.bundle.key == key {
		return s.bundle, nil
	}
	secret, err := buildTrustBundle(bundle)
	if err != nil {
		return nil, err
	}
	wire, h, err := marshalResource(resource.SecretType, secret)
	if err != nil {
		return nil, err
	}
	if _, err := checkResource(secret); err != nil {
		return nil, err
	}
	s.bundle = &bundleState{key: key, secret: secret, wire: wire, hash: h}
	return s.bundle, nil
}
