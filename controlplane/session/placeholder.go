package session

import (
	"fmt"
	"strings"
)

// Format selects what a placeholder expands to.
type Format string

// Placeholder formats. A placeholder is $$SCONE::name$$, $$SCONE::name.part$$ or
// $$SCONE::name:format$$:
//
//	$$SCONE::name$$              ascii: the text; binary: the raw bytes; private-key: PKCS#8 PEM;
//	                             x509 and x509-ca: the certificate PEM
//	.crt  or :crt                the certificate PEM (certificates only)
//	.key  or :privatekey         the certificate's private key, PKCS#8 PEM (certificates only)
//	.chain or :chain             the certificate followed by its issuers' certificates up to the
//	                             root (certificates only)
//	:hex, :base64                the value's bytes, hex or standard base64 (ascii and binary only)
const (
	FormatDefault    Format = ""
	FormatCrt        Format = "crt"
	FormatPrivateKey Format = "privatekey"
	FormatChain      Format = "chain"
	FormatHex        Format = "hex"
	FormatBase64     Format = "base64"
)

var formats = []Format{FormatCrt, FormatPrivateKey, FormatChain, FormatHex, FormatBase64}

var parts = map[string]Format{"crt": FormatCrt, "key": FormatPrivateKey, "chain": FormatChain}

const (
	placeholderOpen  = "$$SCONE::"
	placeholderClose = "$$"
)

// placeholder is one $$SCONE::...$$ occurrence.
type placeholder struct {
	start, end int // byte offsets of the whole placeholder in the text
	text       string
	name       string
	format     Format
}

// scan finds every placeholder in text. It returns the well-formed ones and a message for
// each malformed one.
func scan(text string) ([]placeholder, []string) {
	var out []placeholder
	var bad []string
	off := 0
	for {
		i := strings.Index(text[off:], placeholderOpen)
		if i < 0 {
			return out, bad
		}
		start := off + i
		body := start + len(placeholderOpen)
		j := strings.Index(text[body:], placeholderClose)
		if j < 0 {
			bad = append(bad, fmt.Sprintf("unterminated placeholder %q: want $$SCONE::name$$", truncate(text[start:], 40)))
			return out, bad
		}
		end := body + j + len(placeholderClose)
		p, err := parsePlaceholder(text[body : body+j])
		if err != "" {
			bad = append(bad, fmt.Sprintf("placeholder %q: %s", truncate(text[start:end], 60), err))
		} else {
			p.start, p.end, p.text = start, end, text[start:end]
			out = append(out, p)
		}
		off = end
	}
}

func parsePlaceholder(inner string) (placeholder, string) {
	name, format := inner, FormatDefault
	if n, f, ok := strings.Cut(inner, ":"); ok {
		name, format = n, Format(f)
		if !containsFormat(format) {
			return placeholder{}, fmt.Sprintf("unknown format %q (known: %s)", truncate(f, 20), quoteList(formats))
		}
	} else if n, part, ok := strings.Cut(inner, "."); ok {
		f, known := parts[part]
		if !known {
			return placeholder{}, fmt.Sprintf("unknown part %q (known: crt, key, chain)", truncate(part, 20))
		}
		name, format = n, f
	}
	if !isIdentifier(name) {
		return placeholder{}, "the secret name must be an identifier ([A-Za-z_][A-Za-z0-9_]*)"
	}
	return placeholder{name: name, format: format}, ""
}

func containsFormat(f Format) bool {
	for _, x := range formats {
		if x == f {
			return true
		}
	}
	return false
}

// formatFits says whether a placeholder format applies to a secret kind; the message says why not.
func formatFits(f Format, k Kind) string {
	switch f {
	case FormatCrt, FormatPrivateKey, FormatChain:
		if !k.IsCertificate() {
			return fmt.Sprintf("format %q needs an x509 or x509-ca secret, this one is %s", f, k)
		}
	case FormatHex, FormatBase64:
		if k != KindASCII && k != KindBinary {
			return fmt.Sprintf("format %q needs an ascii or binary secret, this one is %s", f, k)
		}
	}
	return ""
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
