package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	adsMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	host      = "h2.test"
)

// serve starts a Server for cfg on loopback; register registers its methods. It is stopped
// when the test ends, and the test fails if Stop leaves a handler running past 10 s.
func serve(t *testing.T, cfg Config, register func(*Server)) (*Server, string, *testPKI) {
	t.Helper()
	p := newTestPKI(t)
	cfg.TLS = p.serverTLS()
	s, err := NewServer(cfg)
	require.NoError(t, err)
	register(s)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	t.Cleanup(func() {
		stopped := make(chan struct{})
		go func() { s.Stop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Error("Stop did not return: a handler is still running")
		}
		assert.ErrorIs(t, <-served, ErrServerStopped)
	})
	return s, lis.Addr().String(), p
}

// echoADS is an ADS service whose StreamAggregatedResources answers every request with a response
// carrying the request's version, nonce and, as one resource, the bytes of its first resource
// name; it records what its streams saw.
type echoADS struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	mu       sync.Mutex
	md       metadata.MD
	peer     *peer.Peer
	deadline bool
	ended    chan error // the handler's return, or the stream context's end
	fail     error      // returned when a request's version is "fail"
}

func newEchoADS() *echoADS { return &echoADS{ended: make(chan error, 16)} }

func (e *echoADS) StreamAggregatedResources(gs discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	ctx := gs.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	p, _ := peer.FromContext(ctx)
	_, deadline := ctx.Deadline()
	e.mu.Lock()
	e.md, e.peer, e.deadline = md, p, deadline
	e.mu.Unlock()
	if err := gs.SetHeader(metadata.Pairs("x-header", "h")); err != nil {
		return err
	}
	gs.SetTrailer(metadata.Pairs("x-trailer", "t"))
	for {
		req, err := gs.Recv()
		if errors.Is(err, io.EOF) {
			e.ended <- nil
			return nil
		}
		if err != nil {
			e.ended <- err
			return err
		}
		if req.GetVersionInfo() == "fail" {
			e.ended <- e.fail
			return e.fail
		}
		if err := gs.Send(reply(req)); err != nil {
			e.ended <- err
			return err
		}
	}
}

func reply(req *discovery.DiscoveryRequest) *discovery.DiscoveryResponse {
	var value []byte
	if names := req.GetResourceNames(); len(names) > 0 {
		value = []byte(names[0])
	}
	return &discovery.DiscoveryResponse{
		VersionInfo: req.GetVersionInfo(), Nonce: req.GetResponseNonce(),
		Resources: []*anypb.Any{{TypeUrl: "type.googleapis.com/test", Value: value}},
	}
}

func dialADS(t *testing.T, addr string, p *testPKI, opts ...grpc.DialOption) discovery.AggregatedDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(p.clientTLS()))}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return discovery.NewAggregatedDiscoveryServiceClient(conn)
}

// TestGRPCClient runs gRPC-Go's client against a handler on its own goroutine: messages both
// ways (some larger than every flow-control window), metadata, headers and trailers, the peer,
// a deadline, and a status with characters that grpc-message must percent-encode.
func TestGRPCClient(t *testing.T) {
	e := newEchoADS()
	e.fail = status.Error(codes.FailedPrecondition, "refused: 100% ünicode\nline")
	_, addr, p := serve(t, Config{}, func(s *Server) { discovery.RegisterAggregatedDiscoveryServiceServer(s, e) })
	client := dialADS(t, addr, p)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(t.Context(), "x-team", "a", "x-key-bin", "\x00\x01"), 30*time.Second)
	defer cancel()

	stream, err := client.StreamAggregatedResources(ctx)
	require.NoError(t, err)
	big := strings.Repeat("x", 1<<20) // 16 windows of 64 KiB
	sizes := []string{"a", big, "b", big[:70000], ""}
	for i, name := range sizes {
		req := &discovery.DiscoveryRequest{VersionInfo: string(rune('0' + i)), ResourceNames: []string{name}}
		require.NoError(t, stream.Send(req))
		resp, err := stream.Recv()
		require.NoError(t, err)
		require.True(t, proto.Equal(reply(req), resp), "response %d", i)
	}
	header, err := stream.Header()
	require.NoError(t, err)
	assert.Equal(t, []string{"h"}, header.Get("x-header"))
	require.NoError(t, stream.CloseSend())
	_, err = stream.Recv()
	require.ErrorIs(t, err, io.EOF)
	assert.Equal(t, []string{"t"}, stream.Trailer().Get("x-trailer"))
	require.NoError(t, <-e.ended)

	e.mu.Lock()
	assert.Equal(t, []string{"a"}, e.md.Get("x-team"))
	assert.Equal(t, []string{"\x00\x01"}, e.md.Get("x-key-bin"))
	assert.Empty(t, e.md.Get("content-type"), "gRPC's own headers are not metadata")
	assert.True(t, e.deadline, "grpc-timeout sets the stream's deadline")
	require.NotNil(t, e.peer)
	info, ok := e.peer.AuthInfo.(credentials.TLSInfo)
	require.True(t, ok)
	require.Len(t, info.State.VerifiedChains, 1)
	assert.Equal(t, p.client.Certificate[0], info.State.VerifiedChains[0][0].Raw, "the peer is the client's certificate")
	e.mu.Unlock()

	stream, err = client.StreamAggregatedResources(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&discovery.DiscoveryRequest{VersionInfo: "fail"}))
	_, err = stream.Recv()
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	assert.Equal(t, "refused: 100% ünicode\nline", status.Convert(err).Message())
	assert.Equal(t, codes.FailedPrecondition, status.Code(<-e.ended))
}

// TestGRPCClientCancels: a client's cancellation resets the stream, which ends the handler's
// receive and its context.
func TestGRPCClientCancels(t *testing.T) {
	e := newEchoADS()
	_, addr, p := serve(t, Config{}, func(s *Server) { discovery.RegisterAggregatedDiscoveryServiceServer(s, e) })
	client := dialADS(t, addr, p)
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := client.StreamAggregatedResources(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&discovery.DiscoveryRequest{VersionInfo: "1"}))
	_, err = stream.Recv()
	require.NoError(t, err)
	cancel()
	select {
	case err := <-e.ended:
		assert.Equal(t, codes.Canceled, status.Code(err), "%v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not see the cancellation")
	}
}

// TestUnknownMethod: a method the server does not serve is answered Unimplemented.
func TestUnknownMethod(t *testing.T) {
	_, addr, p := serve(t, Config{}, func(s *Server) { discovery.RegisterAggregatedDiscoveryServiceServer(s, newEchoADS()) })
	client := dialADS(t, addr, p)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := client.DeltaAggregatedResources(ctx)
	require.NoError(t, err)
	_, err = stream.Recv()
	assert.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	// Unimplemented by the service, served by the transport: the method is registered.
	assert.Contains(t, status.Convert(err).Message(), "not implemented")

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(p.clientTLS())))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	err = conn.Invoke(ctx, "/no.Such/Method", &discovery.DiscoveryRequest{}, &discovery.DiscoveryResponse{})
	assert.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	assert.Equal(t, "unknown method /no.Such/Method", status.Convert(err).Message())
}

// events is an event handler that answers every request like echoADS, from a goroutine of its
// own, and records its end.
type events struct {
	st    Stream
	out   chan *discovery.DiscoveryResponse
	ended chan error
	fail  error
}

func (ev *events) Message(data []byte) error {
	req := &discovery.DiscoveryRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetVersionInfo() == "fail" {
		return ev.fail
	}
	select { // Message must not wait
	case ev.out <- reply(req):
		return nil
	default:
		return status.Error(codes.ResourceExhausted, "the client does not read its responses")
	}
}

// End returns the error that ended the stream as its status; OK when the client ended it.
func (ev *events) End(err error) error {
	close(ev.out)
	ev.ended <- err
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func registerEvents(ended chan error, fail error) func(*Server) {
	return func(s *Server) {
		s.RegisterEvents(adsMethod, func(st Stream) (Events, error) {
			ev := &events{st: st, out: make(chan *discovery.DiscoveryResponse, 64), ended: ended, fail: fail}
			go func() {
				for resp := range ev.out {
					if st.SendMsg(resp) != nil {
						return
					}
				}
			}()
			return ev, nil
		})
	}
}

// TestEvents: an event stream's messages arrive in order, large ones whole; End is called once,
// with io.EOF when the client ends its side, or with Message's error, whose status the client
// gets.
func TestEvents(t *testing.T) {
	ended := make(chan error, 4)
	fail := status.Error(codes.PermissionDenied, "not yours")
	_, addr, p := serve(t, Config{}, registerEvents(ended, fail))
	client := dialADS(t, addr, p)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	stream, err := client.StreamAggregatedResources(ctx)
	require.NoError(t, err)
	big := strings.Repeat("y", 300000)
	for i, name := range []string{"a", big, "c"} {
		req := &discovery.DiscoveryRequest{VersionInfo: string(rune('0' + i)), ResourceNames: []string{name}}
		require.NoError(t, stream.Send(req))
	}
	for i, name := range []string{"a", big, "c"} {
		resp, err := stream.Recv()
		require.NoError(t, err)
		assert.Equal(t, string(rune('0'+i)), resp.GetVersionInfo())
		assert.Equal(t, name, string(resp.GetResources()[0].GetValue()))
	}
	require.NoError(t, stream.CloseSend())
	require.ErrorIs(t, <-ended, io.EOF)
	for err == nil {
		_, err = stream.Recv()
	}
	require.ErrorIs(t, err, io.EOF)

	stream, err = client.StreamAggregatedResources(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&discovery.DiscoveryRequest{VersionInfo: "fail"}))
	_, err = stream.Recv()
	assert.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.Equal(t, "not yours", status.Convert(err).Message())
	require.ErrorIs(t, <-ended, fail)
	select {
	case err := <-ended:
		t.Fatalf("End called twice: %v", err)
	default:
	}
}

// TestEventsOpenRefused: an error from open is the stream's status.
func TestEventsOpenRefused(t *testing.T) {
	_, addr, p := serve(t, Config{}, func(s *Server) {
		s.RegisterEvents(adsMethod, func(Stream) (Events, error) {
			return nil, status.Error(codes.Unauthenticated, "who are you")
		})
	})
	stream, err := dialADS(t, addr, p).StreamAggregatedResources(t.Context())
	require.NoError(t, err)
	_, err = stream.Recv()
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	assert.Equal(t, "who are you", status.Convert(err).Message())
}

// TestStop: Stop ends open streams (the client sees Unavailable), waits for their handlers, and
// Serve returns ErrServerStopped (checked by serve's cleanup).
func TestStop(t *testing.T) {
	e := newEchoADS()
	s, addr, p := serve(t, Config{}, func(s *Server) { discovery.RegisterAggregatedDiscoveryServiceServer(s, e) })
	stream, err := dialADS(t, addr, p).StreamAggregatedResources(t.Context())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&discovery.DiscoveryRequest{VersionInfo: "1"}))
	_, err = stream.Recv()
	require.NoError(t, err)
	s.Stop()
	err = <-e.ended
	require.Equal(t, codes.Unavailable, status.Code(err), "the handler's receive fails: %v", err)
	_, err = stream.Recv()
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}

// frameClient speaks HTTP/2 frame by frame over mutual TLS.
type frameClient struct {
	t  *testing.T
	tc *tls.Conn
	fr *http2.Framer
}

func dialFrames(t *testing.T, addr string, p *testPKI) *frameClient {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	tc, err := tls.DialWithDialer(d, "tcp", addr, p.clientTLS())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tc.Close() })
	require.NoError(t, tc.SetDeadline(time.Now().Add(20*time.Second)))
	_, err = io.WriteString(tc, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(tc, tc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	require.NoError(t, fr.WriteSettings())
	return &frameClient{t: t, tc: tc, fr: fr}
}

func (c *frameClient) headers(id uint32, path, contentType string, endStream bool) {
	c.t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", path}, {":authority", host}, {"content-type", contentType}, {"te", "trailers"}} {
		require.NoError(c.t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	require.NoError(c.t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: endStream}))
}

// message writes m as a gRPC message (length-prefixed) in one DATA frame.
func (c *frameClient) message(id uint32, flag byte, m []byte, endStream bool) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint32([]byte{flag}, uint32(len(m))) //nolint:gosec // G115: test sizes
	require.NoError(c.t, c.fr.WriteData(id, endStream, append(b, m...)))
}

// next returns the next frame for which keep is true, answering nothing; it fails the test if
// the connection ends first.
func (c *frameClient) next(keep func(http2.Frame) bool) http2.Frame {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		require.NoError(c.t, err)
		if keep(f) {
			return f
		}
	}
}

// goAway reads until GOAWAY and returns it.
func (c *frameClient) goAway() *http2.GoAwayFrame {
	c.t.Helper()
	return c.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
}

// status reads the stream's frames until its trailers (or trailers-only response), and returns
// its HTTP status, grpc-status and grpc-message.
func (c *frameClient) status(id uint32) (httpStatus, grpcStatus, msg string) {
	c.t.Helper()
	for {
		f := c.next(func(f http2.Frame) bool { return f.Header().StreamID == id })
		h, ok := f.(*http2.MetaHeadersFrame)
		if !ok {
			continue
		}
		if s := h.PseudoValue("status"); s != "" {
			httpStatus = s
		}
		for _, hf := range h.RegularFields() {
			switch hf.Name {
			case "grpc-status":
				grpcStatus = hf.Value
			case "grpc-message":
				msg = hf.Value
			}
		}
		if h.StreamEnded() {
			return httpStatus, grpcStatus, msg
		}
	}
}

// TestRefusals: requests and frames that break HTTP/2 or gRPC are refused, each for its reason.
func TestRefusals(t *testing.T) {
	req, err := proto.Marshal(&discovery.DiscoveryRequest{VersionInfo: "1"})
	require.NoError(t, err)
	var ended chan error
	tests := []struct {
		name  string
		cfg   Config
		send  func(c *frameClient)
		check func(c *frameClient)
	}{
		{"not gRPC", Config{}, func(c *frameClient) { c.headers(1, adsMethod, "application/json", true) },
			func(c *frameClient) {
				t := c.t
				httpStatus, grpcStatus, msg := c.status(1)
				assert.Equal(t, "415", httpStatus)
				assert.Equal(t, "3", grpcStatus) // InvalidArgument
				assert.Contains(t, msg, "content-type")
			}},
		{"a message above the limit", Config{MaxRecvMsgSize: 100}, func(c *frameClient) {
			c.headers(1, adsMethod, "application/grpc", false)
			c.message(1, 0, make([]byte, 101), false)
		}, func(c *frameClient) {
			t := c.t
			_, grpcStatus, msg := c.status(1)
			assert.Equal(t, "8", grpcStatus) // ResourceExhausted
			assert.Contains(t, msg, "larger than max (101 vs. 100)")
		}},
		{"a compressed message", Config{}, func(c *frameClient) {
			c.headers(1, adsMethod, "application/grpc", false)
			c.message(1, 1, req, false)
		}, func(c *frameClient) {
			t := c.t
			_, grpcStatus, msg := c.status(1)
			assert.Equal(t, "12", grpcStatus) // Unimplemented
			assert.Contains(t, msg, "compressed")
		}},
		{"a stream that ends inside a message", Config{}, func(c *frameClient) {
			c.headers(1, adsMethod, "application/grpc", false)
			b := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(req)+10)) //nolint:gosec // G115: small
			require.NoError(c.t, c.fr.WriteData(1, true, append(b, req...)))
		}, func(c *frameClient) {
			t := c.t
			_, grpcStatus, msg := c.status(1)
			assert.Equal(t, "13", grpcStatus, "the handler is told, and returns it") // Internal
			assert.Contains(t, msg, "inside a message")
			err := <-ended
			assert.Equal(t, codes.Internal, status.Code(err))
		}},
		{"an even stream ID", Config{}, func(c *frameClient) { c.headers(2, adsMethod, "application/grpc", false) },
			func(c *frameClient) {
				t := c.t
				assert.Equal(t, http2.ErrCodeProtocol, c.goAway().ErrCode)
			}},
		{"DATA beyond the stream's window", Config{}, func(c *frameClient) {
			// The first message waits for the handler, which reads nothing: the stream's window
			// is not returned, and what the client sends beyond it is refused.
			c.headers(1, "/test.Blocked/Stream", "application/grpc", false)
			c.message(1, 0, req, false)
			// Then a message of 200,000 bytes, more than the window.
			require.NoError(c.t, c.fr.WriteData(1, false, append(binary.BigEndian.AppendUint32([]byte{0}, 200000), make([]byte, 15995)...)))
			for range 4 {
				require.NoError(c.t, c.fr.WriteData(1, false, make([]byte, 16000)))
			}
		}, func(c *frameClient) {
			t := c.t
			f := c.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
			assert.Equal(t, uint32(1), f.StreamID)
			assert.Equal(t, http2.ErrCodeFlowControl, f.ErrCode)
		}},
		{"DATA on a stream never opened", Config{}, func(c *frameClient) { require.NoError(c.t, c.fr.WriteData(5, false, []byte{1})) },
			func(c *frameClient) {
				t := c.t
				assert.Equal(t, http2.ErrCodeProtocol, c.goAway().ErrCode)
			}},
		{"more than 1,024 messages waiting", Config{}, func(c *frameClient) {
			c.headers(1, "/test.Blocked/Stream", "application/grpc", false)
			require.NoError(c.t, c.fr.WriteData(1, false, make([]byte, 5*1025))) // 1,025 empty messages
		}, func(c *frameClient) {
			f := c.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
			assert.Equal(c.t, http2.ErrCodeEnhanceYourCalm, f.ErrCode)
		}},
		{"a stream beyond MaxConcurrentStreams", Config{MaxConcurrentStreams: 1}, func(c *frameClient) {
			c.headers(1, adsMethod, "application/grpc", false)
			c.headers(3, adsMethod, "application/grpc", false)
		}, func(c *frameClient) {
			t := c.t
			f := c.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
			assert.Equal(t, uint32(3), f.StreamID)
			assert.Equal(t, http2.ErrCodeRefusedStream, f.ErrCode)
		}},
		{"SETTINGS that take a stream's window above 2^31-1", Config{}, func(c *frameClient) {
			c.headers(1, "/test.Blocked/Stream", "application/grpc", false)
			require.NoError(c.t, c.fr.WriteWindowUpdate(1, 1<<31-1-65535))
			require.NoError(c.t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536}))
		}, func(c *frameClient) {
			assert.Equal(c.t, http2.ErrCodeFlowControl, c.goAway().ErrCode)
		}},
		{"HEADERS on an open stream that do not end it", Config{}, func(c *frameClient) {
			c.headers(1, "/test.Blocked/Stream", "application/grpc", false)
			c.headers(1, "/test.Blocked/Stream", "application/grpc", false)
		}, func(c *frameClient) {
			f := c.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
			assert.Equal(c.t, uint32(1), f.StreamID)
			assert.Equal(c.t, http2.ErrCodeProtocol, f.ErrCode)
		}},
		{"pings too often", Config{MinPingInterval: time.Hour}, func(c *frameClient) {
			for i := range 4 {
				require.NoError(c.t, c.fr.WritePing(false, [8]byte{byte(i)}))
			}
		}, func(c *frameClient) {
			t := c.t
			g := c.goAway()
			assert.Equal(t, http2.ErrCodeEnhanceYourCalm, g.ErrCode)
			assert.Equal(t, "too_many_pings", string(g.DebugData()))
		}},
		{"a frame larger than the maximum", Config{}, func(c *frameClient) {
			c.headers(1, adsMethod, "application/grpc", false)
			// The Framer refuses to write it; write it by hand. The server may close before it
			// read all of it.
			_, _ = c.tc.Write(append(appendFrameHeader(nil, maxFrameSize+1, http2.FrameData, 0, 1), make([]byte, maxFrameSize+1)...))
		}, func(c *frameClient) {
			t := c.t
			assert.Equal(t, http2.ErrCodeFrameSize, c.goAway().ErrCode)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ended = make(chan error, 16)
			_, addr, p := serve(t, tt.cfg, func(s *Server) {
				registerEvents(ended, errors.New("unused"))(s)
				s.RegisterService(&blockedService, nil)
			})
			c := dialFrames(t, addr, p)
			tt.send(c)
			tt.check(c)
		})
	}
}

// blockedService's one method reads nothing and returns when its stream ends.
var blockedService = grpc.ServiceDesc{
	ServiceName: "test.Blocked",
	Streams: []grpc.StreamDesc{{StreamName: "Stream", ClientStreams: true, ServerStreams: true,
		Handler: func(_ any, st grpc.ServerStream) error {
			<-st.Context().Done()
			return nil
		}}},
}

// TestKeepalive: a client that answers no ping loses its connection after KeepaliveTime and
// KeepaliveTimeout; one that answers keeps it.
func TestKeepalive(t *testing.T) {
	cfg := Config{KeepaliveTime: 100 * time.Millisecond, KeepaliveTimeout: 100 * time.Millisecond}
	_, addr, p := serve(t, cfg, registerEvents(make(chan error, 4), nil))

	silent := dialFrames(t, addr, p)
	start := time.Now()
	for {
		if _, err := silent.fr.ReadFrame(); err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
	}
	assert.Less(t, time.Since(start), 10*time.Second)

	answering := dialFrames(t, addr, p)
	deadline := time.Now().Add(time.Second)
	pings := 0
	for time.Now().Before(deadline) {
		f, err := answering.fr.ReadFrame()
		require.NoError(t, err, "the connection of a client that answers pings was closed")
		if ping, ok := f.(*http2.PingFrame); ok && !ping.IsAck() {
			pings++
			require.NoError(t, answering.fr.WritePing(true, ping.Data))
		}
	}
	assert.Greater(t, pings, 1, "the server pings an idle client")
}

// TestSlowReader: a client that stops reading while the server writes loses its connection
// after WriteTimeout; the sender's SendMsg fails rather than waiting forever.
func TestSlowReader(t *testing.T) {
	sent := make(chan error, 1)
	_, addr, p := serve(t, Config{WriteTimeout: 300 * time.Millisecond}, func(s *Server) {
		s.RegisterEvents(adsMethod, func(st Stream) (Events, error) {
			go func() {
				resp := &discovery.DiscoveryResponse{Resources: []*anypb.Any{{Value: make([]byte, 1<<20)}}}
				for {
					if err := st.SendMsg(resp); err != nil {
						sent <- err
						return
					}
				}
			}()
			return &events{out: make(chan *discovery.DiscoveryResponse, 1), ended: make(chan error, 4)}, nil
		})
	})
	c := dialFrames(t, addr, p)
	// Windows as large as HTTP/2 allows, so that only the socket holds the server back.
	require.NoError(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}))
	require.NoError(t, c.fr.WriteWindowUpdate(0, 1<<31-1-65535))
	c.headers(1, adsMethod, "application/grpc", false)
	select {
	case err := <-sent:
		assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("SendMsg to a client that does not read did not fail")
	}
}

// FuzzConn sends arbitrary bytes after a client's preface and SETTINGS to a server with both
// kinds of streams: the server must neither panic nor keep a goroutine once Stop returns (a
// running handler fails serve's cleanup).
func FuzzConn(f *testing.F) {
	var valid bytes.Buffer
	fr := http2.NewFramer(&valid, nil)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, hf := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", adsMethod}, {"content-type", "application/grpc"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true})
	req, _ := proto.Marshal(&discovery.DiscoveryRequest{VersionInfo: "1", ResourceNames: []string{"a"}})
	_ = fr.WriteData(1, false, append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(req))), req...)) //nolint:gosec // G115: small
	_ = fr.WriteWindowUpdate(1, 1000)
	_ = fr.WritePing(false, [8]byte{1})
	_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	f.Add(valid.Bytes())
	f.Add([]byte{0, 0, 4, 9, 0, 0, 0, 0, 1, 1, 2, 3, 4})                      // CONTINUATION without HEADERS
	f.Add([]byte{0, 0, 1, 1, 0, 0, 0, 0, 3, 0x82})                            // HEADERS without END_HEADERS
	f.Add([]byte{0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0x80, 0, 0, 0})             // SETTINGS_INITIAL_WINDOW_SIZE 2^31
	f.Add([]byte{0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0}) // PING, then a cut frame
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		_, addr, p := serve(t, Config{WriteTimeout: time.Second, MaxConcurrentStreams: 4}, func(s *Server) {
			registerEvents(make(chan error, 64), errors.New("fail"))(s)
			s.RegisterService(&blockedService, nil)
		})
		c := dialFrames(t, addr, p)
		_, _ = c.tc.Write(data)
		_ = c.tc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = io.Copy(io.Discard, c.tc)
	})
}

// TestMaxHandshakes: connections that never finish their TLS handshake hold at most
// MaxHandshakes slots; the next client waits until one times out, then connects.
func TestMaxHandshakes(t *testing.T) {
	const timeout = time.Second
	_, addr, p := serve(t, Config{MaxHandshakes: 2, HandshakeTimeout: timeout}, registerEvents(make(chan error, 4), nil))
	first := time.Now() // the silent connections' handshakes time out a second after this, not before
	for range 2 {
		silent, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { _ = silent.Close() })
	}
	time.Sleep(100 * time.Millisecond) // both accepted and in their handshake
	start := time.Now()
	c := dialFrames(t, addr, p) // a full mTLS handshake and the preface
	took := time.Since(start)
	require.NoError(t, c.fr.WritePing(false, [8]byte{1}))
	c.next(func(f http2.Frame) bool { ping, ok := f.(*http2.PingFrame); return ok && ping.IsAck() })
	t.Logf("connected after %s", took.Round(time.Millisecond))
	assert.GreaterOrEqual(t, time.Since(first), timeout, "the client was served before a slot was free")
}
