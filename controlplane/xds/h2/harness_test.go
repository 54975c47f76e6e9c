package h2

// The review tests' harness: a real Server on 127.0.0.1 over mTLS, a raw HTTP/2 client (x/net's
// Framer on a tls.Conn) and a gRPC-Go client, and a test service of streaming methods.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// testPKI is a CA, and a server and a client certificate it issued.
type testPKI struct {
	caDER          []byte
	pool           *x509.CertPool
	server, client tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	issue := func(serial int64, usage x509.ExtKeyUsage) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{caDER: caDER, pool: pool, server: issue(2, x509.ExtKeyUsageServerAuth), client: issue(3, x509.ExtKeyUsageClientAuth)}
}

func (p *testPKI) serverTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13,
	}
}

func (p *testPKI) clientTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.client}, RootCAs: p.pool, ServerName: "127.0.0.1",
		NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13,
	}
}

// testService is the test service's implementation: its handlers report to its channels.
type testService struct {
	// started receives every Hold stream when its handler starts; ended when it returns.
	started, ended chan grpc.ServerStream
	// recvErr receives the error that ended a Drain stream's receiving.
	recvErr chan error
	// got receives the messages that Drain streams received.
	got chan []byte
}

func newTestService() *testService {
	return &testService{
		started: make(chan grpc.ServerStream, 1<<14), ended: make(chan grpc.ServerStream, 1<<14),
		recvErr: make(chan error, 1<<10), got: make(chan []byte, 1<<14),
	}
}

const (
	pathEcho   = "/test.Svc/Echo"   // answers every message with itself
	pathHold   = "/test.Svc/Hold"   // reads nothing, returns when its context ends
	pathDrain  = "/test.Svc/Drain"  // reads every message, reports them and its end, returns OK
	pathEvents = "/test.Svc/Events" // an event stream (registered by the tests that use it)
)

var testDesc = grpc.ServiceDesc{
	ServiceName: "test.Svc",
	Streams: []grpc.StreamDesc{
		{StreamName: "Echo", ServerStreams: true, ClientStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			for {
				m := &wrapperspb.BytesValue{}
				if err := ss.RecvMsg(m); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if err := ss.SendMsg(m); err != nil {
					return err
				}
			}
		}},
		{StreamName: "Hold", ServerStreams: true, ClientStreams: true, Handler: func(srv any, ss grpc.ServerStream) error {
			svc := srv.(*testService)
			svc.started <- ss
			<-ss.Context().Done()
			svc.ended <- ss
			return ss.Context().Err()
		}},
		{StreamName: "Drain", ServerStreams: true, ClientStreams: true, Handler: func(srv any, ss grpc.ServerStream) error {
			svc := srv.(*testService)
			for {
				m := &wrapperspb.BytesValue{}
				if err := ss.RecvMsg(m); err != nil {
					svc.recvErr <- err
					return nil
				}
				svc.got <- m.GetValue()
			}
		}},
	},
}

// startServer starts a Server on 127.0.0.1 serving the test service.
func startServer(t *testing.T, p *testPKI, svc *testService, configure func(*Config), register func(*Server)) (*Server, string) {
	t.Helper()
	cfg := Config{TLS: p.serverTLS()}
	if configure != nil {
		configure(&cfg)
	}
	s, err := NewServer(cfg)
	require.NoError(t, err)
	s.RegisterService(&testDesc, svc)
	if register != nil {
		register(s)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return s, lis.Addr().String()
}

// frame is what the raw client read of a server frame (copied: the Framer reuses its frames).
type frame struct {
	typ      http2.FrameType
	flags    http2.Flags
	streamID uint32
	data     []byte
	code     http2.ErrCode // RST_STREAM, GOAWAY
	incr     uint32        // WINDOW_UPDATE
	fields   map[string]string
	lastID   uint32 // GOAWAY
}

// rawClient is an HTTP/2 client of raw frames over mTLS.
type rawClient struct {
	t    *testing.T
	tc   *tls.Conn
	fr   *http2.Framer
	wmu  sync.Mutex
	hbuf bytes.Buffer
	henc *hpack.Encoder

	frames chan frame
	rerr   chan error // the reader's end
}

// dialRaw connects, sends the preface and settings, and starts reading if read is set.
func dialRaw(t *testing.T, p *testPKI, addr string, read bool, settings ...http2.Setting) *rawClient {
	t.Helper()
	return dialRawConn(t, p, addr, nil, read, settings...)
}

// dialRawConn is dialRaw over the net.Conn that wrap returns (nil: the TCP connection).
func dialRawConn(t *testing.T, p *testPKI, addr string, wrap func(net.Conn) net.Conn, read bool, settings ...http2.Setting) *rawClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	if wrap != nil {
		nc = wrap(nc)
	}
	tc := tls.Client(nc, p.clientTLS())
	require.NoError(t, tc.HandshakeContext(ctx))
	c := &rawClient{t: t, tc: tc, frames: make(chan frame, 1<<16), rerr: make(chan error, 1)}
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(tc, tc)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	_, err = tc.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	require.NoError(t, c.fr.WriteSettings(settings...))
	t.Cleanup(func() { _ = tc.NetConn().Close() })
	if read {
		go c.readLoop()
	}
	return c
}

func (c *rawClient) readLoop() {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.rerr <- err
			close(c.frames)
			return
		}
		out := frame{typ: f.Header().Type, flags: f.Header().Flags, streamID: f.Header().StreamID}
		switch f := f.(type) {
		case *http2.DataFrame:
			out.data = append([]byte(nil), f.Data()...)
		case *http2.RSTStreamFrame:
			out.code = f.ErrCode
		case *http2.GoAwayFrame:
			out.code, out.lastID, out.data = f.ErrCode, f.LastStreamID, append([]byte(nil), f.DebugData()...)
		case *http2.WindowUpdateFrame:
			out.incr = f.Increment
		case *http2.MetaHeadersFrame:
			out.fields = map[string]string{}
			for _, hf := range f.Fields {
				out.fields[hf.Name] = hf.Value
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.wmu.Lock()
				_ = c.fr.WriteSettingsAck()
				c.wmu.Unlock()
			}
		case *http2.PingFrame:
			out.data = append([]byte(nil), f.Data[:]...)
			if !f.IsAck() {
				c.wmu.Lock()
				_ = c.fr.WritePing(true, f.Data)
				c.wmu.Unlock()
			}
		}
		select {
		case c.frames <- out:
		default: // a test that does not look at frames
		}
	}
}

// headers opens stream id on path.
func (c *rawClient) headers(id uint32, path string, endStream bool, extra ...string) {
	c.t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	require.NoError(c.t, c.writeHeadersLocked(id, path, endStream, extra...))
}

func (c *rawClient) writeHeadersLocked(id uint32, path string, endStream bool, extra ...string) error {
	c.hbuf.Reset()
	fields := append([]string{":method", "POST", ":scheme", "https", ":path", path, ":authority", "127.0.0.1",
		"content-type", "application/grpc", "te", "trailers"}, extra...)
	for i := 0; i < len(fields); i += 2 {
		_ = c.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: endStream, EndHeaders: true,
	})
}

// data sends p as one DATA frame.
func (c *rawClient) data(id uint32, p []byte, endStream bool) {
	c.t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	require.NoError(c.t, c.fr.WriteData(id, endStream, p))
}

// do runs f under the client's write lock.
func (c *rawClient) do(f func(fr *http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return f(c.fr)
}

// waitFor returns the first frame that match accepts, failing the test after timeout or if the
// connection ends first.
func (c *rawClient) waitFor(timeout time.Duration, what string, match func(frame) bool) frame {
	c.t.Helper()
	f, ok := c.tryWaitFor(timeout, match)
	if !ok {
		c.t.Fatalf("no %s within %v", what, timeout)
	}
	return f
}

func (c *rawClient) tryWaitFor(timeout time.Duration, match func(frame) bool) (frame, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return frame{}, false
			}
			if match(f) {
				return f, true
			}
		case <-timer.C:
			return frame{}, false
		}
	}
}

// grpcMsg returns v as a length-prefixed gRPC message of a BytesValue.
func grpcMsg(v []byte) []byte {
	b, _ := proto.Marshal(wrapperspb.Bytes(v))
	return prefixed(b)
}

func prefixed(b []byte) []byte {
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b))) //nolint:gosec // G115: test messages are small
	return append(out, b...)
}

// connOf returns the server's only connection.
func connOf(t *testing.T, s *Server) *conn {
	t.Helper()
	var c *conn
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for x := range s.conns {
			c = x
		}
		return len(s.conns) == 1
	}, 5*time.Second, time.Millisecond)
	return c
}

// streamCount returns the number of open streams of c.
func streamCount(c *conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.streams)
}

func hpackField(name, value string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: value}
}

// sendFlow sends p on stream id in frames of at most 16000 bytes, as the server's windows for
// the stream allow (the connection's is credited as the stream's is, at least). It consumes the
// WINDOW_UPDATE frames of stream id, and no other frame should matter to the caller meanwhile.
func (c *rawClient) sendFlow(id uint32, p []byte, endStream bool) {
	c.t.Helper()
	window := initialWindow
	for len(p) > 0 {
		k := min(len(p), 16000)
		for window < k {
			f := c.waitFor(5*time.Second, "WINDOW_UPDATE", func(f frame) bool { return f.typ == http2.FrameWindowUpdate && f.streamID == id })
			window += int(f.incr)
		}
		c.data(id, p[:k], endStream && k == len(p))
		window -= k
		p = p[k:]
	}
}

// rawSetup starts a server (configure may be nil) with a test service, and dials it with a raw
// client that reads the server's frames.
func rawSetup(t *testing.T, configure func(*Config)) (*Server, *testService, *rawClient) {
	t.Helper()
	p := newTestPKI(t)
	svc := newTestService()
	s, addr := startServer(t, p, svc, configure, nil)
	return s, svc, dialRaw(t, p, addr, true)
}
