package xds

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The state-of-the-world ADS streams are served here rather than by go-control-plane's sotw
// server, which runs two goroutines per stream (its receive loop and a reflect.Select over one
// channel per watch) and marshals every resource of every response for every stream. Here a
// stream is its gRPC handler goroutine, which receives and answers requests; a snapshot change
// is pushed by a goroutine that lives only while it sends; the resources were marshalled once
// when built (wireResources) and responses share them. The protocol is go-control-plane's
// snapshot cache in ADS mode, response for response: see (*sotwStream).respond.

// wireTypes are the types a snapshot holds, in the order a push sends them (go-control-plane's
// ADS order: clusters before the listeners that use them, secrets last).
var wireTypes = [...]string{resource.ClusterType, resource.ListenerType, resource.SecretType}

const (
	wireClusters = iota
	wireListeners
	wireSecrets
)

// maxResourceNames bounds the names one request may list: a sidecar names at most its two
// secrets, and a request's names are kept with its type until the next request.
const maxResourceNames = 1024

// wireOf returns the resources of typeURL; nil for a type the snapshot does not hold.
func (st *serviceState) wireOf(typeURL string) *wireResources {
	if i := slices.Index(wireTypes[:], typeURL); i >= 0 {
		return st.wire[i]
	}
	return nil
}

// adsServer serves state-of-the-world ADS itself and delta ADS with go-control-plane.
type adsServer struct {
	server.Server
	s *Server
}

func (a *adsServer) StreamAggregatedResources(gs discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.s.serveSotW(gs.Context(), gs)
}

// sotwStream is one state-of-the-world ADS stream.
type sotwStream struct {
	s    *Server
	key  streamKey
	node spiffeid.ID
	ctx  context.Context // ends with the stream (Serve's end closes every connection)
	gs   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer

	// pushes is 0 when no push goroutine runs, 1 while one runs, 2 when it must run again.
	pushes atomic.Int32

	mu     sync.Mutex // serializes sends; guards the fields below
	nonce  int64
	subs   []sotwSub
	closed bool // the handler returned: gRPC forbids sending any more
}

// sotwSub is the state of one type on a stream.
type sotwSub struct {
	typeURL  string
	names    []string // of the last request; none is every resource of the type
	version  string   // of the last request: what the sidecar holds
	nonce    string   // of the last response
	returned []string // names in the last response
	waiting  bool     // the last request awaits a response (go-control-plane's open watch)
}

// serveSotW runs one state-of-the-world ADS stream until the sidecar ends it or a request is
// refused; ctx is the stream's.
func (s *Server) serveSotW(ctx context.Context, gs discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	key := streamKey{id: s.sotwStreams.Add(1)}
	defer s.onStreamClosed(key)
	st := &sotwStream{s: s, key: key, gs: gs, ctx: ctx, subs: make([]sotwSub, 0, len(wireTypes))}
	if err := s.openSotW(ctx, st); err != nil {
		return err
	}
	defer func() { // after a push that is sending, before the handler returns
		st.mu.Lock()
		st.closed = true
		st.mu.Unlock()
	}()
	for {
		req, err := gs.Recv()
		if err != nil {
			return nil //nolint:nilerr // the sidecar ended the stream, or it broke: nothing to report to it
		}
		if err := st.handle(req); err != nil {
			return err
		}
	}
}

// openSotW authenticates the stream and registers it for pushes.
func (s *Server) openSotW(ctx context.Context, st *sotwStream) error {
	if err := s.onStreamOpen(ctx, st.key); err != nil {
		return err
	}
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	state := s.streams[st.key]
	st.node = state.node
	state.sotw = st
	return nil
}

// handle answers one request, as go-control-plane's sotw server and snapshot cache do.
func (st *sotwStream) handle(req *discovery.DiscoveryRequest) error {
	typeURL := req.GetTypeUrl()
	if typeURL == "" {
		return status.Errorf(codes.InvalidArgument, "type URL is required for ADS")
	}
	if _, err := st.s.onRequest(st.key, req.GetNode(), typeURL, req.GetErrorDetail(),
		req.GetVersionInfo(), req.GetResponseNonce()); err != nil {
		return err
	}
	if n := len(req.GetResourceNames()); n > maxResourceNames {
		return status.Errorf(codes.InvalidArgument, "a request names %d resources, at most %d are allowed", n, maxResourceNames)
	}
	if !slices.Contains(wireTypes[:], typeURL) {
		// A type no snapshot holds is never answered (as go-control-plane's snapshot cache
		// leaves its watch open); nothing of the request is kept.
		st.s.log.Debug("request for a type the control plane does not serve, not answered", "node", st.node.String(), "type_url", typeURL)
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	sub := st.sub(typeURL)
	if sub.nonce != "" && req.GetResponseNonce() != sub.nonce {
		// An answer to an older response: the sidecar will answer the newer one.
		st.s.log.Debug("stale nonce, request ignored", "node", st.node.String(), "type_url", typeURL,
			"nonce", req.GetResponseNonce(), "want", sub.nonce)
		return nil
	}
	sub.names, sub.version, sub.waiting = req.GetResourceNames(), req.GetVersionInfo(), true
	return st.respond(sub, st.s.current(st.node), false)
}

// sub returns the state of typeURL, new if the stream has not asked for it yet; it is valid
// until the next call. st.mu must be held.
func (st *sotwStream) sub(typeURL string) *sotwSub {
	for i := range st.subs {
		if st.subs[i].typeURL == typeURL {
			return &st.subs[i]
		}
	}
	st.subs = append(st.subs, sotwSub{typeURL: typeURL})
	return &st.subs[len(st.subs)-1]
}

// respond answers sub's waiting request from snap (nil while the node has no snapshot) if it
// should be answered now; it leaves the request waiting otherwise. As go-control-plane's snapshot
// cache does: a request is answered when its version differs from the snapshot's or, on a request
// (not on a push), when the snapshot holds a resource it asks for that the last response did not
// carry; a request that names resources is answered only if it names every resource of the type
// (ADS: the sidecar asks again), and then with those it names. st.mu must be held.
func (st *sotwStream) respond(sub *sotwSub, snap *serviceState, push bool) error {
	if !sub.waiting || snap == nil {
		return nil
	}
	w := snap.wireOf(sub.typeURL)
	if w == nil {
		w = &wireResources{}
	}
	if sub.version == w.version && (push || !sub.missing(w)) {
		return nil
	}
	sub.waiting = false
	names, anys := w.names, w.anys
	if len(sub.names) > 0 {
		for _, name := range w.names {
			if !slices.Contains(sub.names, name) {
				st.s.log.Warn("request does not name every resource of its type, not answered",
					"node", st.node.String(), "type_url", sub.typeURL, "names", len(sub.names), "missing", name)
				return nil
			}
		}
		if len(sub.names) < len(w.names) || !slices.Equal(sub.names, w.names) {
			names, anys = nil, nil
			for i, name := range w.names {
				if slices.Contains(sub.names, name) {
					names, anys = append(names, name), append(anys, w.anys[i])
				}
			}
		}
	}
	st.nonce++
	resp := &discovery.DiscoveryResponse{
		VersionInfo: w.version,
		Resources:   anys,
		TypeUrl:     sub.typeURL,
		Nonce:       strconv.FormatInt(st.nonce, 10),
	}
	sub.nonce, sub.returned = resp.Nonce, names
	st.s.onResponse(st.key, sub.typeURL)
	return st.gs.Send(resp)
}

// missing reports whether w holds a resource that sub asks for and the last response did not
// carry.
func (sub *sotwSub) missing(w *wireResources) bool {
	for _, name := range w.names {
		if (len(sub.names) == 0 || slices.Contains(sub.names, name)) && !slices.Contains(sub.returned, name) {
			return true
		}
	}
	return false
}

// push answers the stream's waiting requests whose type changed in the node's snapshot, in a
// goroutine of its own that ends once nothing is left to send: a sidecar that reads slowly
// holds up its own stream only.
func (st *sotwStream) push() {
	for {
		switch v := st.pushes.Load(); v {
		case 0:
			if st.pushes.CompareAndSwap(0, 1) {
				go st.pushLoop()
				return
			}
		default:
			if st.pushes.CompareAndSwap(v, 2) {
				return
			}
		}
	}
}

func (st *sotwStream) pushLoop() {
	for {
		st.pushOnce()
		if st.pushes.CompareAndSwap(1, 0) {
			return
		}
		st.pushes.Store(1) // it was 2: the snapshot changed again meanwhile
	}
}

func (st *sotwStream) pushOnce() {
	if st.ctx.Err() != nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return
	}
	snap := st.s.current(st.node)
	for _, typeURL := range wireTypes {
		for i := range st.subs {
			sub := &st.subs[i]
			if sub.typeURL != typeURL {
				continue
			}
			if err := st.respond(sub, snap, true); err != nil {
				st.s.log.Debug("push failed", "node", st.node.String(), "type_url", typeURL, "error", err.Error())
				return // the stream is broken: its handler's receive fails too
			}
		}
	}
}

// current returns the node's published state; nil when it has none.
func (s *Server) current(id spiffeid.ID) *serviceState {
	if m := s.snaps.Load(); m != nil {
		return (*m)[id]
	}
	return nil
}
