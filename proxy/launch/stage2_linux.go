package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
)

// MaybeStage2 runs stage 2 and never returns when the process was started as the launcher's
// stage 2 (a hidden first argument); otherwise it returns at once. Call it first thing in main
// (and in TestMain of tests that launch), before flags are parsed or goroutines started.
//
// dec decrypts the protected file system tree; with nil, a session that has fspf is refused.
func MaybeStage2(dec FSPFDecrypter) {
	if len(os.Args) < 2 || os.Args[1] != stage2Arg {
		return
	}
	os.Exit(stage2(dec))
}

// stage2 sets up the namespace and execs the application. It returns an exit code only when it
// failed; the reason is on the status pipe.
func stage2(dec FSPFDecrypter) int {
	status := os.NewFile(statusFD, "launch-status")
	if status == nil {
		return 2
	}
	// Neither pipe may reach the application; end of file on status tells the parent the exec
	// happened.
	syscall.CloseOnExec(planFD)
	syscall.CloseOnExec(statusFD)
	enc := json.NewEncoder(status)
	fail := func(err error) int {
		_ = enc.Encode(record{Error: err.Error()})
		return 1
	}

	in := os.NewFile(planFD, "launch-plan")
	if in == nil {
		return fail(errors.New("stage 2 has no plan pipe"))
	}
	b, err := io.ReadAll(in)
	_ = in.Close()
	if err != nil {
		return fail(fmt.Errorf("reading the plan: %w", err))
	}
	var p plan
	err = json.Unmarshal(b, &p)
	clear(b)
	if err != nil {
		return fail(fmt.Errorf("decoding the plan: %w", err))
	}
	warn := func(msg string) { _ = enc.Encode(record{Warn: msg}) }
	if err := setup(&p, dec, warn); err != nil {
		p.wipe()
		return fail(err)
	}
	// Capabilities are per thread: drop the ambient ones on the thread that execs, and take
	// CAP_SYS_ADMIN, which the namespace needed, out of the bounding set, so that the
	// application never holds it (not even as root).
	runtime.LockOSThread()
	if err := dropAmbientCaps(); err != nil {
		p.wipe()
		return fail(err)
	}
	if err := dropBoundingSysAdmin(); err != nil {
		p.wipe()
		return fail(err)
	}
	if err := enc.Encode(record{Exec: true}); err != nil {
		p.wipe()
		return 1 // the parent is gone
	}
	err = syscall.Exec(p.Binary, p.Argv, p.Env)
	p.wipe()
	return fail(fmt.Errorf("exec %s: %w", p.Binary, err))
}

// dropAmbientCaps clears the calling thread's ambient capabilities (the user-namespace mode
// raises CAP_SYS_ADMIN for stage 2), so that the application execs without any.
func dropAmbientCaps() error {
	const prCapAmbient, prCapAmbientClearAll = 47, 4
	_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prCapAmbient, prCapAmbientClearAll, 0)
	if errno != 0 && errno != syscall.EINVAL { // EINVAL: a kernel without ambient capabilities
		return fmt.Errorf("dropping ambient capabilities: %w", errno)
	}
	return nil
}

// dropBoundingSysAdmin removes CAP_SYS_ADMIN from the calling thread's bounding set: after the
// exec the application cannot hold it, even as root. Without CAP_SETPCAP the bounding set cannot
// change; that is harmless for an application that does not run as root (with the ambient set
// cleared it execs without capabilities) and an error for one that does, unless CAP_SYS_ADMIN is
// not in the set anyway.
func dropBoundingSysAdmin() error {
	const prCapBSetRead, prCapBSetDrop = 23, 24
	_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prCapBSetDrop, capSysAdmin, 0)
	if errno == 0 || os.Geteuid() != 0 {
		return nil
	}
	in, _, rerr := syscall.RawSyscall(syscall.SYS_PRCTL, prCapBSetRead, capSysAdmin, 0)
	if rerr == 0 && in == 0 {
		return nil
	}
	return fmt.Errorf("dropping CAP_SYS_ADMIN from the bounding set before starting the application: %w", errno)
}

// setup decrypts the fspf tree, mounts the tmpfs file systems, writes the files and changes to
// the working directory.
func setup(p *plan, dec FSPFDecrypter, warn func(string)) error {
	if len(p.Mounts) > 0 && !p.Private {
		return errors.New("files to inject but no private mount namespace")
	}
	if p.Private {
		if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("making every mount private: %w", err)
		}
	}
	// Decrypt before mounting: the tmpfs hides the encrypted tree.
	var tree PlaintextTree
	if p.FSPF != nil {
		if dec == nil {
			return fmt.Errorf("fspf %s: this program has no fspf decrypter", p.FSPF.Path)
		}
		t, err := dec(p.FSPF.Path, p.FSPF.Key, p.FSPF.Tag)
		if err != nil {
			return fmt.Errorf("fspf %s: %w", p.FSPF.Path, err)
		}
		tree = t
	}
	for _, m := range p.Mounts {
		if err := mountTmpfs(m, p.TmpfsSize, warn); err != nil {
			return err
		}
	}
	for _, f := range p.Files {
		if err := writeSecret(f); err != nil {
			return err
		}
	}
	if tree != nil {
		if err := tree.Materialize(p.FSPF.Path); err != nil {
			return fmt.Errorf("fspf %s: writing the plaintext tree: %w", p.FSPF.Path, err)
		}
	}
	if err := os.Chdir(p.Dir); err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	return nil
}

// mountTmpfs mounts a size-limited tmpfs with mode 0700 on dir, creating dir if missing. It asks
// for noswap and warns when the kernel refuses it (before 6.4, or in a user namespace).
func mountTmpfs(dir string, size int64, warn func(string)) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating mount point: %w", err)
	}
	const flags = syscall.MS_NOSUID | syscall.MS_NODEV
	data := fmt.Sprintf("mode=0700,size=%d", size)
	err := syscall.Mount("attestmesh", dir, "tmpfs", flags, data+",noswap")
	if errors.Is(err, syscall.EINVAL) {
		warn(fmt.Sprintf("tmpfs on %s without noswap (not supported here): its pages may reach swap if swap is enabled", dir))
		err = syscall.Mount("attestmesh", dir, "tmpfs", flags, data)
	}
	if err != nil {
		return fmt.Errorf("mounting a tmpfs on %s: %w", dir, err)
	}
	return nil
}

// writeSecret writes one injection file with mode 0600 into a tmpfs.
func writeSecret(f fileSpec) error {
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o700); err != nil {
		return fmt.Errorf("injection file %s: %w", f.Path, err)
	}
	out, err := os.OpenFile(f.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("injection file %s: %w", f.Path, err)
	}
	_, err = out.Write(f.Content)
	if err == nil {
		err = out.Chmod(0o600) // whatever the umask
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("injection file %s: %w", f.Path, err)
	}
	return nil
}
