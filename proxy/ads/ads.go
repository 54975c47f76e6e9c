// Package ads is the sidecar's xDS client: one Aggregated Discovery Service
// stream (state of the world) over gRPC with mutual TLS, authenticated by the
// sidecar's X.509-SVID. It subscribes to listeners, clusters and secrets,
// hands every response to a Handler, ACKs what the Handler applied and NACKs
// (with the reason) what it refused, and reconnects with capped, jittered
// exponential backoff while the last good configuration keeps serving.
package ads

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/proxy/metrics"
)

// Handler applies the resources of one state-of-the-world response.
// Implementations need not be safe for concurrent use: the Client calls
// Apply from one goroutine.
type Handler interface {
	// Apply validates and applies every resource of typeURL. An error rejects
	// the whole response (NACK) and must leave the previous configuration
	// in force; its text is the NACK's error_detail.
	Apply(typeURL string, resources []*anypb.Any) error
}

// Subscription is one resource type to subscribe to; no Names means all
// (wildcard).
type Subscription struct {
	TypeURL string
	Names   []string
}

// Config configures a Client.
type Config struct {
	// Addr is the control plane's xDS address (host:port).
	Addr string
	// Node identifies the sidecar; the control plane trusts the client
	// certificate, not the node ID.
	Node *Node
	// TLS is the client configuration, see ClientTLS.
	TLS           *tls.Config
	Subscriptions []Subscription
	Handler       Handler
	Logger        *slog.Logger
	Metrics       *metrics.Metrics
	// InitialBackoff and MaxBackoff bound the reconnect delay
	// (defaults 500ms and 30s).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// The ADS method, invoked with the hand-written messages of wire.go.
const adsMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

var adsStream = grpc.StreamDesc{StreamName: "StreamAggregatedResources", ServerStreams: true, ClientStreams: true}

// ClientTLS returns the mTLS configuration for the xDS stream: the client
// certificate is the current SVID from svid; the server must present an
// X.509-SVID that chains to bundle and that authorize accepts.
func ClientTLS(svid x509svid.Source, bundle x509bundle.Source, authorize tlsconfig.Authorizer) *tls.Config {
	c := tlsconfig.MTLSClientConfig(svid, bundle, authorize)
	c.MinVersion = tls.VersionTLS13
	return c
}

// Client is an ADS client. Run it once.
type Client struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	versions  map[string]string // last accepted version by type URL
	nacked    map[string]string // last rejected version by type URL
	connected bool
	lastErr   string
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.Addr == "":
		return nil, errors.New("ads: Addr is required")
	case cfg.Node == nil || cfg.Node.ID == "":
		return nil, errors.New("ads: Node with an ID is required")
	case cfg.TLS == nil:
		return nil, errors.New("ads: TLS is required")
	case cfg.Handler == nil || cfg.Logger == nil || cfg.Metrics == nil:
		return nil, errors.New("ads: Handler, Logger and Metrics are required")
	case len(cfg.Subscriptions) == 0:
		return nil, errors.New("ads: no subscriptions")
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.InitialBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.InitialBackoff)
	}
	return &Client{
		cfg:      cfg,
		log:      cfg.Logger.With("subsystem", "ads", "xds_server", cfg.Addr),
		versions: map[string]string{},
		nacked:   map[string]string{},
	}, nil
}

// Status is the client's view of the stream.
type Status struct {
	Connected bool              `json:"connected"`
	Versions  map[string]string `json:"versions"`
	LastError string            `json:"last_error,omitempty"`
}

// Status returns the current stream state and the accepted versions.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{Connected: c.connected, Versions: maps.Clone(c.versions), LastError: c.lastErr}
}

// Run keeps an ADS stream open until ctx is done, reconnecting with backoff.
// It returns nil when ctx is canceled.
func (c *Client) Run(ctx context.Context) error {
	// Several control-plane replicas: one at a time, the next one when it fails (see
	// attestapi.Target). Keepalives notice a replica that stopped answering without closing
	// the connection.
	target, opts, err := attestapi.Target(c.cfg.Addr)
	if err != nil {
		return fmt.Errorf("ads: %w", err)
	}
	conn, err := grpc.NewClient(target, append(opts,
		grpc.WithTransportCredentials(credentials.NewTLS(c.cfg.TLS)),
		// The bounds of wire.go (MaxResources) and proxy/resource (DecodeBudget) assume it.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseSize)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay: c.cfg.InitialBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: c.cfg.MaxBackoff,
			},
			MinConnectTimeout: 5 * time.Second,
		}))...)
	if err != nil {
		return fmt.Errorf("ads: dial %s: %w", c.cfg.Addr, err)
	}
	defer func() { _ = conn.Close() }()

	attempt := 0
	for {
		got, err := c.stream(ctx, conn)
		c.setConnected(false, err)
		if ctx.Err() != nil {
			c.log.Info("xDS stream closed: stopping")
			return nil
		}
		if got {
			attempt = 0
		}
		delay := c.backoff(attempt)
		attempt++
		c.log.Warn("xDS stream lost: serving the last good configuration; reconnecting",
			"error", err, "retry_in", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			c.log.Info("xDS client stopping")
			return nil
		case <-t.C:
		}
	}
}

// backoff returns the delay before reconnect attempt n: exponential from
// InitialBackoff, capped at MaxBackoff, with jitter in [d/2, d).
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.InitialBackoff
	for i := 0; i < n && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1) //nolint:gosec // G404: jitter needs no cryptographic randomness
}

func (c *Client) setConnected(up bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connected = up
	if err != nil {
		c.lastErr = err.Error()
	}
}

// stream runs one ADS stream; got reports whether any response arrived.
func (c *Client) stream(ctx context.Context, conn *grpc.ClientConn) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := conn.NewStream(ctx, &adsStream, adsMethod, grpc.ForceCodecV2(codec{}))
	if err != nil {
		return false, fmt.Errorf("ads: open stream: %w", err)
	}
	c.mu.Lock()
	versions := maps.Clone(c.versions)
	c.mu.Unlock()
	for i, sub := range c.cfg.Subscriptions {
		req := &DiscoveryRequest{
			TypeURL:       sub.TypeURL,
			ResourceNames: sub.Names,
			VersionInfo:   versions[sub.TypeURL],
		}
		if i == 0 {
			req.Node = c.cfg.Node
		}
		if err := st.SendMsg(req); err != nil {
			return false, fmt.Errorf("ads: subscribe %s: %w", sub.TypeURL, err)
		}
	}
	if len(versions) > 0 {
		// A reconnect that already holds every version: the control plane answers only
		// when something changed, so the open, subscribed stream is the connection.
		c.setConnected(true, nil)
		c.log.Info("xDS stream re-established", "versions", len(versions))
	}
	type received struct {
		resp *DiscoveryResponse
		err  error
	}
	recvc := make(chan received)
	recvDone := make(chan struct{})
	defer func() { cancel(); <-recvDone }()
	go func() {
		defer close(recvDone)
		for {
			resp := &DiscoveryResponse{}
			err := st.RecvMsg(resp)
			select {
			case recvc <- received{resp, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	// A control plane that re-sends a rejected version at once (as
	// go-control-plane's snapshot cache does) would make NACKs spin: a
	// repeated NACK of the same version is held back with backoff.
	held := map[string]*DiscoveryRequest{}
	holdDelay := map[string]time.Duration{}
	due := make(chan string, len(c.cfg.Subscriptions))
	var timers []*time.Timer
	defer func() {
		for _, t := range timers {
			t.Stop()
		}
	}()
	for {
		var req *DiscoveryRequest
		select {
		case <-ctx.Done():
			return got, fmt.Errorf("ads: %w", ctx.Err())
		case r := <-recvc:
			if r.err != nil {
				return got, fmt.Errorf("ads: receive: %w", r.err)
			}
			if !got {
				got = true
				c.setConnected(true, nil)
				c.log.Info("xDS stream established")
			}
			typ := r.resp.TypeURL
			delete(held, typ)
			var repeated bool
			req, repeated = c.handle(r.resp)
			if req.ErrorDetail == nil {
				delete(holdDelay, typ)
			} else if repeated {
				d := min(max(2*holdDelay[typ], c.cfg.InitialBackoff), c.cfg.MaxBackoff)
				holdDelay[typ] = d
				held[typ] = req
				timers = append(timers, time.AfterFunc(d, func() { due <- typ }))
				continue
			}
		case typ := <-due:
			if req = held[typ]; req == nil {
				continue
			}
			delete(held, typ)
		}
		if err := st.SendMsg(req); err != nil {
			return got, fmt.Errorf("ads: send: %w", err)
		}
	}
}

// unsubscribedLabel is the type_url label of the responses of types the client did not
// subscribe to.
const unsubscribedLabel = "unsubscribed"

// handle applies one response and returns its ACK or NACK; repeated reports
// a NACK of the same version as the previous NACK of that type.
func (c *Client) handle(resp *DiscoveryResponse) (req *DiscoveryRequest, repeated bool) {
	typ := resp.TypeURL
	var names []string
	known := false
	for _, s := range c.cfg.Subscriptions {
		if s.TypeURL == typ {
			names, known = s.Names, true
		}
	}
	var err error
	if !known {
		err = fmt.Errorf("ads: not subscribed to %s", typ)
	} else {
		err = c.cfg.Handler.Apply(typ, resp.Resources)
	}
	req = &DiscoveryRequest{TypeURL: typ, ResourceNames: names, ResponseNonce: resp.Nonce}
	if !known {
		// The type URL is the control plane's text: keeping it (a metric label, a NACK
		// state) per type would let a control plane grow the sidecar's memory without bound.
		// A NACK of an unsubscribed type has no state, so it is not held back either.
		c.cfg.Metrics.XDSUpdates.WithLabelValues(unsubscribedLabel, metrics.ResultNACK).Inc()
		c.log.Warn("xDS response of an unsubscribed type rejected (NACK)", "type_url", clip(typ), "version", clip(resp.VersionInfo))
		req.ErrorDetail = &ErrorDetail{Code: int32(codes.InvalidArgument), Message: clip(err.Error())}
		return req, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		repeated = c.nacked[typ] == resp.VersionInfo
		c.nacked[typ] = resp.VersionInfo
		c.cfg.Metrics.XDSUpdates.WithLabelValues(typ, metrics.ResultNACK).Inc()
		c.log.Warn("xDS update rejected (NACK): keeping the last good configuration",
			"type_url", typ, "version", clip(resp.VersionInfo), "kept_version", clip(c.versions[typ]), "reason", clip(err.Error()))
		req.VersionInfo = c.versions[typ]
		req.ErrorDetail = &ErrorDetail{Code: int32(codes.InvalidArgument), Message: clip(err.Error())}
		return req, repeated
	}
	delete(c.nacked, typ)
	c.versions[typ] = resp.VersionInfo
	c.cfg.Metrics.XDSUpdates.WithLabelValues(typ, metrics.ResultACK).Inc()
	c.log.Info("xDS update applied (ACK)", "type_url", typ, "version", clip(resp.VersionInfo), "resources", len(resp.Resources))
	req.VersionInfo = resp.VersionInfo
	return req, false
}

// maxDetail bounds the text of a NACK's error_detail and of the log lines about a response:
// they quote the control plane's text (names, versions, type URLs), which may be as large as
// the response.
const maxDetail = 1 << 10

// clip returns s cut to maxDetail bytes at a rune boundary, saying how much was cut.
func clip(s string) string {
	if len(s) <= maxDetail {
		return s
	}
	// Back to the start of the rune across the bound; at most UTFMax-1 bytes, so that bytes
	// that are not UTF-8 (no rune start at all) do not take the whole text away.
	cut := maxDetail
	for i := 0; i < utf8.UTFMax-1 && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	return fmt.Sprintf("%s... (%d more bytes)", s[:cut], len(s)-cut)
}
