package launch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// stage2Arg is the hidden first argument that turns the launcher's own binary into stage 2.
const stage2Arg = "__attestmesh-launch-stage2"

// capSysAdmin is CAP_SYS_ADMIN (linux/capability.h).
const capSysAdmin = 21

// Stage 2's file descriptors: the plan arrives on one, status records leave on the other.
const (
	planFD   = 3
	statusFD = 4
)

// record is one status message from stage 2. Exec is sent right before the exec: end of file
// after it means the application runs; end of file without it means stage 2 died.
type record struct {
	Warn  string `json:"warn,omitempty"`
	Error string `json:"error,omitempty"`
	Exec  bool   `json:"exec,omitempty"`
}

func start(ctx context.Context, log *slog.Logger, opts Options, p *plan) (int, error) {
	defer p.wipe()
	if created := missingDirs(p.Mounts); len(created) > 0 {
		// Runs after the application has exited: the mount points were empty on the host.
		defer removeDirs(log, created)
	}

	sigs := opts.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 16)
		signal.Notify(ch, ForwardedSignals()...)
		defer signal.Stop(ch)
		sigs = ch
	}

	var (
		cmd     *exec.Cmd
		status  *os.File
		mode    Isolation
		errs    []string
		started atomic.Bool
	)
	for _, m := range candidates(opts.Isolation, p.hasSecrets()) {
		c, s, err := spawn(ctx, log, opts, p, m, &started)
		if err == nil {
			cmd, status, mode = c, s, m
			break
		}
		errs = append(errs, fmt.Sprintf("%s: %v", m, err))
	}
	if cmd == nil {
		if opts.Isolation == IsolationAuto && p.hasSecrets() {
			return -1, fmt.Errorf("launch: cannot hide the injected files from the host, refusing to start: "+
				"no private mount namespace could be created (needs CAP_SYS_ADMIN, or unprivileged user namespaces): %s",
				strings.Join(errs, "; "))
		}
		return -1, fmt.Errorf("launch: starting stage 2 with %s", strings.Join(errs, "; "))
	}

	execed, serr := readStatus(log, status)
	_ = status.Close()
	done := make(chan struct{})
	var wg sync.WaitGroup
	if serr == nil && execed {
		started.Store(true)
		log.Info("application started", "pid", cmd.Process.Pid, "isolation", mode.String(), "binary", p.Binary)
		if opts.OnStart != nil {
			opts.OnStart(cmd.Process.Pid)
		}
		wg.Go(func() { forward(log, cmd.Process, sigs, done) })
	}
	werr := cmd.Wait()
	close(done)
	wg.Wait()

	switch {
	case serr != nil:
		log.Error("the application was not started", "error", serr)
		return -1, serr
	case !execed:
		return -1, fmt.Errorf("launch: stage 2 ended before starting the application: %w", errors.Join(werr, ctx.Err()))
	}
	code, err := exitCode(cmd.ProcessState, werr)
	if err != nil {
		return -1, err
	}
	log.Info("application exited", "pid", cmd.Process.Pid, "code", code)
	return code, nil
}

// spawn starts stage 2 in the given isolation and sends it the plan.
// When ctx ends, stage 2 is killed at once; the application gets SIGTERM, and SIGKILL after
// StopTimeout.
func spawn(ctx context.Context, log *slog.Logger, opts Options, p *plan, mode Isolation, started *atomic.Bool) (*exec.Cmd, *os.File, error) {
	planR, planW, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		_ = planR.Close()
		_ = planW.Close()
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}

	cmd := exec.CommandContext(ctx, opts.Executable, stage2Arg)
	cmd.Cancel = func() error {
		if started.Load() {
			log.Info("stopping the application", "pid", cmd.Process.Pid, "grace", opts.StopTimeout)
			return cmd.Process.Signal(syscall.SIGTERM)
		}
		return cmd.Process.Kill()
	}
	cmd.Env = []string{} // stage 2 needs nothing from the host; the application gets the policy's
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdin, opts.Stdout, opts.Stderr
	cmd.ExtraFiles = []*os.File{planR, statusW} // planFD, statusFD
	cmd.WaitDelay = opts.StopTimeout
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	switch mode {
	case IsolationMountNS:
		attr.Unshareflags = syscall.CLONE_NEWNS
	case IsolationUserNS:
		attr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getuid(), HostID: os.Getuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getgid(), HostID: os.Getgid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
		// The caller's own uid inside the namespace, so the application runs as who it is; stage 2
		// keeps CAP_SYS_ADMIN over its namespace as an ambient capability to mount, and drops it
		// before the exec.
		attr.AmbientCaps = []uintptr{capSysAdmin}
	}
	cmd.SysProcAttr = attr

	sent := *p
	sent.Private = mode != isolationNone
	err = cmd.Start()
	_ = planR.Close()
	_ = statusW.Close()
	if err != nil {
		_ = planW.Close()
		_ = statusR.Close()
		return nil, nil, err
	}
	b, err := json.Marshal(&sent)
	if err != nil {
		_ = planW.Close()
		_ = statusR.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, nil, fmt.Errorf("encoding the plan: %w", err)
	}
	if _, err := planW.Write(b); err != nil {
		// Stage 2 died or refused the plan: its status and exit tell why.
		log.Debug("sending the plan to stage 2", "error", err)
	}
	clear(b)
	_ = planW.Close()
	return cmd, statusR, nil
}

// readStatus reads stage 2's records until end of file. It reports whether stage 2 reached the
// exec, and stage 2's refusal if there was one.
func readStatus(log *slog.Logger, r io.Reader) (bool, error) {
	dec := json.NewDecoder(r)
	execed := false
	for {
		var rec record
		err := dec.Decode(&rec)
		if errors.Is(err, io.EOF) {
			return execed, nil
		}
		if err != nil {
			return false, fmt.Errorf("launch: reading stage 2's status: %w", err)
		}
		switch {
		case rec.Error != "":
			return false, fmt.Errorf("launch: refusing to start the application: %s", rec.Error)
		case rec.Warn != "":
			log.Warn(rec.Warn)
		case rec.Exec:
			execed = true
		}
	}
}

// forward passes signals on to the application until done.
func forward(log *slog.Logger, proc *os.Process, sigs <-chan os.Signal, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case s := <-sigs:
			log.Info("forwarding signal", "signal", s.String(), "pid", proc.Pid)
			if err := proc.Signal(s); err != nil && !errors.Is(err, os.ErrProcessDone) {
				log.Warn("forwarding signal failed", "signal", s.String(), "error", err)
			}
		}
	}
}

// removeDirs removes the mount points that the launch created, deepest first; a directory that
// is no longer empty stays.
func removeDirs(log *slog.Logger, dirs []string) {
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("could not remove a mount point created for the launch", "dir", d, "error", err)
		}
	}
}
