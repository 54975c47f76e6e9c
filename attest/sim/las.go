package sim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

const (
	// DefaultLASAddr is where a LAS listens and a Client connects when no address is given.
	DefaultLASAddr = "127.0.0.1:18766"
	// LASAddrEnv names the environment variable that gives the LAS address to launchers and
	// sidecars, in a pod as in a process ("unix:/run/attestmesh/las.sock" or "host:port").
	LASAddrEnv = "ATTESTMESH_LAS_ADDR"

	unixPrefix = "unix:"

	// maxRequestBody bounds a quote request; a valid one is under 400 bytes.
	maxRequestBody = 4 << 10
	// shutdownTimeout bounds how long Run drains requests once its context is done.
	shutdownTimeout = 5 * time.Second
)

// ResolveLASAddr returns the LAS address to use: flagValue if set, else $ATTESTMESH_LAS_ADDR,
// else DefaultLASAddr.
func ResolveLASAddr(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := os.Getenv(LASAddrEnv); v != "" {
		return v
	}
	return DefaultLASAddr
}

// splitAddr turns a LAS address into a network and an address for net.Dial and net.Listen.
func splitAddr(addr string) (network, address string, err error) {
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		if path == "" {
			return "", "", fmt.Errorf("sim: LAS address %q: empty socket path", addr)
		}
		return "unix", path, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("sim: LAS address %q: want host:port or unix:/path: %w", addr, err)
	}
	return "tcp", addr, nil
}

// LASConfig configures a LAS.
type LASConfig struct {
	// Platform signs the quotes. Required.
	Platform *Platform
	// Logger receives one line per request served or refused; nil discards.
	Logger *slog.Logger
	// Addr is "host:port" (loopback by default: DefaultLASAddr when empty) or "unix:/path".
	Addr string
	// Now dates the collateral; nil means time.Now.
	Now func() time.Time
}

// LAS is the simulated local attestation service: an HTTP/JSON server through which a
// workload asks the node's simulated platform for a quote. It signs whatever it is asked to
// (see the package documentation). Its methods are safe for concurrent use.
type LAS struct {
	platform *Platform
	log      *slog.Logger
	now      func() time.Time
	ln       net.Listener
	addr     string
	srv      *http.Server
	closed   sync.Once
	closeErr error
}

// NewLAS validates cfg and binds the listener, so that Addr is known and a busy address fails
// here; ctx bounds the bind only. Call Run to serve, or Close to release the listener without
// serving. For a Unix socket, a stale socket file at the path is replaced; any other file there
// is an error.
func NewLAS(ctx context.Context, cfg LASConfig) (*LAS, error) {
	if cfg.Platform == nil {
		return nil, errors.New("sim: LAS: no platform configured")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("subsystem", "las", "tee", "simulation")
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultLASAddr
	}
	network, address, err := splitAddr(addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := removeStaleSocket(address); err != nil {
			return nil, err
		}
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("sim: LAS listen on %s: %w", addr, err)
	}
	l := &LAS{platform: cfg.Platform, log: log, now: now, ln: ln}
	if network == "unix" {
		l.addr = unixPrefix + address
	} else {
		l.addr = ln.Addr().String()
		if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
			log.Warn("LAS listens beyond loopback: anyone who reaches it gets simulated quotes for any measurement", "addr", l.addr)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/quote", l.handleQuote)
	mux.HandleFunc("GET /v1/collateral", l.handleCollateral)
	mux.HandleFunc("GET /v1/root", l.handleRoot)
	l.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return l, nil
}

func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sim: LAS socket %s: %w", path, err)
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("sim: LAS socket %s: a file that is not a socket is in the way", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("sim: LAS socket %s: remove stale socket: %w", path, err)
	}
	return nil
}

// Addr returns the address the LAS listens on, in the form Client and ResolveLASAddr take:
// "127.0.0.1:PORT" (the real port when the configured one was 0) or "unix:/path".
func (l *LAS) Addr() string { return l.addr }

// Run serves until ctx is done, then drains open requests for at most five seconds. It
// returns nil after a clean stop. Run may be called once.
func (l *LAS) Run(ctx context.Context) error {
	l.log.Info("LAS serving simulated quotes", "addr", l.addr)
	errc := make(chan error, 1)
	go func() { errc <- l.srv.Serve(l.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("sim: LAS serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := l.srv.Shutdown(sctx)
	if serr := <-errc; err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("sim: LAS shutdown: %w", err)
	}
	l.log.Info("LAS stopped", "addr", l.addr)
	return nil
}

// Close stops serving at once and releases the listener (for a LAS that Run never served, or
// to abort). It is idempotent.
func (l *LAS) Close() error {
	l.closed.Do(func() {
		err := l.srv.Close()
		if cerr := l.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
		if err != nil {
			l.closeErr = fmt.Errorf("sim: LAS close: %w", err)
		}
	})
	return l.closeErr
}

// quoteRequest is the body of POST /v1/quote.
type quoteRequest struct {
	MREnclave  string `json:"mrenclave"`
	MRSigner   string `json:"mrsigner"`
	ISVProdID  uint16 `json:"isvprodid"`
	ISVSVN     uint16 `json:"isvsvn"`
	Debug      bool   `json:"debug"`
	ReportData string `json:"reportdata"`
}

type quoteResponse struct {
	Quote string `json:"quote"` // standard base64
}

type collateralResponse struct {
	TCBInfo      string `json:"tcb_info"`
	QEIdentity   string `json:"qe_identity"`
	TCBSignChain string `json:"tcb_sign_chain"`
	RootCACRL    []byte `json:"root_ca_crl,omitempty"` // DER, base64 in JSON
	PCKCRL       []byte `json:"pck_crl,omitempty"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// requestError is a refusal of the caller's request (HTTP 400).
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

func badRequest(format string, args ...any) error {
	return &requestError{err: fmt.Errorf("sim: quote request: "+format, args...)}
}

// errUnsupportedMediaType refuses a request body that is not JSON (HTTP 415).
var errUnsupportedMediaType = errors.New("sim: quote request: Content-Type must be application/json")

// statusOf maps an error of a handler to its HTTP status; it is the only such mapping.
func statusOf(err error) int {
	var tooLarge *http.MaxBytesError
	var bad *requestError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errUnsupportedMediaType):
		return http.StatusUnsupportedMediaType
	case errors.As(err, &bad):
		return http.StatusBadRequest
	default:
		return http.StatusInternalServerError
	}
}

func hexField(name, s string, dst []byte) error {
	if s == "" {
		return badRequest("%s missing: want %d hex digits", name, 2*len(dst))
	}
	if len(s) != 2*len(dst) {
		return badRequest("%s has %d hex digits, want %d", name, len(s), 2*len(dst))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return badRequest("%s: %w", name, err)
	}
	return nil
}

// decodeQuoteRequest reads one JSON quote request from r, strictly: unknown fields, trailing
// data and missing or malformed measurements are refused.
func decodeQuoteRequest(r io.Reader) (Report, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var req quoteRequest
	if err := dec.Decode(&req); err != nil {
		return Report{}, badRequest("%w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return Report{}, badRequest("after the JSON object: %w", err)
		}
		return Report{}, badRequest("data after the JSON object")
	}
	var rep Report
	if err := hexField("mrenclave", req.MREnclave, rep.MREnclave[:]); err != nil {
		return Report{}, err
	}
	if err := hexField("mrsigner", req.MRSigner, rep.MRSigner[:]); err != nil {
		return Report{}, err
	}
	if err := hexField("reportdata", req.ReportData, rep.ReportData[:]); err != nil {
		return Report{}, err
	}
	rep.ISVProdID, rep.ISVSVN, rep.Debug = req.ISVProdID, req.ISVSVN, req.Debug
	return rep, nil
}

func encodeQuoteRequest(r Report) quoteRequest {
	return quoteRequest{
		MREnclave:  hex.EncodeToString(r.MREnclave[:]),
		MRSigner:   hex.EncodeToString(r.MRSigner[:]),
		ISVProdID:  r.ISVProdID,
		ISVSVN:     r.ISVSVN,
		Debug:      r.Debug,
		ReportData: hex.EncodeToString(r.ReportData[:]),
	}
}

func (l *LAS) handleQuote(w http.ResponseWriter, r *http.Request) {
	rep, err := func() (Report, error) {
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			return Report{}, errUnsupportedMediaType
		}
		return decodeQuoteRequest(http.MaxBytesReader(w, r.Body, maxRequestBody))
	}()
	if err != nil {
		l.refuse(w, r, err)
		return
	}
	quote, err := l.platform.Quote(rep)
	if err != nil {
		l.refuse(w, r, err)
		return
	}
	l.log.Info("simulated quote issued", "remote", r.RemoteAddr,
		"mrenclave", hex.EncodeToString(rep.MREnclave[:]), "mrsigner", hex.EncodeToString(rep.MRSigner[:]),
		"isvprodid", rep.ISVProdID, "isvsvn", rep.ISVSVN, "debug", rep.Debug)
	l.writeJSON(w, http.StatusOK, quoteResponse{Quote: base64.StdEncoding.EncodeToString(quote)})
}

func (l *LAS) handleCollateral(w http.ResponseWriter, r *http.Request) {
	c, err := l.platform.Collateral(l.now())
	if err != nil {
		l.refuse(w, r, err)
		return
	}
	l.log.Debug("collateral served", "remote", r.RemoteAddr)
	l.writeJSON(w, http.StatusOK, collateralResponse{
		TCBInfo: string(c.TCBInfo), QEIdentity: string(c.QEIdentity), TCBSignChain: string(c.TCBSignChain),
		RootCACRL: c.RootCACRL, PCKCRL: c.PCKCRL,
	})
}

func (l *LAS) handleRoot(w http.ResponseWriter, r *http.Request) {
	l.log.Debug("root served", "remote", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/x-pem-file")
	if err := pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: l.platform.Root().Raw}); err != nil {
		l.log.Warn("write root", "remote", r.RemoteAddr, "error", err)
	}
}

func (l *LAS) refuse(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	msg := err.Error()
	if code == http.StatusRequestEntityTooLarge {
		msg = fmt.Sprintf("sim: quote request: body larger than %d bytes", maxRequestBody)
	}
	l.log.Warn("request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "status", code, "reason", msg)
	l.writeJSON(w, code, errorResponse{Error: msg})
}

func (l *LAS) writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		l.log.Error("encode response", "error", err)
		http.Error(w, "sim: encode response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if _, err := w.Write(buf.Bytes()); err != nil {
		l.log.Debug("write response", "error", err)
	}
}
