// Package h2 serves the streaming methods of gRPC services over HTTP/2 (RFC 9113) on TLS with
// one goroutine per connection, which reads and answers frames, and one per stream, the
// method's handler. It is the transport of the xDS server, which holds a connection and a
// stream open for every sidecar of the mesh: gRPC-Go's server transport runs three goroutines
// per connection (its reader, its writer and keepalive) beside the handler, about 18 KiB of
// stacks, which is most of what the control plane keeps per connected sidecar.
//
// What it serves is what gRPC clients (gRPC-Go, Envoy's and gRPC C++) send to a streaming
// method: a POST with content-type application/grpc, length-prefixed messages and trailers. It
// has no unary methods, compression, interceptors, channelz or binary logging. Frames are read
// with golang.org/x/net/http2's Framer (which checks their syntax, HPACK and CONTINUATION
// limits); this package keeps the connection and stream state and both directions' flow
// control, and writes its frames itself.
//
// Writes: frames are written under the connection's write lock, each write bounded by
// Config.WriteTimeout, so a peer that stops reading loses its connection rather than holding a
// goroutine. A stream's SendMsg waits for HTTP/2 flow-control window without the lock, until
// the peer grants it, the stream ends, or the connection closes. A stream's received messages
// are kept until its handler reads them, and the stream's window is returned only then: a peer
// can make the server hold, per stream, one window (64 KiB) of waiting messages, at most 1,024
// of them, and one message being assembled (at most MaxRecvMsgSize).
package h2

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// Config configures a Server; zero fields take the defaults below.
type Config struct {
	// TLS is the server's TLS configuration; "h2" is added to its NextProtos (and to those of
	// the configurations that GetConfigForClient returns). Clients that negotiate no protocol
	// are served too (Envoy does not offer ALPN unless told to). Required.
	TLS *tls.Config
	// MaxConcurrentStreams bounds the open streams of a connection; a stream beyond it is
	// refused (RST_STREAM REFUSED_STREAM). Default 100.
	MaxConcurrentStreams uint32
	// MaxRecvMsgSize bounds a received message; a larger one ends the stream's receiving with
	// RESOURCE_EXHAUSTED. Default 4 MiB (gRPC's).
	MaxRecvMsgSize int
	// HandshakeTimeout bounds the TLS handshake and the client's connection preface. Default
	// 20 s.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the connections in their TLS handshake, which no client certificate
	// has authenticated yet: beyond it the server accepts no connection until one ends, so a
	// flood of connections that never finish their handshake waits in the kernel's backlog
	// instead of holding a goroutine and a TLS state each. Default 1,024.
	MaxHandshakes int
	// WriteTimeout bounds every write to a connection; a peer that does not read for that long
	// loses its connection. Default 30 s.
	WriteTimeout time.Duration
	// KeepaliveTime: after this long without a frame from the peer the server pings it, and
	// closes the connection if KeepaliveTimeout passes with no frame either. Defaults 2 h and
	// 20 s (gRPC's).
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MinPingInterval: a client that pings more often than this, while the server sends it no
	// data, is sent GOAWAY ENHANCE_YOUR_CALM ("too_many_pings") at the third such ping, as gRPC
	// does. Default 5 min (gRPC's).
	MinPingInterval time.Duration
	// Logger receives connection errors at debug level. Default: discard.
	Logger *slog.Logger
}

const (
	defaultMaxStreams       = 100
	defaultMaxRecvMsgSize   = 4 << 20
	defaultHandshakeTimeout = 20 * time.Second
	defaultMaxHandshakes    = 1024
	defaultWriteTimeout     = 30 * time.Second
	defaultKeepaliveTime    = 2 * time.Hour
	defaultKeepaliveTimeout = 20 * time.Second
	defaultMinPingInterval  = 5 * time.Minute
)

// ErrServerStopped is returned by Serve once Stop was called.
var ErrServerStopped = errors.New("h2: server stopped")

// Server serves registered streaming methods. Its methods are safe for concurrent use;
// RegisterService must be called before Serve.
type Server struct {
	cfg     Config
	tls     *tls.Config
	log     *slog.Logger
	methods map[string]*method

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	shaking   map[net.Conn]struct{} // connections in their TLS handshake
	stopped   bool

	wg sync.WaitGroup // connections' goroutines and stream handlers

	handshakes chan struct{} // a slot per connection in its TLS handshake
	done       chan struct{} // closed by Stop
}

type method struct {
	srv     any
	handler grpc.StreamHandler
	open    func(Stream) (Events, error) // an event method's; then handler is unused
}

// Stream is what an event method's handler has of its stream.
type Stream interface {
	// Context is the stream's: it carries the peer (grpc/peer) and the request's metadata, and
	// ends with the stream.
	Context() context.Context
	// SendMsg sends a protobuf message, waiting for flow-control window; it must not be called
	// from Events' methods (they run on the connection's goroutine, which grants the window),
	// nor concurrently with itself. A SendMsg running when the stream's End returns completes
	// the message it has begun, then the status goes out.
	SendMsg(m any) error
}

// Events serves a stream without a goroutine of its own: its methods are called on the
// connection's goroutine, which reads nothing else meanwhile, so they must not wait long (nor
// ever on SendMsg). Message is called for every message received, in order (data is valid
// only during the call); an error from it ends the stream. End is called once when the stream
// ends, with Message's error, or io.EOF when the client ended its side, or why the stream
// broke (reset, the connection closed); the status it returns is sent to the client.
type Events interface {
	Message(data []byte) error
	End(err error) error
}

// RegisterEvents serves fullMethod ("/package.Service/Method") as an event stream: open is
// called, on the connection's goroutine, when a request arrives; an error from it is the
// stream's status. It replaces a method of the same name that RegisterService registered.
func (s *Server) RegisterEvents(fullMethod string, open func(Stream) (Events, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.methods[fullMethod] = &method{open: open}
}

// orDefault sets *v to d when it is zero or negative (unset).
func orDefault[T int | uint32 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// NewServer returns a Server for cfg.
func NewServer(cfg Config) (*Server, error) {
	if cfg.TLS == nil {
		return nil, errors.New("h2: config: TLS is required")
	}
	orDefault(&cfg.MaxConcurrentStreams, defaultMaxStreams)
	orDefault(&cfg.MaxRecvMsgSize, defaultMaxRecvMsgSize)
	orDefault(&cfg.HandshakeTimeout, defaultHandshakeTimeout)
	orDefault(&cfg.MaxHandshakes, defaultMaxHandshakes)
	orDefault(&cfg.WriteTimeout, defaultWriteTimeout)
	orDefault(&cfg.KeepaliveTime, defaultKeepaliveTime)
	orDefault(&cfg.KeepaliveTimeout, defaultKeepaliveTimeout)
	orDefault(&cfg.MinPingInterval, defaultMinPingInterval)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg:       cfg,
		tls:       withH2(cfg.TLS),
		log:       log,
		methods:   make(map[string]*method),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		shaking:   make(map[net.Conn]struct{}),

		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		done:       make(chan struct{}),
	}, nil
}

// withH2 returns a copy of c that offers "h2", also in the configurations GetConfigForClient
// returns.
func withH2(c *tls.Config) *tls.Config {
	out := c.Clone()
	if !slices.Contains(out.NextProtos, "h2") {
		out.NextProtos = append([]string{"h2"}, out.NextProtos...)
	}
	if get := c.GetConfigForClient; get != nil {
		out.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			inner, err := get(hello)
			if err != nil || inner == nil || slices.Contains(inner.NextProtos, "h2") {
				return inner, err
			}
			inner = inner.Clone()
			inner.NextProtos = append([]string{"h2"}, inner.NextProtos...)
			return inner, nil
		}
	}
	return out
}

// RegisterService registers the streaming methods of sd, implemented by impl; it implements
// grpc.ServiceRegistrar, so generated Register functions take a Server. It panics, as gRPC's
// does, if impl does not implement sd's interface, and also if sd has unary methods, which
// are not served.
func (s *Server) RegisterService(sd *grpc.ServiceDesc, impl any) {
	if len(sd.Methods) > 0 {
		panic(fmt.Sprintf("h2: service %s has unary methods, which are not served", sd.ServiceName))
	}
	if sd.HandlerType != nil && impl != nil {
		if !implements(impl, sd.HandlerType) {
			panic(fmt.Sprintf("h2: %T does not implement the handler type of service %s", impl, sd.ServiceName))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range sd.Streams {
		s.methods["/"+sd.ServiceName+"/"+d.StreamName] = &method{srv: impl, handler: d.Handler}
	}
}

// Serve accepts connections on lis until Stop, and closes lis. It returns ErrServerStopped
// after Stop, or the listener's error.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		_ = lis.Close()
		return ErrServerStopped
	}
	s.listeners[lis] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, lis)
		s.mu.Unlock()
		_ = lis.Close()
	}()
	var delay time.Duration
	for {
		select {
		case s.handshakes <- struct{}{}:
		case <-s.done:
			return ErrServerStopped
		}
		nc, err := lis.Accept()
		if err != nil {
			<-s.handshakes
			s.mu.Lock()
			stopped := s.stopped
			s.mu.Unlock()
			if stopped {
				return ErrServerStopped
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("h2: accept: %w", err)
		}
		delay = 0
		s.wg.Add(1)
		go s.handshake(nc)
	}
}

// handshake runs the TLS handshake of nc and starts its connection in a goroutine of its own:
// the handshake's deep stack ends with this goroutine.
func (s *Server) handshake(nc net.Conn) {
	defer s.wg.Done()
	defer func() { <-s.handshakes }()
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	s.shaking[nc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.shaking, nc)
		s.mu.Unlock()
	}()
	tc := tls.Server(nc, s.tls)
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	_ = tc.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.log.Debug("TLS handshake failed", "peer", nc.RemoteAddr().String(), "error", err.Error())
		_ = nc.Close()
		return
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "h2" {
		s.log.Debug("refused: not HTTP/2", "peer", nc.RemoteAddr().String(), "alpn", p)
		_ = nc.Close()
		return
	}
	c := newConn(s, tc)
	if !s.track(c) {
		_ = nc.Close()
		return
	}
	s.wg.Add(1)
	go c.serve(deadline)
}

// track records c, or returns false once the server is stopping.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Stop closes the listeners and every connection, which ends every stream (a handler's
// RecvMsg and SendMsg fail), and returns once the handlers have returned.
func (s *Server) Stop() {
	s.mu.Lock()
	if !s.stopped {
		close(s.done)
	}
	s.stopped = true
	for lis := range s.listeners {
		_ = lis.Close()
	}
	for nc := range s.shaking {
		_ = nc.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(errors.New("h2: server stopped"))
	}
	s.wg.Wait()
}
