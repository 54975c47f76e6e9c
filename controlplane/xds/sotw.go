package xds

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The state-of-the-world ADS streams are served here rather than by go-control-plane's sotw
// server, which runs two goroutines per stream (its receive loop and a reflect.Select over one
// channel per watch) and marshals every resource of every response for every stream. Here a
// stream is its gRPC handler goroutine, which receives requests and records them; every response
// (to a request or for a snapshot change) is sent by a push goroutine that lives only while it
// sends, one at a time per stream. The handler never sends: a sidecar that stops reading (grants
// no more HTTP/2 flow-control window) blocks that goroutine's Send, never the handler, which
// keeps receiving and returns when the sidecar ends the stream; gRPC then ends the stream's
// context, which ends the blocked Send. The resources were marshalled once when built
// (wireResources) and responses share them. The protocol is go-control-plane's snapshot cache in
// ADS mode, response for response: see (*sotwStream).respond.

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

// StreamAggregatedResources serves a state-of-the-world stream on the handler's goroutine, for a
// gRPC server; Serve's transport serves the same streams as events (newSotW), without one.
func (a *adsServer) StreamAggregatedResources(gs discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	st, err := a.s.newSotW(gs.Context(), gs)
	if err != nil {
		return err
	}
	for {
		req, err := gs.Recv()
		if err == nil {
			err = st.request(req)
		}
		if err != nil {
			return st.End(err)
		}
	}
}

// sender is what a stream's responses are sent on: an h2 stream, or a gRPC server stream. A
// push goroutine is its only sender.
type sender interface {
	SendMsg(m any) error
}

// sotwStream is one state-of-the-world ADS stream.
type sotwStream struct {
	s    *Server
	key  streamKey
	node spiffeid.ID
	ctx  context.Context // ends with the stream (Serve's end closes every connection)
	out  sender
	// limit bounds the requests the handler handles; only the handler uses it.
	limit *rate.Limiter

	// pushes is 0 when no push goroutine runs, 1 while one runs, 2 when it must run again.
	pushes atomic.Int32
	// closed is set when the stream ends (End): nothing more may be sent. It is not guarded by
	// mu: a request must never wait for a sender.
	closed atomic.Bool
	// refusal is the error that handling a request returned, the stream's status; only the
	// stream's receiving side uses it.
	refusal error

	mu    sync.Mutex // guards the fields below; never held across a Send
	nonce int64
	subs  []sotwSub
}

// sotwSub is the state of one type on a stream.
type sotwSub struct {
	typeURL  string
	names    []string // of the last request; none is every resource of the type
	version  string   // of the last request: what the sidecar holds
	nonce    string   // of the last response
	returned []string // names in the last response
	waiting  bool     // the last request awaits a response (go-control-plane's open watch)
	// request: the waiting request has not been looked at by a push yet, so it is answered as a
	// request (respond's rule for resources the last response did not carry applies).
	request bool
}

// newSotW opens a state-of-the-world ADS stream, whose requests are then given to its Message
// (or request), and its end to End; ctx is the stream's.
func (s *Server) newSotW(ctx context.Context, out sender) (*sotwStream, error) {
	st := &sotwStream{
		s: s, key: streamKey{id: s.sotwStreams.Add(1)}, out: out, ctx: ctx, subs: make([]sotwSub, 0, len(wireTypes)),
		limit: rate.NewLimiter(s.requestRate, s.requestBurst),
	}
	if err := s.openSotW(ctx, st); err != nil {
		s.onStreamClosed(st.key)
		return nil, err
	}
	return st, nil
}

// Message handles one request: the stream's h2 event.
func (st *sotwStream) Message(data []byte) error {
	req := &discovery.DiscoveryRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		st.refusal = status.Errorf(codes.InvalidArgument, "a request that is not a DiscoveryRequest: %v", err)
		return st.refusal
	}
	return st.request(req)
}

// request waits for the stream's request rate, then handles req; an error ends the stream.
func (st *sotwStream) request(req *discovery.DiscoveryRequest) error {
	if !st.wait() {
		return errStreamEnded
	}
	if err := st.handle(req); err != nil {
		st.refusal = err
		return err
	}
	return nil
}

// errStreamEnded: the stream ended while a request waited for its turn.
var errStreamEnded = errors.New("xds: the stream ended")

// End ends the stream. Its status is the refusal of a request if one was refused, or what
// was wrong with what the sidecar sent (a message above the size limit, compressed, or cut
// short); else OK: a sidecar that ended the stream, or whose stream broke, is told nothing.
func (st *sotwStream) End(err error) error {
	// Without the stream's lock, which a push may hold: a push checks it before each Send.
	st.closed.Store(true)
	st.s.onStreamClosed(st.key)
	if st.refusal != nil {
		return st.refusal
	}
	switch status.Code(err) {
	case codes.ResourceExhausted, codes.Unimplemented, codes.Internal:
		return err
	}
	return nil
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

// wait waits until the stream may handle another request; false if the stream ended first. It
// waits rather than refuse: a sidecar that asks too fast is slowed down, not cut off.
func (st *sotwStream) wait() bool {
	r := st.limit.Reserve() // never refused: the burst is at least one
	d := r.Delay()
	if d == 0 {
		return true
	}
	st.s.log.Debug("request rate exceeded, waiting", "node", st.node.String(), "wait", d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-st.ctx.Done():
		return false
	}
}

// handle records one request, as go-control-plane's sotw server and snapshot cache do, and has
// the push goroutine answer it: the handler never sends.
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
	sub := st.sub(typeURL)
	if sub.nonce != "" && req.GetResponseNonce() != sub.nonce {
		st.mu.Unlock()
		// An answer to an older response: the sidecar will answer the newer one.
		st.s.log.Debug("stale nonce, request ignored", "node", st.node.String(), "type_url", typeURL,
			"nonce", req.GetResponseNonce(), "want", sub.nonce)
		return nil
	}
	sub.names, sub.version, sub.waiting, sub.request = req.GetResourceNames(), req.GetVersionInfo(), true, true
	st.mu.Unlock()
	st.push()
	return nil
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

// respond returns the response to sub's waiting request from snap (nil while the node has no
// snapshot) if it should be answered now, and records it as sent; nil leaves the request
// waiting. As go-control-plane's snapshot cache does: a request is answered when its version
// differs from the snapshot's or, the first time it is looked at (as a request, not on a push),
// when the snapshot holds a resource it asks for that the last response did not carry; a request
// that names resources is answered only if it names every resource of the type (ADS: the sidecar
// asks again), and then with those it names. st.mu must be held.
func (st *sotwStream) respond(sub *sotwSub, snap *serviceState) *discovery.DiscoveryResponse {
	request := sub.request
	sub.request = false
	if !sub.waiting || snap == nil {
		return nil
	}
	w := snap.wireOf(sub.typeURL)
	if w == nil {
		w = &wireResources{}
	}
	if sub.version == w.version && (!request || !sub.missing(w)) {
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
	return resp
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

// push answers the stream's waiting requests that the node's snapshot answers, in a goroutine of
// its own that ends once nothing is left to send: a sidecar that reads slowly holds up its own
// stream's responses only, not its handler. It is called for every request and every change of
// the node's snapshot; one push goroutine at most runs per stream, so responses are sent in the
// order they were made.
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

// pushOnce makes the responses under st.mu, then sends them without it: the handler, which
// takes st.mu for every request, never waits for a Send.
func (st *sotwStream) pushOnce() {
	if st.closed.Load() || st.ctx.Err() != nil {
		return
	}
	var out [len(wireTypes)]*discovery.DiscoveryResponse
	resps := out[:0]
	st.mu.Lock()
	snap := st.s.current(st.node)
	for _, typeURL := range wireTypes {
		for i := range st.subs {
			if sub := &st.subs[i]; sub.typeURL == typeURL {
				if resp := st.respond(sub, snap); resp != nil {
					resps = append(resps, resp)
				}
			}
		}
	}
	st.mu.Unlock()
	for _, resp := range resps {
		// No Send once the stream ended. A stream that ends between this check and the Send is
		// harmless: the h2 stream (as gRPC's) is done once its status went out, and a Send on a
		// done stream fails without writing; a message already begun is completed first.
		if st.closed.Load() || st.ctx.Err() != nil {
			return
		}
		if err := st.out.SendMsg(resp); err != nil {
			st.s.log.Debug("push failed", "node", st.node.String(), "type_url", resp.GetTypeUrl(), "error", err.Error())
			return // the stream is broken: its handler's receive fails too
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
