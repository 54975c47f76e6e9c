package fspf

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ManifestName is the manifest's name at the root of an encrypted tree.
const ManifestName = ".fspf"

// Limits that bound what Decrypt reads from an untrusted tree.
const (
	MaxManifestSize = 16 << 20
	MaxEntries      = 1 << 20
	MaxFileSize     = 1 << 30
)

const (
	manifestHeader = "attestmesh-fspf v1"
	keyCheckPrefix = "key-check "
	infoFile       = "attestmesh-fspf v1 file\x00"
	infoKeyCheck   = "attestmesh-fspf v1 key-check"
	nonceSize      = 12
	gcmOverhead    = 16
)

// entry is one manifest line.
type entry struct {
	dir  bool
	mode fs.FileMode // permission bits only
	size int64       // plaintext size; files only
	hash [sha256.Size]byte
	path string
}

type manifest struct {
	keyCheck [KeySize]byte
	entries  []entry
}

func (m *manifest) marshal() []byte {
	var b bytes.Buffer
	b.WriteString(manifestHeader + "\n")
	b.WriteString(keyCheckPrefix + hex.EncodeToString(m.keyCheck[:]) + "\n")
	for _, e := range m.entries {
		if e.dir {
			fmt.Fprintf(&b, "d %04o %s\n", e.mode, e.path)
			continue
		}
		fmt.Fprintf(&b, "f %04o %d %s %s\n", e.mode, e.size, hex.EncodeToString(e.hash[:]), e.path)
	}
	return b.Bytes()
}

// parseManifest accepts exactly the canonical form that marshal prints.
func parseManifest(data []byte) (*manifest, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("fspf: manifest: %d bytes is more than %d", len(data), MaxManifestSize)
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, errors.New("fspf: manifest: empty or not terminated by a newline")
	}
	lines := strings.Split(string(data[:len(data)-1]), "\n")
	if lines[0] != manifestHeader {
		return nil, fmt.Errorf("fspf: manifest: line 1: want %q", manifestHeader)
	}
	if len(lines) < 2 || !strings.HasPrefix(lines[1], keyCheckPrefix) {
		return nil, fmt.Errorf("fspf: manifest: line 2: want %q followed by 64 hex characters", keyCheckPrefix)
	}
	m := &manifest{}
	if err := decodeLowerHex(m.keyCheck[:], lines[1][len(keyCheckPrefix):]); err != nil {
		return nil, fmt.Errorf("fspf: manifest: line 2: key check: %w", err)
	}
	if len(lines)-2 > MaxEntries {
		return nil, fmt.Errorf("fspf: manifest: %d entries is more than %d", len(lines)-2, MaxEntries)
	}
	dirs := map[string]bool{".": true}
	prev := ""
	m.entries = make([]entry, 0, len(lines)-2)
	for i, line := range lines[2:] {
		e, err := parseEntry(line)
		if err != nil {
			return nil, fmt.Errorf("fspf: manifest: line %d: %w", i+3, err)
		}
		if e.path <= prev {
			return nil, fmt.Errorf("fspf: manifest: line %d: %q is out of order or repeated", i+3, e.path)
		}
		if !dirs[path.Dir(e.path)] {
			return nil, fmt.Errorf("fspf: manifest: line %d: %q: parent directory not listed before it", i+3, e.path)
		}
		if e.dir {
			dirs[e.path] = true
		}
		prev = e.path
		m.entries = append(m.entries, e)
	}
	return m, nil
}

func parseEntry(line string) (entry, error) {
	var e entry
	kind, rest, ok := strings.Cut(line, " ")
	if !ok {
		return e, errors.New("want \"d MODE PATH\" or \"f MODE SIZE SHA256 PATH\"")
	}
	modeStr, rest, ok := strings.Cut(rest, " ")
	if !ok {
		return e, errors.New("missing fields after the mode")
	}
	mode, err := parseMode(modeStr)
	if err != nil {
		return e, err
	}
	e.mode = mode
	switch kind {
	case "d":
		e.dir = true
	case "f":
		sizeStr, r, ok := strings.Cut(rest, " ")
		if !ok {
			return e, errors.New("missing fields after the size")
		}
		hashStr, r, ok := strings.Cut(r, " ")
		if !ok {
			return e, errors.New("missing the path")
		}
		size, err := strconv.ParseInt(sizeStr, 10, 64)
		if err != nil || size < 0 || strconv.FormatInt(size, 10) != sizeStr {
			return e, errors.New("size: want a decimal number without leading zeros")
		}
		if size > MaxFileSize {
			return e, fmt.Errorf("size %d is more than %d", size, MaxFileSize)
		}
		e.size = size
		if err := decodeLowerHex(e.hash[:], hashStr); err != nil {
			return e, fmt.Errorf("hash: %w", err)
		}
		rest = r
	default:
		return e, errors.New("entry kind: want d or f")
	}
	if err := checkPath(rest); err != nil {
		return e, err
	}
	e.path = rest
	return e, nil
}

func parseMode(s string) (fs.FileMode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || len(s) != 4 || v > 0o777 || fmt.Sprintf("%04o", v) != s {
		return 0, errors.New("mode: want 4 octal digits, at most 0777")
	}
	return fs.FileMode(v), nil
}

// decodeLowerHex decodes exactly len(dst)*2 lowercase hex characters.
func decodeLowerHex(dst []byte, s string) error {
	if len(s) != 2*len(dst) || strings.ToLower(s) != s {
		return fmt.Errorf("want %d lowercase hex characters", 2*len(dst))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return errors.New("not valid hex")
	}
	return nil
}

// checkPath accepts clean, relative, slash-separated UTF-8 paths without control characters,
// other than the manifest's own name.
func checkPath(p string) error {
	if !fs.ValidPath(p) || p == "." {
		return fmt.Errorf("path %q: want a clean relative path", p)
	}
	if p == ManifestName {
		return fmt.Errorf("path %q: reserved for the manifest", p)
	}
	if !utf8.ValidString(p) {
		return fmt.Errorf("path %q: not valid UTF-8", p)
	}
	if strings.IndexFunc(p, unicode.IsControl) >= 0 {
		return fmt.Errorf("path %q: holds a control character", p)
	}
	return nil
}

// fileKey derives the AES-256 key of the file at relative path p.
func fileKey(k Key, p string) ([]byte, error) {
	fk, err := hkdf.Key(sha256.New, k[:], nil, infoFile+p, KeySize)
	if err != nil {
		return nil, fmt.Errorf("fspf: derive file key: %w", err)
	}
	return fk, nil
}

// keyCheck derives the value that the manifest holds to recognize the key.
func keyCheck(k Key) ([KeySize]byte, error) {
	var out [KeySize]byte
	c, err := hkdf.Key(sha256.New, k[:], nil, infoKeyCheck, KeySize)
	if err != nil {
		return out, fmt.Errorf("fspf: derive key check: %w", err)
	}
	copy(out[:], c)
	return out, nil
}
