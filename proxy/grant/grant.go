// Package grant carries a sidecar grant from an attested app's launcher to the sidecar beside
// it. The control plane gives every attested app a single-use, short-lived grant; a sidecar
// gets its service's SVID only by presenting one (with a quote of an accepted sidecar
// measurement). The launcher serves grants on an abstract Unix socket named after the config
// ID: such a socket belongs to the network namespace it was made in, so only processes in the
// same pod (or `attestmesh up` namespace) can reach it. The sidecar asks whenever it needs a
// grant (its first SVID, after a restart, after its SVID lapsed): the launcher hands over the
// grant of its attestation the first time and attests again for each later one.
//
// The exchange is one line each way: the sidecar sends "GRANT <config ID>\n", the launcher
// answers "OK <base64 grant>\n" or "ERR <message>\n".
package grant

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Limits of the exchange.
const (
	maxLine = 4096
	ioWait  = 10 * time.Second
	// DefaultMinInterval is the least time between two attestations a launcher makes for
	// grants: however often it is asked, it attests at most this often.
	DefaultMinInterval = 2 * time.Second
)

// SocketName returns the abstract socket name of a config ID's grants:
// "@attestmesh/grant/" followed by the first 16 bytes of SHA-256(config ID) in hex.
func SocketName(configID string) string {
	sum := sha256.Sum256([]byte(configID))
	return "@attestmesh/grant/" + hex.EncodeToString(sum[:16])
}

// ErrNoLauncher means nobody serves grants for the config ID in this network namespace (yet):
// the app's launcher has not attested, or runs elsewhere.
var ErrNoLauncher = errors.New("grant: no launcher serves grants for this config ID in this network namespace")

func checkOS() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("grant: abstract Unix sockets need Linux, not %s", runtime.GOOS)
	}
	return nil
}

// Fetch attests the app again and returns a new grant.
type Fetch func(ctx context.Context) ([]byte, error)

// Server is the launcher's side. Initial is the grant of the launcher's attestation, handed
// over first; Fetch gets each later one, at most once per MinInterval.
type Server struct {
	ConfigID    string
	Initial     []byte
	Fetch       Fetch
	MinInterval time.Duration
	Logger      *slog.Logger
	// OnListen, when set, is called once the socket is made.
	OnListen func(socket string)

	mu      sync.Mutex
	initial []byte
	last    time.Time
}

// Run serves until ctx is done. It fails at once when the socket cannot be made (another
// launcher of the same config ID in this namespace).
func (s *Server) Run(ctx context.Context) error {
	if err := checkOS(); err != nil {
		return err
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if s.MinInterval <= 0 {
		s.MinInterval = DefaultMinInterval
	}
	s.mu.Lock()
	s.initial = s.Initial
	s.mu.Unlock()
	name := SocketName(s.ConfigID)
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", name)
	if err != nil {
		return fmt.Errorf("grant: serve %s: %w", name, err)
	}
	log.Info("serving the sidecar grant", "socket", name)
	if s.OnListen != nil {
		s.OnListen(name)
	}
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("grant: accept: %w", err)
		}
		wg.Go(func() {
			defer c.Close()
			if err := s.serve(ctx, c); err != nil {
				log.Warn("sidecar grant not handed over", "error", err.Error())
			}
		})
	}
}

func (s *Server) serve(ctx context.Context, c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(ioWait + s.MinInterval + 30*time.Second))
	line, err := bufio.NewReaderSize(c, maxLine).ReadString('\n')
	if err != nil {
		return fmt.Errorf("grant: read request: %w", err)
	}
	reply := func(format string, args ...any) error {
		_, err := fmt.Fprintf(c, format, args...)
		return err
	}
	id, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "GRANT ")
	if !ok || id != s.ConfigID {
		_ = reply("ERR this launcher serves %s\n", s.ConfigID)
		return fmt.Errorf("grant: request for %q", truncate(id, 80))
	}
	g, err := s.next(ctx)
	if err != nil {
		_ = reply("ERR %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return err
	}
	return reply("OK %s\n", base64.StdEncoding.EncodeToString(g))
}

// next returns the initial grant once, then a fresh one per request, attesting at most once
// per MinInterval.
func (s *Server) next(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.initial; g != nil {
		s.initial = nil
		return g, nil
	}
	if s.Fetch == nil {
		return nil, errors.New("grant: the launcher's grant was used and it cannot attest again")
	}
	if wait := time.Until(s.last.Add(s.MinInterval)); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	s.last = time.Now()
	return s.Fetch(ctx)
}

// Get is the sidecar's side: it asks the launcher of configID in this network namespace for a
// grant. It returns an error wrapping ErrNoLauncher when nobody serves one.
func Get(ctx context.Context, configID string) ([]byte, error) {
	if err := checkOS(); err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", SocketName(configID))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("grant: %w", ctx.Err())
		}
		return nil, fmt.Errorf("%w (%s): %w", ErrNoLauncher, SocketName(configID), err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(time.Minute))
	}
	if _, err := fmt.Fprintf(c, "GRANT %s\n", configID); err != nil {
		return nil, fmt.Errorf("grant: ask: %w", err)
	}
	line, err := bufio.NewReaderSize(c, maxLine).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("grant: read answer: %w", err)
	}
	line = strings.TrimSuffix(line, "\n")
	if msg, ok := strings.CutPrefix(line, "ERR "); ok {
		return nil, fmt.Errorf("grant: the launcher refused: %s", msg)
	}
	b64, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return nil, fmt.Errorf("grant: unexpected answer %q", truncate(line, 40))
	}
	g, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("grant: answer: %w", err)
	}
	return g, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Wait asks for a grant every poll until the launcher of configID answers, the answer is a
// refusal, or ctx is done. waiting, when set, is called once if the launcher is not there at
// first.
func Wait(ctx context.Context, configID string, poll time.Duration, waiting func(socket string)) ([]byte, error) {
	for first := true; ; first = false {
		g, err := Get(ctx, configID)
		if !errors.Is(err, ErrNoLauncher) {
			return g, err
		}
		if first && waiting != nil {
			waiting(SocketName(configID))
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (%s): %w", ErrNoLauncher, SocketName(configID), ctx.Err())
		case <-t.C:
		}
	}
}
