package launch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// plan is everything stage 2 needs, checked in the parent before anything starts. It travels to
// stage 2 as JSON over a pipe.
type plan struct {
	// Binary is the resolved path of the measured binary: what stage 2 execs.
	Binary string   `json:"binary"`
	Argv   []string `json:"argv"`
	Env    []string `json:"env"`
	Dir    string   `json:"dir"`
	// Mounts are the directories that get a tmpfs, none below another.
	Mounts []string   `json:"mounts"`
	Files  []fileSpec `json:"files"`
	FSPF   *FSPF      `json:"fspf,omitempty"`
	// TmpfsSize limits each tmpfs, in bytes.
	TmpfsSize int64 `json:"tmpfs_size"`
	// Private is set when stage 2 runs in its own mount namespace; stage 2 mounts nothing
	// otherwise.
	Private bool `json:"private"`
}

type fileSpec struct {
	Path    string `json:"path"`
	Content []byte `json:"content"`
}

// wipe overwrites the secret parts of the plan, best effort.
func (p *plan) wipe() {
	for i := range p.Files {
		clear(p.Files[i].Content)
	}
	for i := range p.Env {
		p.Env[i] = ""
	}
	if p.FSPF != nil {
		p.FSPF.Key = ""
	}
}

// hasSecrets tells whether the plan puts anything on a tmpfs.
func (p *plan) hasSecrets() bool { return len(p.Mounts) > 0 }

// protected tells whether a tmpfs may not cover dir: an application does not run without it.
func protected(dir string) bool {
	switch dir {
	case "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
		"/proc", "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var",
		"/usr/bin", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/local", "/usr/sbin", "/usr/share", "/var/lib":
		return true
	}
	return false
}

// resolveBinary looks name up in the launcher's PATH when it has no slash, and resolves symlinks.
func resolveBinary(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("launch: binary %q: %w", name, err)
	}
	return canonical(p)
}

func canonical(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("launch: %q: %w", p, err)
	}
	r, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("launch: resolving %q: %w", p, err)
	}
	return r, nil
}

// resolveCommand resolves the policy's argv[0] as the application would see it: a name without a
// slash is looked up in the policy's PATH (the launcher's PATH when the policy sets none), a
// relative path is taken from the working directory, and symlinks are followed.
func resolveCommand(name, dir, policyPath, hostPath string) (string, error) {
	if strings.ContainsRune(name, '/') {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		return canonical(name)
	}
	search := policyPath
	if search == "" {
		search = hostPath
	}
	for _, d := range filepath.SplitList(search) {
		if d == "" || !filepath.IsAbs(d) {
			continue // a relative PATH entry would depend on the working directory
		}
		c := filepath.Join(d, name)
		st, err := os.Stat(c) //nolint:gosec // G703: PATH entries of the policy, resolved on purpose
		if err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return canonical(c)
		}
	}
	return "", fmt.Errorf("launch: policy command %q not found in PATH %q", name, search)
}

// within tells whether p is dir or below it.
func within(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// checkAbs accepts a clean absolute path.
func checkAbs(what, p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("launch: %s %q is not a clean absolute path", what, p)
	}
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("launch: %s %q contains a NUL byte", what, p)
	}
	return nil
}

// newPlan checks the rendered configuration against the measured binary (already resolved) and
// lays out the mounts. hostPath is the launcher's PATH.
func newPlan(cfg *Config, binary, hostPath string, tmpfsSize int64) (*plan, error) {
	if len(cfg.Argv) == 0 || cfg.Argv[0] == "" {
		return nil, errors.New("launch: the policy has no command")
	}
	for i, a := range cfg.Argv {
		if strings.ContainsRune(a, 0) {
			return nil, fmt.Errorf("launch: policy command argument %d contains a NUL byte", i)
		}
	}
	dir := cfg.Dir
	if dir == "" {
		dir = "/"
	}
	if err := checkAbs("working directory", dir); err != nil {
		return nil, err
	}

	env := make([]string, 0, len(cfg.Env))
	for k, v := range cfg.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("launch: environment variable %q: invalid name or value", k)
		}
		env = append(env, k+"="+v)
	}
	sort.Strings(env)

	cmd, err := resolveCommand(cfg.Argv[0], dir, cfg.Env["PATH"], hostPath)
	if err != nil {
		return nil, err
	}
	if cmd != binary {
		return nil, fmt.Errorf("launch: policy command %q (resolves to %q) is not the measured binary %q",
			cfg.Argv[0], cmd, binary)
	}

	p := &plan{Binary: binary, Argv: cfg.Argv, Env: env, Dir: dir, TmpfsSize: tmpfsSize}
	var dirs []string
	var total int64
	for path, content := range cfg.Files {
		if err := checkAbs("injection file", path); err != nil {
			return nil, err
		}
		dirs = append(dirs, filepath.Dir(path))
		total += int64(len(content))
		p.Files = append(p.Files, fileSpec{Path: path, Content: content})
	}
	sort.Slice(p.Files, func(i, j int) bool { return p.Files[i].Path < p.Files[j].Path })
	if total > tmpfsSize {
		return nil, fmt.Errorf("launch: injection files hold %d bytes, more than the tmpfs limit of %d", total, tmpfsSize)
	}
	if cfg.FSPF != nil {
		if err := checkAbs("fspf path", cfg.FSPF.Path); err != nil {
			return nil, err
		}
		if cfg.FSPF.Key == "" || cfg.FSPF.Tag == "" {
			return nil, fmt.Errorf("launch: fspf path %q without fspf key and tag", cfg.FSPF.Path)
		}
		f := *cfg.FSPF
		p.FSPF = &f
		dirs = append(dirs, f.Path)
	}
	p.Mounts = outermost(dirs)
	for _, m := range p.Mounts {
		if protected(m) {
			return nil, fmt.Errorf("launch: refusing to cover %s with a tmpfs (it would hide the system's files from the application): inject into a dedicated directory", m)
		}
		if within(binary, m) {
			return nil, fmt.Errorf("launch: refusing to cover %s with a tmpfs: it holds the measured binary %q", m, binary)
		}
	}
	for _, f := range p.Files {
		for _, g := range p.Files {
			if within(filepath.Dir(g.Path), f.Path) {
				return nil, fmt.Errorf("launch: injection file %q is also the directory of %q", f.Path, g.Path)
			}
		}
		if p.FSPF != nil && within(f.Path, p.FSPF.Path) {
			return nil, fmt.Errorf("launch: injection file %q is inside the fspf directory %q", f.Path, p.FSPF.Path)
		}
	}
	return p, nil
}

// candidates lists the isolation modes to try, in order.
func candidates(want Isolation, secrets bool) []Isolation {
	switch want {
	case IsolationMountNS, IsolationUserNS:
		return []Isolation{want}
	default:
		if secrets {
			return []Isolation{IsolationMountNS, IsolationUserNS}
		}
		return []Isolation{IsolationMountNS, IsolationUserNS, isolationNone}
	}
}

// outermost returns the sorted, de-duplicated directories, without those below another one.
func outermost(dirs []string) []string {
	sort.Strings(dirs)
	var out []string
next:
	for _, d := range dirs {
		for _, o := range out { // an ancestor sorts before its descendants
			if within(d, o) {
				continue next
			}
		}
		out = append(out, d)
	}
	return out
}

// missingDirs returns the directories that creating the mount points would add on the host,
// deepest first, so that they can be removed after the application exits.
func missingDirs(mounts []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range mounts {
		for d := m; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) { //nolint:gosec // G703: checked injection paths
				break
			}
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}
