package launch

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/proxy/grant"
)

// Request is what the launcher sends to the control plane: the service it runs as, the
// measurement of the binary, and the key that the attestation evidence binds (the Attestor builds
// the CSR from it; the key never leaves the workload).
type Request struct {
	ConfigID  string
	MREnclave [32]byte
	Key       crypto.Signer
}

// Config is the service configuration that the control plane renders for an attested workload.
type Config struct {
	// Argv is the policy's command; Argv[0] must name the measured binary.
	Argv []string
	// Env is the complete environment of the application.
	Env map[string]string
	// Dir is the working directory; "/" when empty.
	Dir string
	// Files maps absolute paths to the contents of the injection files.
	Files map[string][]byte
	// FSPF is the protected file system, when the service has one.
	FSPF *FSPF
	// SidecarGrant is the grant for the sidecar beside the app (see proxy/grant): Run serves
	// it, and fresh ones, to the sidecar in the same network namespace while the app runs.
	SidecarGrant []byte
}

// wipe overwrites what can be overwritten of a configuration that is not used (best effort).
func (c *Config) wipe() {
	for _, b := range c.Files {
		clear(b)
	}
	clear(c.SidecarGrant)
}

// FSPF locates an encrypted tree and holds what decrypts it. Path is the directory of the
// encrypted tree: the application reads the plaintext at the same path.
type FSPF struct {
	Path string
	Key  string
	Tag  string
}

// Attestor attests the workload and returns its configuration. Implementations are called once
// per launch, and again, never concurrently, for each grant the sidecar beside the app asks for;
// they need not be safe for concurrent use. A refusal is returned as an error that says why; it
// is shown to the operator as is. The launcher owns the returned Config: it overwrites the
// injection file contents once the application has exited (or at once, for a configuration it
// asked for only to get a grant).
type Attestor interface {
	Attest(ctx context.Context, req Request) (*Config, error)
}

// AttestorFunc adapts a function to an Attestor.
type AttestorFunc func(ctx context.Context, req Request) (*Config, error)

// Attest calls f.
func (f AttestorFunc) Attest(ctx context.Context, req Request) (*Config, error) { return f(ctx, req) }

// Isolation selects how the injected files are hidden from the rest of the host.
type Isolation int

const (
	// IsolationAuto uses a private mount namespace when the process may create one, otherwise a
	// user and mount namespace; it refuses when neither works and there is something to inject.
	IsolationAuto Isolation = iota
	// IsolationMountNS requires a private mount namespace (CAP_SYS_ADMIN).
	IsolationMountNS
	// IsolationUserNS requires an unprivileged user namespace with a mount namespace.
	IsolationUserNS
	// isolationNone runs without a namespace; chosen only by IsolationAuto when there is nothing
	// to inject.
	isolationNone
)

// String names the isolation in logs.
func (i Isolation) String() string {
	switch i {
	case IsolationAuto:
		return "auto"
	case IsolationMountNS:
		return "mount-namespace"
	case IsolationUserNS:
		return "user+mount-namespace"
	case isolationNone:
		return "none"
	default:
		return fmt.Sprintf("isolation(%d)", int(i))
	}
}

// Defaults for Options.
const (
	DefaultTmpfsSize   int64 = 64 << 20
	DefaultStopTimeout       = 10 * time.Second
)

// ForwardedSignals are the signals that Run passes on to the application by default.
func ForwardedSignals() []os.Signal {
	return []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}
}

// Options configures one launch.
type Options struct {
	// ConfigID is SESSION/SERVICE.
	ConfigID string
	// Binary is the program to measure and run, a path or a name looked up in the launcher's PATH.
	Binary string
	// Attestor attests and returns the configuration; required.
	Attestor Attestor
	// Key is the workload key bound by the attestation; a fresh ECDSA P-256 key when nil.
	Key crypto.Signer
	// Logger receives the launcher's logs (never secret contents); slog.Default when nil.
	Logger *slog.Logger
	// Stdin, Stdout and Stderr are the application's; os.Stdin, os.Stdout and os.Stderr when nil.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Isolation selects the namespace; IsolationAuto by default.
	Isolation Isolation
	// TmpfsSize limits each tmpfs mount; DefaultTmpfsSize when zero.
	TmpfsSize int64
	// StopTimeout is how long the application may take to exit after SIGTERM when ctx is
	// cancelled, before it is killed; DefaultStopTimeout when zero.
	StopTimeout time.Duration
	// Signals, when set, replaces signal.Notify(ForwardedSignals()...) as the source of the
	// signals forwarded to the application.
	Signals <-chan os.Signal
	// OnStart, when set, is called with the application's PID once it runs.
	OnStart func(pid int)
	// Executable is the stage-2 program; os.Executable() when empty. Its main must call
	// MaybeStage2 first.
	Executable string
	// NoGrants does not serve sidecar grants (for an app that has no sidecar).
	NoGrants bool
}

// Run measures, attests and starts the application, waits for it and returns its exit code
// (128+N when signal N killed it). A non-nil error means the application was refused or could
// not be started or waited for; the code is then -1. Cancelling ctx stops the application:
// SIGTERM, then SIGKILL after StopTimeout.
func Run(ctx context.Context, opts Options) (int, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return -1, err
	}
	log := opts.Logger.With("subsystem", "launch", "config_id", opts.ConfigID)

	binary, err := resolveBinary(opts.Binary)
	if err != nil {
		return -1, err
	}
	m, err := measure.File(binary)
	if err != nil {
		return -1, fmt.Errorf("launch: measuring %q: %w", opts.Binary, err)
	}
	log.Info("measured binary", "binary", binary, "mrenclave", hex.EncodeToString(m[:]))

	cfg, err := opts.Attestor.Attest(ctx, Request{ConfigID: opts.ConfigID, MREnclave: m, Key: opts.Key})
	if err != nil {
		log.Error("attestation refused; the application is not started", "error", err)
		return -1, fmt.Errorf("launch: attestation of %q refused: %w", opts.ConfigID, err)
	}
	if cfg == nil {
		return -1, errors.New("launch: attestor returned no configuration")
	}
	log.Info("attested", "files", len(cfg.Files), "env", len(cfg.Env), "fspf", cfg.FSPF != nil)

	p, err := newPlan(cfg, binary, os.Getenv("PATH"), opts.TmpfsSize)
	if err != nil {
		log.Error("configuration refused; the application is not started", "error", err)
		return -1, err
	}
	if len(cfg.SidecarGrant) > 0 && !opts.NoGrants {
		gctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { serveGrants(gctx, log, opts, m, cfg.SidecarGrant) })
		defer wg.Wait()
		defer stop()
	}
	return start(ctx, log, opts, p)
}

// serveGrants hands the sidecar beside the app its grant, and a fresh one (by attesting again
// with the same key and measurement) whenever it asks again, until ctx is done.
func serveGrants(ctx context.Context, log *slog.Logger, opts Options, m [32]byte, initial []byte) {
	s := &grant.Server{
		ConfigID: opts.ConfigID, Initial: initial, Logger: log,
		Fetch: func(ctx context.Context) ([]byte, error) {
			cfg, err := opts.Attestor.Attest(ctx, Request{ConfigID: opts.ConfigID, MREnclave: m, Key: opts.Key})
			if err != nil {
				return nil, fmt.Errorf("launch: attesting again for a sidecar grant: %w", err)
			}
			g := bytes.Clone(cfg.SidecarGrant)
			cfg.wipe()
			if len(g) == 0 {
				return nil, errors.New("launch: the control plane gave no sidecar grant")
			}
			log.Info("attested again for a fresh sidecar grant")
			return g, nil
		},
	}
	if err := s.Run(ctx); err != nil {
		log.Warn("not serving the sidecar grant: a sidecar beside this app cannot get its identity from it", "error", err.Error())
	}
}

func (o Options) withDefaults() (Options, error) {
	if o.ConfigID == "" {
		return o, errors.New("launch: no config ID (SESSION/SERVICE)")
	}
	if o.Binary == "" {
		return o, errors.New("launch: no binary to launch")
	}
	if o.Attestor == nil {
		return o, errors.New("launch: no attestor")
	}
	if o.Key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return o, fmt.Errorf("launch: generating the workload key: %w", err)
		}
		o.Key = k
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.TmpfsSize == 0 {
		o.TmpfsSize = DefaultTmpfsSize
	}
	if o.TmpfsSize < 0 {
		return o, fmt.Errorf("launch: negative tmpfs size %d", o.TmpfsSize)
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("launch: locating the launcher's own executable for stage 2: %w", err)
		}
		o.Executable = exe
	}
	return o, nil
}

// exitCode turns the state of the exited application into a shell-style exit code.
func exitCode(ps *os.ProcessState, waitErr error) (int, error) {
	if ps == nil {
		return -1, fmt.Errorf("launch: waiting for the application: %w", waitErr)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ps.ExitCode(), nil
}
