package store

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// KeySize is the size of the store key: AES-256.
const KeySize = 32

// EnvKey is the environment variable that may hold the store key, hex encoded.
const EnvKey = "ATTESTMESH_STORE_KEY"

// maxKeyFile bounds what LoadKey reads from a key file.
const maxKeyFile = 1024

// Key is the store key. Its String method never prints the bytes, so a Key that reaches a log line
// by mistake stays secret.
type Key [KeySize]byte

// String implements fmt.Stringer without revealing the key.
func (Key) String() string { return "store.Key(redacted)" }

// GoString implements fmt.GoStringer without revealing the key.
func (Key) GoString() string { return "store.Key(redacted)" }

// Format implements fmt.Formatter: every verb prints the redacted form.
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// KeyConfig says where the store key comes from. Exactly one source must be set: File, or the
// environment variable EnvKey.
type KeyConfig struct {
	// File is the key file (--store-key-file): 32 raw bytes or 64 hex characters, mode 0600 or
	// stricter (a Kubernetes Secret mounted with defaultMode 0400 qualifies).
	File string
	// DataDir is the store's data directory; a key file inside it is refused.
	DataDir string
}

// LoadKey reads the store key from cfg.File, or else from the environment variable EnvKey.
func LoadKey(cfg KeyConfig) (Key, error) {
	env, envSet := os.LookupEnv(EnvKey)
	switch {
	case cfg.File != "" && envSet:
		return Key{}, fmt.Errorf("store: both --store-key-file and %s are set; choose one", EnvKey)
	case cfg.File != "":
		return loadKeyFile(cfg.File, cfg.DataDir)
	case envSet:
		k, err := parseHexKey(env)
		if err != nil {
			return Key{}, fmt.Errorf("store: %s: %w", EnvKey, err)
		}
		return k, nil
	default:
		return Key{}, fmt.Errorf("store: no store key: pass --store-key-file FILE or set %s "+
			"(create one outside the data dir with: (umask 077; openssl rand -hex 32 > FILE))", EnvKey)
	}
}

// ownGroupReadOnly reports whether a file that the group may access is only readable by it,
// by nobody else, and the group is one of this process's own. That is a Kubernetes Secret
// volume in a pod with an fsGroup: the kubelet owns the file as root, gives it the fsGroup
// and adds group read to defaultMode 0400, which is how a non-root control plane reads it.
func ownGroupReadOnly(fi os.FileInfo) bool {
	perm := fi.Mode().Perm()
	if perm&0o037 != 0 {
		return false // group write or execute, or any access by others
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	if int(st.Gid) == os.Getegid() {
		return true
	}
	groups, err := os.Getgroups()
	return err == nil && slices.Contains(groups, int(st.Gid))
}

func loadKeyFile(path, dataDir string) (Key, error) {
	if dataDir != "" {
		inside, err := Within(path, dataDir)
		if err != nil {
			return Key{}, err
		}
		if inside {
			return Key{}, fmt.Errorf("store: key file %s is inside the data dir %s: the key must not be stored next to the data it protects; move it elsewhere", path, dataDir)
		}
	}
	fi, err := os.Stat(path) // follows the symlinks of a Kubernetes Secret volume
	if err != nil {
		return Key{}, fmt.Errorf("store: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Key{}, fmt.Errorf("store: key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && !ownGroupReadOnly(fi) {
		return Key{}, fmt.Errorf("store: key file %s has mode %04o: it must not be accessible by others, nor by a group "+
			"other than the control plane's own, read-only (chmod 600 %s, or defaultMode: 0400 on the Kubernetes Secret volume)", path, perm, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return Key{}, fmt.Errorf("store: key file: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return Key{}, fmt.Errorf("store: read key file %s: %w", path, err)
	}
	defer clear(raw)
	var k Key
	if len(raw) == KeySize {
		copy(k[:], raw)
	} else {
		k, err = parseHexKey(string(raw))
		if err != nil {
			return Key{}, fmt.Errorf("store: key file %s: %w", path, err)
		}
	}
	if err := checkNonZero(k); err != nil {
		return Key{}, fmt.Errorf("store: key file %s: %w", path, err)
	}
	return k, nil
}

// parseHexKey decodes 64 hex characters, surrounding whitespace allowed. Errors never quote s.
func parseHexKey(s string) (Key, error) {
	s = strings.TrimSpace(s)
	if len(s) != 2*KeySize {
		return Key{}, fmt.Errorf("want %d raw bytes or %d hex characters, got %d characters", KeySize, 2*KeySize, len(s))
	}
	var k Key
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return Key{}, errors.New("not valid hex")
	}
	if err := checkNonZero(k); err != nil {
		return Key{}, err
	}
	return k, nil
}

func checkNonZero(k Key) error {
	var zero Key
	if subtle.ConstantTimeCompare(k[:], zero[:]) == 1 {
		return errors.New("the key is all zeros; generate a random one")
	}
	return nil
}

// Within reports whether path lies inside dir, after resolving symlinks as far as they exist.
func Within(path, dir string) (bool, error) {
	p, err := resolve(path)
	if err != nil {
		return false, err
	}
	d, err := resolve(dir)
	if err != nil {
		return false, err
	}
	rel, err := filepath.Rel(d, p)
	if err != nil {
		return false, nil //nolint:nilerr // paths on different volumes: not inside
	}
	return rel == "." || (rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))), nil
}

// resolve returns the absolute path with symlinks resolved for the longest existing prefix.
func resolve(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	var rest []string
	cur := abs
	for {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(append([]string{r}, rest...)...), nil
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return abs, nil
		}
		rest = append([]string{filepath.Base(cur)}, rest...)
		cur = parent
	}
}

// GenerateKeyFile writes a new random key to path as 64 hex characters and a newline, with mode
// 0600. It refuses to overwrite an existing file: losing the old key loses the store.
func GenerateKeyFile(path string) (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("store: generate key: %w", err)
	}
	if err := WriteKeyFile(path, k); err != nil {
		return Key{}, err
	}
	return k, nil
}

// WriteKeyFile writes k to path as 64 hex characters and a newline, with mode 0600, and syncs
// it. It refuses to overwrite an existing file: losing the old key loses the store.
func WriteKeyFile(path string, k Key) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("store: key file %s already exists; refusing to overwrite it (the store sealed with it would be lost): %w", path, err)
	}
	if err != nil {
		return fmt.Errorf("store: create key file: %w", err)
	}
	buf := AppendHexKey(make([]byte, 0, 2*KeySize+1), k)
	defer clear(buf)
	if _, err := f.Write(buf); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("store: write key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("store: sync key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("store: close key file %s: %w", path, err)
	}
	return nil
}

// AppendHexKey appends k as 64 hex characters and a newline to b: the format of key files and
// of ATTESTMESH_STORE_KEY. The caller clears what holds it when done.
func AppendHexKey(b []byte, k Key) []byte {
	b = hex.AppendEncode(b, k[:])
	return append(b, '\n')
}
