package session

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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

// Lookup finds an exporting session for CheckImports: nil when it does not exist. readable
// says whether the importer's author may read it; for a session they may not read, problems
// say only "not found or not permitted" until the session is shown to export the secret to
// the importer, so that nobody learns another owner's secret names or export targets.
type Lookup func(name string) (exporter *Session, readable bool)

// CheckImports checks every import of s against the exporting sessions that lookup returns:
// the session exists, holds the secret, exports it to s (export: [{session: <s.Name>}], and,
// where the export pins session_hash, to exactly this document: s.DocHash()), the secret is
// not itself imported, its kind matches the kind s gives, if any, and a hardware-mode exporter
// does not hand it to a session that accepts simulated quotes. It then completes the checks that
// Validate left open for imports without a kind: issuer, private_key and placeholder formats,
// and refuses a placeholder that needs the private key of an imported certificate whose
// private_key secret is not exported to s (a certificate export carries the certificate and
// its chain only).
func CheckImports(s *Session, lookup Lookup) error {
	p := &problems{s: s}
	v := validator{s: s, p: p}
	kinds := v.localKinds()
	resolved := map[string]bool{}
	noKey := map[string]string{}
	for i := range s.Secrets {
		sec := &s.Secrets[i]
		if sec.Import == nil {
			continue
		}
		sp := index("secrets", i) + ".import"
		from, readable := lookup(sec.Import.Session)
		hidden := func() {
			p.add(sp+".session", "secret %q imports %q from session %q: not found or not permitted "+
				"(the exporting session must exist and export %q to session %q)",
				sec.Name, truncate(sec.Import.Secret, 60), truncate(sec.Import.Session, 80), truncate(sec.Import.Secret, 60), s.Name)
		}
		if from == nil {
			if readable {
				p.add(sp+".session", "unknown session %q: secret %q imports from it", truncate(sec.Import.Session, 80), sec.Name)
			} else {
				hidden()
			}
			continue
		}
		src, ok := from.Secret(sec.Import.Secret)
		if !ok {
			if !readable {
				hidden()
				continue
			}
			p.add(sp+".secret", "session %q has no secret %q (known: %s)", from.Name, truncate(sec.Import.Secret, 60),
				quoteList(validator{s: from}.secretNames()))
			continue
		}
		if !src.ExportedTo(s.Name, s.DocHash()) {
			switch named := src.exportNamed(s.Name); {
			case !readable:
				hidden()
			case len(named) > 0:
				p.add(sp+".secret", "secret %q of session %q is exported to session %q only with session_hash %s; this document's hash is %s",
					src.Name, from.Name, s.Name, named[0].SessionHash, s.DocHash())
			default:
				to := make([]string, 0, len(src.Export))
				for _, e := range src.Export {
					to = append(to, e.Session)
				}
				p.add(sp+".secret", "secret %q of session %q is not exported to session %q (exported to: %s)",
					src.Name, from.Name, s.Name, quoteList(to))
			}
			continue
		}
		// From here on the exporter has chosen to give this secret to s: saying more about it
		// tells s nothing it may not know.
		if src.Import != nil || src.Kind == "" {
			p.add(sp+".secret", "secret %q of session %q is itself imported and cannot be imported again", src.Name, from.Name)
			continue
		}
		if err := importMode(from, s); err != nil {
			p.add(sp+".session", "%s", err)
			continue
		}
		if why := PinnedOwnersProblem(src, s); why != "" {
			p.add("access_policy.update", "%s", why)
			continue
		}
		if sec.Kind != "" && sec.Kind != src.Kind {
			p.add(index("secrets", i)+".kind", "secret %q of session %q is %s, not %s", src.Name, from.Name, src.Kind, sec.Kind)
			continue
		}
		if src.Kind.IsCertificate() && !KeyExported(from, src, s.Name, s.DocHash()) {
			if src.PrivateKey == "" {
				noKey[sec.Name] = fmt.Sprintf("needs the private key of certificate %q of session %q, whose key is implicit and never leaves it "+
					"(give the certificate a private_key secret and export that one to %q too)", src.Name, from.Name, s.Name)
			} else {
				noKey[sec.Name] = fmt.Sprintf("needs the private key of certificate %q of session %q, but its private_key secret %q is not exported to %q "+
					"(a certificate export carries the certificate and its chain only)", src.Name, from.Name, src.PrivateKey, s.Name)
			}
		}
		if sec.Kind == "" && kinds[sec.Name] == "" {
			kinds[sec.Name] = src.Kind
			resolved[sec.Name] = true
		}
	}
	v.references(kinds, func(name string) bool { return resolved[name] })
	v.keyPlaceholders(noKey)
	return p.err()
}

// CheckImportMode refuses an import from a hardware-mode exporter into a session that accepts
// simulated quotes: the simulated platform signs any measurement, so the secret would reach
// whoever can ask it. The error names both sessions and modes.
func CheckImportMode(exporter, importer *Session) error {
	if err := importMode(exporter, importer); err != nil {
		return fmt.Errorf("session: %w", err)
	}
	return nil
}

// importMode is CheckImportMode without the package prefix, for the problem list.
func importMode(exporter, importer *Session) error {
	from, to := exporter.Security.Attestation.Mode, importer.Security.Attestation.Mode
	if from == ModeHardware && to == ModeSimulation {
		return fmt.Errorf("session %q (security.attestation.mode: %s) exports to session %q, which accepts simulated quotes "+
			"(security.attestation.mode: %s): a workload attested only by the simulated platform would receive a hardware session's secret",
			exporter.Name, from, importer.Name, to)
	}
	return nil
}

// PinnedOwnersProblem returns why importer may not import secret src, which reaches it only by
// exports pinned with session_hash, or "" when it may. A pin fixes the importer's document, not
// who uploads it: whoever uploads the published bytes first becomes their CREATOR. So a pinned
// importer must name who may update it (certificates, or NONE), never CREATOR or ANY.
func PinnedOwnersProblem(src *Secret, importer *Session) string {
	pinned := false
	for _, e := range src.Export {
		if e.Session != importer.Name {
			continue
		}
		if e.SessionHash == "" {
			return ""
		}
		pinned = true
	}
	if !pinned {
		return ""
	}
	for _, p := range importer.AccessPolicy.Update {
		if p == PolicyCreator || p == PolicyAny {
			return fmt.Sprintf("secret %q is exported to session %q by its document's hash (session_hash), which pins the document but not who "+
				"uploads it, and access_policy.update is %s: name the session's updaters by certificate instead (or NONE)",
				src.Name, importer.Name, p)
		}
	}
	return ""
}

// KeyExported reports whether the private key of certificate secret cert (of session
// exporter) goes with it to importer (whose document has hash docHash): only when the
// certificate names its private_key secret and that secret is exported to the importer too.
func KeyExported(exporter *Session, cert *Secret, importer, docHash string) bool {
	if cert.PrivateKey == "" {
		return false
	}
	key, ok := exporter.Secret(cert.PrivateKey)
	return ok && key.Import == nil && key.ExportedTo(importer, docHash)
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
			return nil, true
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
