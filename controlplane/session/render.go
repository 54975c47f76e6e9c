package session

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Value is the material of one secret, as the secret store holds it.
type Value struct {
	Kind     Kind
	Bytes    []byte // ascii and binary: the value
	KeyPEM   []byte // private-key: the key; x509 and x509-ca: the certificate's key (PKCS#8 PEM)
	CertPEM  []byte // x509 and x509-ca: the certificate
	ChainPEM []byte // x509 and x509-ca: the certificate followed by its issuers up to the root
}

// Values looks up secret values by the name the session uses (imported secrets under their
// local name). Implementations must be safe for concurrent use if the caller renders
// concurrently.
type Values interface {
	Lookup(name string) (Value, bool)
}

// ValueMap is a Values backed by a map.
type ValueMap map[string]Value

// Lookup implements Values.
func (m ValueMap) Lookup(name string) (Value, bool) {
	v, ok := m[name]
	return v, ok
}

// expand returns what one placeholder stands for. Errors name the placeholder, never the value.
func expand(ph placeholder, vals Values) ([]byte, error) {
	v, ok := vals.Lookup(ph.name)
	if !ok {
		return nil, fmt.Errorf("placeholder %s: no value for secret %q", ph.text, ph.name)
	}
	if msg := formatFits(ph.format, v.Kind); msg != "" {
		return nil, fmt.Errorf("placeholder %s: %s", ph.text, msg)
	}
	var out []byte
	what := ""
	switch ph.format {
	case FormatDefault:
		switch v.Kind {
		case KindASCII, KindBinary:
			out, what = v.Bytes, "value"
		case KindPrivateKey:
			out, what = v.KeyPEM, "private key"
		case KindX509, KindX509CA:
			out, what = v.CertPEM, "certificate"
		default:
			return nil, fmt.Errorf("placeholder %s: secret %q has unknown kind %q", ph.text, ph.name, v.Kind)
		}
	case FormatCrt:
		out, what = v.CertPEM, "certificate"
	case FormatPrivateKey:
		out, what = v.KeyPEM, "private key"
	case FormatChain:
		out, what = v.ChainPEM, "certificate chain"
	case FormatHex:
		return []byte(hex.EncodeToString(v.Bytes)), nil
	case FormatBase64:
		return []byte(base64.StdEncoding.EncodeToString(v.Bytes)), nil
	}
	if len(out) == 0 && v.Kind != KindASCII && v.Kind != KindBinary {
		return nil, fmt.Errorf("placeholder %s: secret %q has no %s", ph.text, ph.name, what)
	}
	return out, nil
}

func renderBytes(text string, vals Values) ([]byte, error) {
	phs, bad := scan(text)
	if len(bad) > 0 {
		return nil, errors.New(bad[0])
	}
	if len(phs) == 0 {
		return []byte(text), nil
	}
	var out bytes.Buffer
	out.Grow(len(text)) // most values are shorter than their placeholders' names
	last := 0
	for _, ph := range phs {
		out.WriteString(text[last:ph.start])
		b, err := expand(ph, vals)
		if err != nil {
			return nil, err
		}
		out.Write(b)
		last = ph.end
	}
	out.WriteString(text[last:])
	return out.Bytes(), nil
}

// Render expands every $$SCONE::...$$ placeholder in s with the values. Errors name the
// placeholder and never hold secret values.
func Render(s string, v Values) (string, error) {
	b, err := renderBytes(s, v)
	if err != nil {
		return "", fmt.Errorf("session: %w", err)
	}
	return string(b), nil
}

// RenderedService is a service's configuration with its placeholders expanded: what the
// attestation API returns to an attested workload and the launcher applies.
type RenderedService struct {
	Session string
	Service string
	Argv    []string          // the command split into words, each word rendered
	Env     map[string]string // environment, values rendered
	Pwd     string
	Files   map[string][]byte // injection file path -> rendered content, from the service's image
	FSPF    FSPF
}

// FSPF locates and unlocks a service's protected file system; all empty when it has none.
type FSPF struct {
	Path string
	Key  string // hex
	Tag  string // hex
}

// RenderService renders the named service of a validated session. Errors name the field and
// the placeholder, never a secret value.
func (s *Session) RenderService(name string, v Values) (*RenderedService, error) {
	svc, ok := s.Service(name)
	if !ok {
		names := make([]string, 0, len(s.Services))
		for _, x := range s.Services {
			names = append(names, x.Name)
		}
		return nil, fmt.Errorf("session: %q has no service %q (known: %s)", s.Name, name, quoteList(names))
	}
	r := &RenderedService{
		Session: s.Name,
		Service: svc.Name,
		Env:     make(map[string]string, len(svc.Environment)),
		Pwd:     svc.Pwd,
		Files:   map[string][]byte{},
		FSPF:    FSPF{Path: svc.FSPFPath, Key: svc.FSPFKey, Tag: svc.FSPFTag},
	}
	words, err := splitCommand(svc.Command)
	if err != nil {
		return nil, fmt.Errorf("session: service %q: command: %w", name, err)
	}
	for i, w := range words {
		out, err := renderBytes(w, v)
		if err != nil {
			return nil, fmt.Errorf("session: service %q: command word %d: %w", name, i, err)
		}
		if bytes.IndexByte(out, 0) >= 0 {
			return nil, fmt.Errorf("session: service %q: command word %d holds a NUL byte after rendering", name, i)
		}
		r.Argv = append(r.Argv, string(out))
	}
	for _, k := range sortedKeys(svc.Environment) {
		out, err := renderBytes(svc.Environment[k], v)
		if err != nil {
			return nil, fmt.Errorf("session: service %q: environment %s: %w", name, k, err)
		}
		if bytes.IndexByte(out, 0) >= 0 {
			return nil, fmt.Errorf("session: service %q: environment %s holds a NUL byte after rendering", name, k)
		}
		r.Env[k] = string(out)
	}
	if svc.ImageName != "" {
		img, ok := s.Image(svc.ImageName)
		if !ok {
			return nil, fmt.Errorf("session: service %q: unknown image %q", name, svc.ImageName)
		}
		for _, f := range img.InjectionFiles {
			out, err := renderBytes(f.Content, v)
			if err != nil {
				return nil, fmt.Errorf("session: service %q: injection file %s: %w", name, f.Path, err)
			}
			r.Files[f.Path] = out
		}
	}
	return r, nil
}

// Environ returns the environment as sorted "NAME=value" strings, for exec.
func (r *RenderedService) Environ() []string {
	env := make([]string, 0, len(r.Env))
	for _, k := range sortedKeys(r.Env) {
		env = append(env, k+"="+r.Env[k])
	}
	return env
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
