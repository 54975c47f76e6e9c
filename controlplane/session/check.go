package session

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// Hash returns the hex SHA-256 (64 lowercase characters) of a session document's bytes
// exactly as the control plane stores them: the document that was uploaded, after template
// expansion, byte for byte. An update's predecessor must equal the Hash of the stored
// document that it replaces.
func Hash(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// CheckCreate applies the create rule: a new session has no predecessor.
func CheckCreate(s *Session) error {
	p := &problems{s: s}
	if s.Predecessor != "" {
		p.add("predecessor", "forbidden when creating session %q: only an update names the hash of the session it replaces", s.Name)
	}
	return p.err()
}

// CheckUpdate applies the update rule: the update keeps the name of the current session,
// and its predecessor equals currentHash, the Hash of the stored current document.
// Checking the updater against the current access policy is the caller's job.
func CheckUpdate(s, current *Session, currentHash string) error {
	p := &problems{s: s}
	if s.Name != current.Name {
		p.add("name", "an update keeps the name: got %q, current is %q", s.Name, current.Name)
	}
	switch {
	case s.Predecessor == "":
		p.add("predecessor", "required to update session %q: set it to the current hash %s", current.Name, currentHash)
	case !strings.EqualFold(s.Predecessor, currentHash):
		p.add("predecessor", "predecessor is stale: got %s, current is %s", s.Predecessor, currentHash)
	}
	return p.err()
}

// CheckImports checks every import of s against the exporting sessions that lookup returns:
// the session exists, holds the secret, exports it to s (export: [{session: <s.Name>}]), and
// its kind matches the kind s gives, if any. It then completes the checks that Validate left
// open for imports without a kind: issuer, private_key and placeholder formats.
func CheckImports(s *Session, lookup func(name string) (*Session, bool)) error {
	p := &problems{s: s}
	v := validator{s: s, p: p}
	kinds := v.localKinds()
	resolved := map[string]bool{}
	for i := range s.Secrets {
		sec := &s.Secrets[i]
		if sec.Import == nil {
			continue
		}
		sp := index("secrets", i) + ".import"
		from, ok := lookup(sec.Import.Session)
		if !ok || from == nil {
			p.add(sp+".session", "unknown session %q: secret %q imports from it", truncate(sec.Import.Session, 80), sec.Name)
			continue
		}
		src, ok := from.Secret(sec.Import.Secret)
		if !ok {
			p.add(sp+".secret", "session %q has no secret %q (known: %s)", from.Name, truncate(sec.Import.Secret, 60),
				quoteList(validator{s: from}.secretNames()))
			continue
		}
		if !src.ExportedTo(s.Name) {
			to := make([]string, 0, len(src.Export))
			for _, e := range src.Export {
				to = append(to, e.Session)
			}
			p.add(sp+".secret", "secret %q of session %q is not exported to session %q (exported to: %s)",
				src.Name, from.Name, s.Name, quoteList(to))
			continue
		}
		if src.Import != nil || src.Kind == "" {
			p.add(sp+".secret", "secret %q of session %q is itself imported and cannot be imported again", src.Name, from.Name)
			continue
		}
		if sec.Kind != "" && sec.Kind != src.Kind {
			p.add(index("secrets", i)+".kind", "secret %q of session %q is %s, not %s", src.Name, from.Name, src.Kind, sec.Kind)
			continue
		}
		if sec.Kind == "" && kinds[sec.Name] == "" {
			kinds[sec.Name] = src.Kind
			resolved[sec.Name] = true
		}
	}
	v.references(kinds, func(name string) bool { return resolved[name] })
	return p.err()
}

// Check validates sessions together, as `attestmesh session check` does: each one alone
// (Validate), their names unique, and every import against the exports of the others.
// It returns one error per session, in order, nil for each that passes; every non-nil
// error is an *Error. errors.Join(Check(ss)...) is nil when all pass.
func Check(sessions []*Session) []error {
	byName := map[string]int{}
	for i, s := range sessions {
		if _, dup := byName[s.Name]; !dup {
			byName[s.Name] = i
		}
	}
	lookup := func(name string) (*Session, bool) {
		i, ok := byName[name]
		if !ok {
			return nil, false
		}
		return sessions[i], true
	}
	errs := make([]error, len(sessions))
	for i, s := range sessions {
		var list []Problem
		collect := func(err error) {
			var e *Error
			if errors.As(err, &e) {
				list = append(list, e.Problems...)
			}
		}
		collect(s.Validate())
		if j := byName[s.Name]; j != i {
			p := &problems{s: s}
			p.add("name", "duplicate session %q (also sessions[%d])", s.Name, j)
			collect(p.err())
		}
		collect(CheckImports(s, lookup))
		if len(list) > 0 {
			errs[i] = &Error{Problems: sortByLine(list)}
		}
	}
	return errs
}
