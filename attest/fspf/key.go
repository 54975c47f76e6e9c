package fspf

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// KeySize is the size of a tree key (AES-256) and of a tag (SHA-256).
const KeySize = 32

// Key is a tree key. Its String and Format methods never print the bytes; use Hex to show it on
// purpose (attestmesh fspf encrypt does, for the session's fspf_key).
type Key [KeySize]byte

// Tag is the SHA-256 of a tree's manifest: the session's fspf_tag. It is not secret.
type Tag [KeySize]byte

// Hex returns the key as 64 lowercase hex characters.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// String implements fmt.Stringer without revealing the key.
func (Key) String() string { return "fspf.Key(redacted)" }

// Format implements fmt.Formatter: every verb prints the redacted form.
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// String returns the tag as 64 lowercase hex characters.
func (t Tag) String() string { return hex.EncodeToString(t[:]) }

// ParseKey parses 64 hex characters (surrounding whitespace allowed). Errors never quote s.
func ParseKey(s string) (Key, error) {
	var k Key
	if err := parseHex32(k[:], s); err != nil {
		return Key{}, fmt.Errorf("fspf: key: %w", err)
	}
	return k, nil
}

// ParseTag parses 64 hex characters (surrounding whitespace allowed).
func ParseTag(s string) (Tag, error) {
	var t Tag
	if err := parseHex32(t[:], s); err != nil {
		return Tag{}, fmt.Errorf("fspf: tag: %w", err)
	}
	return t, nil
}

func parseHex32(dst []byte, s string) error {
	s = strings.TrimSpace(s)
	if len(s) != 2*KeySize {
		return fmt.Errorf("want %d hex characters, got %d", 2*KeySize, len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return errors.New("not valid hex")
	}
	return nil
}
