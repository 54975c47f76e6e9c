// Package local runs a whole mesh on one machine (`attestmesh up`): the control plane with its
// simulated platform, then every service of the mesh file under `attestmesh launch` with its
// sidecar (`attestmesh proxy`), each service in its own network namespace on a private bridge.
// The apps listen on their own loopback; they reach each other only through their sidecars'
// attested mTLS tunnels across the bridge.
package local

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/attestmesh/attestmesh/attest/measure"
	"github.com/attestmesh/attestmesh/controlplane"
	"github.com/attestmesh/attestmesh/controlplane/ca"
	"github.com/attestmesh/attestmesh/controlplane/mesh"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/session"
	"github.com/attestmesh/attestmesh/controlplane/store"
)

// Default ports of the control plane (the README's and the chart's), and of the sidecars' admin.
const (
	mgmtPort    = 8081
	attestPort  = 18765
	xdsPort     = 18000
	metricsPort = 9102
	lasPort     = 18766
	adminPort   = 15000
)

// Config configures Up.
type Config struct {
	// MeshFile is the mesh to run.
	MeshFile string
	// Binary is the attestmesh executable; empty means this executable.
	Binary string
	// SidecarBinary runs the sidecars and the launchers, and the control plane accepts
	// sidecars with its measurement. Empty means controlplane.SidecarName beside Binary when it is there
	// (make build makes both), else Binary itself.
	SidecarBinary string
	// StateDir holds the run's state (encrypted store, CA, client identity, logs, encrypted
	// code); empty means a new temporary directory, removed at the end.
	StateDir string
	// Subnet is the private bridge's network; the host takes its first address.
	Subnet netip.Prefix
	// Bridge names the bridge interface (at most 15 bytes).
	Bridge string
	// Out receives the progress lines.
	Out io.Writer
	// Logger receives the control plane's structured log.
	Logger *slog.Logger
	// Ready, when set, is called once everything is up.
	Ready func(*Info)
	// StartTimeout bounds how long each step may take; zero means 60 s.
	StartTimeout time.Duration
	// SidecarArgs are extra flags for every sidecar (`attestmesh proxy`).
	SidecarArgs []string
}

// Info describes a running mesh.
type Info struct {
	StateDir     string
	CAFile       string // the control plane's CA bundle
	ControlPlane controlplane.Addrs
	Host         netip.Addr
	Services     map[string]*ServiceInfo
	// ExportedCAs maps "session/secret" to the file holding an export_public certificate.
	ExportedCAs map[string]string
	// Client is a management API client with this run's identity.
	Client *mgmtapi.Client
}

// ServiceInfo describes one running service.
type ServiceInfo struct {
	Name      string
	Namespace string
	Address   netip.Addr
	AdminAddr string // the sidecar's admin endpoint: /ready, /config_dump, /metrics
	Ports     []mesh.Port
	// SidecarPID and LauncherPID are the processes of the sidecar and of the launcher (the
	// app runs as its child); `ip netns exec` runs them without a fork of its own.
	SidecarPID, LauncherPID int
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// Up runs the mesh until ctx is cancelled, then stops everything it started and removes the
// namespaces, the bridge and (unless StateDir was given) the state directory.
func Up(ctx context.Context, cfg Config) (err error) {
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	step := func(what, format string, args ...any) {
		fmt.Fprintf(out, "  %-14s %s\n", what, fmt.Sprintf(format, args...))
	}
	timeout := cfg.StartTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	if err := CanIsolate(); err != nil {
		return fmt.Errorf("local: %w; attestmesh up runs each service in its own network namespace (run it as root, as CI does)", err)
	}
	m, err := mesh.Load(cfg.MeshFile)
	if err != nil {
		return err
	}
	if cfg.Binary == "" {
		if cfg.Binary, err = os.Executable(); err != nil {
			return fmt.Errorf("local: %w", err)
		}
	}
	if cfg.SidecarBinary == "" {
		cfg.SidecarBinary = controlplane.DefaultSidecarBinary(cfg.Binary)
	}
	sidecarMR, err := measure.File(cfg.SidecarBinary)
	if err != nil {
		return fmt.Errorf("local: the sidecar binary: %w", err)
	}
	step("sidecars", "run %s (mrenclave %s)", cfg.SidecarBinary, sidecarMR.Hex())
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = netip.MustParsePrefix("10.231.0.0/24")
	}
	if cfg.Bridge == "" {
		cfg.Bridge = "amup0"
	}
	if cfg.StateDir == "" {
		dir, err := os.MkdirTemp("", "attestmesh-up-")
		if err != nil {
			return fmt.Errorf("local: %w", err)
		}
		cfg.StateDir = dir
		defer os.RemoveAll(dir)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("local: %w", err)
	}
	// The store key lives in memory for one run only: a store left by an earlier run cannot
	// be opened again, so it is discarded.
	if err := os.RemoveAll(filepath.Join(cfg.StateDir, "data")); err != nil {
		return fmt.Errorf("local: %w", err)
	}
	fmt.Fprintf(out, "attestmesh up: %s (%d services), state in %s\n", m.Name, len(m.Services), cfg.StateDir)

	vars, err := m.Resolve()
	if err != nil {
		return err
	}
	if err := m.EncryptFSPF(vars, filepath.Join(cfg.StateDir, "fspf"), nil); err != nil {
		return err
	}
	for _, s := range m.Services {
		if s.FSPF != nil {
			step(s.Name, "code encrypted (fspf) into %s", vars[mesh.FSPFVarPrefix(s.Name)+"_FSPF_PATH"])
		}
	}

	netw, err := NewNetwork(ctx, cfg.Bridge, cfg.Subnet)
	if err != nil {
		return err
	}
	defer netw.Close(ctx)
	info := &Info{StateDir: cfg.StateDir, Host: netw.Host, Services: map[string]*ServiceInfo{}, ExportedCAs: map[string]string{}}
	addr := netw.Host
	for i, s := range m.Services {
		addr = addr.Next()
		// Named after the bridge, so that two runs on different bridges never touch each
		// other's namespaces (AddNamespace replaces a leftover of the same name).
		ns := fmt.Sprintf("%s-%s-%d", cfg.Bridge, s.Name, i)
		if err := netw.AddNamespace(ctx, ns, addr); err != nil {
			return err
		}
		info.Services[s.Name] = &ServiceInfo{Name: s.Name, Namespace: ns, Address: addr, Ports: s.Ports,
			AdminAddr: net.JoinHostPort(addr.String(), strconv.Itoa(adminPort))}
	}
	step("network", "bridge %s %s (host %s), one network namespace per service", cfg.Bridge, netw.Prefix, netw.Host)

	// The control plane, in this process, on the bridge address.
	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	var key store.Key
	if _, err := rand.Read(key[:]); err != nil {
		return fmt.Errorf("local: store key: %w", err)
	}
	host := netw.Host.String()
	hp := func(port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
	ready := make(chan controlplane.Addrs, 1)
	cpDone := make(chan error, 1)
	logger := cfg.Logger
	if logger == nil {
		f, err := os.OpenFile(filepath.Join(cfg.StateDir, "controlplane.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("local: %w", err)
		}
		defer f.Close()
		logger = slog.New(slog.NewJSONHandler(f, nil))
	}
	go func() {
		cpDone <- controlplane.Run(runCtx, controlplane.Config{
			DataDir: filepath.Join(cfg.StateDir, "data"), StoreKey: &key, TrustDomain: "attestmesh.local",
			MgmtAddr: hp(mgmtPort), AttestAddr: hp(attestPort), XDSAddr: hp(xdsPort), MetricsAddr: hp(metricsPort),
			AdvertiseHost: host, Simulation: true, LASAddr: hp(lasPort), SidecarBinary: cfg.SidecarBinary,
			Logger: logger, Ready: func(a controlplane.Addrs) { ready <- a },
		})
	}()
	select {
	case a := <-ready:
		info.ControlPlane = a
	case err := <-cpDone:
		return fmt.Errorf("local: control plane: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() {
		stopAll()
		if cpErr := <-cpDone; cpErr != nil && err == nil {
			err = cpErr
		}
	}()
	info.CAFile = filepath.Join(cfg.StateDir, "ca.pem")
	if err := os.WriteFile(info.CAFile, info.ControlPlane.BundlePEM, 0o600); err != nil {
		return fmt.Errorf("local: %w", err)
	}
	step("control plane", "management https://%s, attestation %s, xDS %s, metrics http://%s/metrics, LAS %s (simulation)",
		info.ControlPlane.Mgmt, info.ControlPlane.Attest, info.ControlPlane.XDS, info.ControlPlane.Metrics, info.ControlPlane.LAS)

	// Sessions and the mesh registration, over the management API like any client.
	client, err := newClient(info, cfg.StateDir)
	if err != nil {
		return err
	}
	info.Client = client
	if _, err := m.Apply(ctx, client, vars, prefixWriter{out, "  sessions       "}); err != nil {
		return err
	}
	raw, err := os.ReadFile(cfg.MeshFile)
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	reg := mgmtapi.Registration{Mesh: string(raw), Endpoints: map[string]string{}}
	for name, s := range info.Services {
		reg.Endpoints[name] = s.Address.String()
	}
	doc, err := reg.Marshal()
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	if err := client.PutMesh(ctx, m.Name, doc); err != nil {
		return fmt.Errorf("local: register mesh: %w", err)
	}
	step("mesh", "registered: %d services, endpoints on the bridge", len(reg.Endpoints))

	// The services, in mesh order: the sidecar and the app under the launcher, in the service's
	// network namespace. The launcher attests the app and hands the sidecar the grant that lets
	// it attest as the service's sidecar; then the sidecar's listeners warm, and the app serves.
	var procs []*proc
	defer func() { stopProcs(procs) }()
	common := []string{"--attest-addr", info.ControlPlane.Attest, "--ca-file", info.CAFile, "--las-addr", info.ControlPlane.LAS}
	for _, s := range m.Services {
		si := info.Services[s.Name]
		sidecar, err := start(cfg.StateDir, s.Name+"-sidecar", si.Namespace, cfg.SidecarBinary,
			slices.Concat([]string{"proxy", "--config-id", s.ConfigID, "--admin-addr", si.AdminAddr}, common, cfg.SidecarArgs)...)
		if err != nil {
			return err
		}
		procs = append(procs, sidecar)
		app, err := start(cfg.StateDir, s.Name+"-app", si.Namespace, cfg.SidecarBinary,
			append(append([]string{"launch", "--config-id", s.ConfigID}, common...), "--", s.Binary)...)
		if err != nil {
			return err
		}
		procs = append(procs, app)
		si.SidecarPID, si.LauncherPID = sidecar.cmd.Process.Pid, app.cmd.Process.Pid
		id, err := waitSidecar(ctx, sidecar, si.AdminAddr, timeout)
		if err != nil {
			if app.exited() {
				return fmt.Errorf("local: %s: %w (log: %s)%s", app.name, app.exitError(), app.log, tail(app.log))
			}
			return err
		}
		step(s.Name, "sidecar attested with the app's grant: %s; listeners warm (admin http://%s)", id, si.AdminAddr)
		if err := waitApp(ctx, app, si, timeout); err != nil {
			return err
		}
		step(s.Name, "app attested and running: %s (pid %d)", s.Binary, app.cmd.Process.Pid)
	}

	// What the user needs: the exposed endpoints and the exported CAs to trust.
	for _, s := range m.Services {
		for _, port := range s.Ports {
			if port.Expose {
				step(s.Name, "exposed at %s", net.JoinHostPort(info.Services[s.Name].Address.String(), strconv.Itoa(int(port.Port))))
			}
		}
	}
	if err := exportPublic(ctx, m, vars, info, step); err != nil {
		return err
	}
	fmt.Fprintln(out, "Ready. Ctrl-C stops everything.")
	if cfg.Ready != nil {
		cfg.Ready(info)
	}

	// Run until cancelled or until a process dies.
	dead := make(chan *proc, len(procs))
	for _, p := range procs {
		go func() { <-p.done; dead <- p }()
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "attestmesh up: stopping")
		return nil
	case p := <-dead:
		return fmt.Errorf("local: %s: %w (log: %s)%s", p.name, p.exitError(), p.log, tail(p.log))
	case err := <-cpDone:
		cpDone <- err
		return fmt.Errorf("local: control plane stopped: %w", err)
	}
}

func newClient(info *Info, stateDir string) (*mgmtapi.Client, error) {
	pool, err := ca.PoolFromPEM(info.ControlPlane.BundlePEM)
	if err != nil {
		return nil, err
	}
	id, err := mgmtapi.LoadOrCreateIdentity(filepath.Join(stateDir, "identity"))
	if err != nil {
		return nil, err
	}
	return mgmtapi.NewClient(mgmtapi.ClientConfig{URL: "https://" + info.ControlPlane.Mgmt, Roots: pool, Identity: id})
}

// exportPublic writes every export_public certificate of the mesh's sessions to the state dir.
func exportPublic(ctx context.Context, m *mesh.Mesh, vars map[string]string, info *Info, step func(string, string, ...any)) error {
	docs, err := m.Documents(vars)
	if err != nil {
		return err
	}
	for _, doc := range docs {
		s, err := session.Parse(doc)
		if err != nil {
			return err
		}
		for _, sec := range s.Secrets {
			if !sec.ExportPublic {
				continue
			}
			pem, err := info.Client.Public(ctx, s.Name, sec.Name)
			if err != nil {
				return fmt.Errorf("local: public value %s/%s: %w", s.Name, sec.Name, err)
			}
			file := filepath.Join(info.StateDir, strings.ReplaceAll(s.Name, "/", "_")+"_"+sec.Name+".pem")
			if err := os.WriteFile(file, pem, 0o600); err != nil {
				return fmt.Errorf("local: %w", err)
			}
			info.ExportedCAs[s.Name+"/"+sec.Name] = file
			step("trust", "%s/%s (export_public) written to %s", s.Name, sec.Name, file)
		}
	}
	return nil
}

// start runs binary with args inside namespace ns, its output in <stateDir>/<name>.log.
func start(stateDir, name, ns, binary string, args ...string) (*proc, error) {
	logPath := filepath.Join(stateDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, binary}, args...)...) //nolint:noctx // stopped by stopProcs with SIGTERM, then SIGKILL
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	// No Pdeathsig: it fires when the forking OS thread exits, not the process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("local: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how a finished process ended.
func (p *proc) exitError() error {
	if p.err == nil {
		return errors.New("exited with status 0")
	}
	return fmt.Errorf("exited: %w", p.err)
}

// stopProcs stops the processes in reverse order: SIGTERM, then SIGKILL after 10 s.
func stopProcs(procs []*proc) {
	var wg sync.WaitGroup
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		select {
		case <-p.done:
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		wg.Go(func() {
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
				<-p.done
			}
		})
	}
	wg.Wait()
}

// waitSidecar polls the sidecar's /ready and returns its SPIFFE ID.
func waitSidecar(ctx context.Context, p *proc, admin string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/ready", nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return sidecarID(ctx, hc, admin), nil
			}
			err = fmt.Errorf("not ready: %s", strings.TrimSpace(string(body)))
		}
		if e := waitStep(ctx, p, deadline); e != nil {
			return "", fmt.Errorf("local: %s: %w (last: %w)%s", p.name, e, err, tail(p.log))
		}
	}
}

func sidecarID(ctx context.Context, hc *http.Client, admin string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/config_dump", nil)
	if err != nil {
		return "?"
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "?"
	}
	defer resp.Body.Close()
	var dump struct {
		Node struct {
			ID string `json:"id"`
		} `json:"node"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&dump) != nil || dump.Node.ID == "" {
		return "?"
	}
	return dump.Node.ID
}

// waitApp waits until the app accepts connections on each of its ports, on its own loopback.
func waitApp(ctx context.Context, p *proc, si *ServiceInfo, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, port := range si.Ports {
		for {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := DialIn(dctx, si.Namespace, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port.Port))))
			cancel()
			if err == nil {
				_ = c.Close()
				break
			}
			if e := waitStep(ctx, p, deadline); e != nil {
				return fmt.Errorf("local: %s: %w (last: %w)%s", p.name, e, err, tail(p.log))
			}
		}
	}
	return nil
}

func waitStep(ctx context.Context, p *proc, deadline time.Time) error {
	select {
	case <-p.done:
		return p.exitError()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(200 * time.Millisecond):
	}
	if time.Now().After(deadline) {
		return errors.New("timed out")
	}
	return nil
}

// tail returns the last lines of a log file, indented, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return "\n    " + strings.Join(lines, "\n    ")
}

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+line); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
