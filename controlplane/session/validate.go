package session

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
)

// Validate checks the meaning of a session and returns every problem at once as an *Error:
// names, version, access policy, measurements, references between services, images and
// secrets, the fields each secret kind allows, issuer cycles, and every placeholder.
//
// Imported secrets whose kind is omitted are checked only where their kind does not matter;
// CheckImports (or Check) completes the checks once the exporting session is known.
func (s *Session) Validate() error {
	p := &problems{s: s}
	v := validator{s: s, p: p}
	v.header()
	v.services()
	v.images()
	v.secrets()
	v.security()
	v.references(v.localKinds(), func(string) bool { return true })
	return p.err()
}

type validator struct {
	s *Session
	p *problems
}

func isHex(s string, n int) bool {
	if n > 0 && len(s) != n || len(s)%2 != 0 || s == "" {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// isSegment reports whether s is a SPIFFE path segment: letters, digits, '.', '-', '_',
// and not "." or "..".
func isSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// maxNameLength bounds session names, which end up in SPIFFE IDs and URLs.
const maxNameLength = 200

// CheckSessionName reports whether name is a valid session name: SPIFFE path segments
// separated by '/', at most 200 characters.
func CheckSessionName(name string) error {
	if p := checkName(name); p != nil {
		return errors.New("session: " + p.inField(name))
	}
	return nil
}

// nameProblem is what is wrong with a session name.
type nameProblem struct {
	detail   string
	showName bool // the message quotes the name
}

// checkName returns what is wrong with a session name, or nil.
func checkName(name string) *nameProblem {
	if name == "" {
		return &nameProblem{detail: "required"}
	}
	if len(name) > maxNameLength {
		return &nameProblem{detail: fmt.Sprintf("%d characters, at most %d", len(name), maxNameLength)}
	}
	for _, seg := range strings.Split(name, "/") {
		if !isSegment(seg) {
			return &nameProblem{showName: true, detail: "each '/'-separated part must be non-empty, not . or .., " +
				"and hold only letters, digits, '.', '-' and '_'"}
		}
	}
	return nil
}

// inField words the problem for a field that holds a session name: "name: required",
// `name "a//b": each ...`.
func (p *nameProblem) inField(name string) string {
	if p.showName {
		return fmt.Sprintf("name %q: %s", truncate(name, 60), p.detail)
	}
	return "name: " + p.detail
}

// ownName words the problem for the session's own name field, which the problem already
// names, unless the message quotes the name.
func (p *nameProblem) ownName(name string) string {
	if p.showName {
		return p.inField(name)
	}
	return p.detail
}

func (v validator) header() {
	s := v.s
	if p := checkName(s.Name); p != nil {
		v.p.add("name", "%s", p.ownName(s.Name))
	}
	switch s.Version {
	case Version:
	case "":
		v.p.add("version", "required: want %q", Version)
	default:
		v.p.add("version", "unsupported version %q: want %q", truncate(s.Version, 20), Version)
	}
	if s.Predecessor != "" && !isHex(s.Predecessor, 64) {
		v.p.add("predecessor", "want the 64 hex characters of the current session's hash")
	}
	v.policy("access_policy.read", s.AccessPolicy.Read)
	v.policy("access_policy.update", s.AccessPolicy.Update)
	v.policy("access_policy.create_sessions", s.AccessPolicy.CreateSessions)
}

func (v validator) policy(field string, entries []string) {
	if len(entries) == 0 {
		v.p.add(field, "empty: give %s, %s, %s or certificates", PolicyCreator, PolicyAny, PolicyNone)
	}
	for i, e := range entries {
		ip := index(field, i)
		switch e {
		case PolicyCreator, PolicyAny:
		case PolicyNone:
			if len(entries) > 1 {
				v.p.add(ip, "%s must be the only entry", PolicyNone)
			}
		default:
			block, rest := pem.Decode([]byte(e))
			if block == nil || block.Type != "CERTIFICATE" || strings.TrimSpace(string(rest)) != "" {
				v.p.add(ip, "want %s, %s, %s or one PEM certificate", PolicyCreator, PolicyAny, PolicyNone)
				continue
			}
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				v.p.add(ip, "invalid certificate: %v", err)
			}
		}
	}
}

func (v validator) services() {
	seen := map[string]int{}
	for i := range v.s.Services {
		svc := &v.s.Services[i]
		sp := index("services", i)
		switch {
		case svc.Name == "":
			v.p.add(sp+".name", "required")
		case !isSegment(svc.Name) || len(svc.Name) > maxNameLength:
			v.p.add(sp+".name", "%q: want letters, digits, '.', '-' and '_' (a SPIFFE path segment)", truncate(svc.Name, 60))
		default:
			if j, dup := seen[svc.Name]; dup {
				v.p.add(sp+".name", "duplicate service %q (also services[%d])", svc.Name, j)
			}
			seen[svc.Name] = i
		}
		if svc.ImageName != "" {
			if _, ok := v.s.Image(svc.ImageName); !ok {
				v.p.add(sp+".image_name", "unknown image %q (known: %s)", truncate(svc.ImageName, 60), quoteList(v.imageNames()))
			}
		}
		switch {
		case len(svc.MREnclaves) > 0 && len(svc.Attestation) > 0:
			v.p.add(sp+".attestation", "give mrenclaves or attestation, not both")
		case len(svc.MREnclaves) == 0 && len(svc.Attestation) == 0:
			v.p.add(sp, "no accepted enclave: give mrenclaves or attestation")
		}
		v.mrenclaves(sp+".mrenclaves", svc.MREnclaves)
		for j, av := range svc.Attestation {
			ap := index(sp+".attestation", j)
			if len(av.MREnclaves) == 0 && av.Signer == nil {
				v.p.add(ap, "empty variant: give mrenclave or signer")
			}
			v.mrenclaves(ap+".mrenclave", av.MREnclaves)
			if av.Signer != nil && !isHex(av.Signer.MRSigner, 64) {
				v.p.add(ap+".signer.mrsigner", "want 64 hex characters, got %q", truncate(av.Signer.MRSigner, 80))
			}
		}
		if _, err := splitCommand(svc.Command); err != nil {
			v.p.add(sp+".command", "%s", err)
		}
		for _, k := range slices.Sorted(maps.Keys(svc.Environment)) {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				v.p.add(join(sp+".environment", k), "an environment variable name must be non-empty without '=' or NUL")
			}
		}
		if svc.Pwd != "" {
			v.absPath(sp+".pwd", svc.Pwd)
		}
		v.fspf(sp, svc)
		if svc.Sidecar != nil {
			if len(svc.Sidecar.MREnclaves) == 0 {
				v.p.add(sp+".sidecar.mrenclaves", "required: the measurements of the sidecar enclaves that may carry this service's identity")
			}
			v.mrenclaves(sp+".sidecar.mrenclaves", svc.Sidecar.MREnclaves)
		}
	}
}

func (v validator) mrenclaves(field string, list []string) {
	for i, m := range list {
		if !isHex(m, 64) {
			v.p.add(index(field, i), "want 64 hex characters, got %q", truncate(m, 80))
		}
	}
}

func (v validator) absPath(field, p string) {
	if !path.IsAbs(p) || path.Clean(p) != p || strings.ContainsRune(p, 0) {
		v.p.add(field, "want an absolute, clean path, got %q", truncate(p, 80))
	}
}

func (v validator) fspf(sp string, svc *Service) {
	if svc.FSPFPath == "" && svc.FSPFKey == "" && svc.FSPFTag == "" {
		return
	}
	if svc.FSPFPath == "" {
		v.p.add(sp+".fspf_path", "required with fspf_key and fspf_tag")
	} else {
		v.absPath(sp+".fspf_path", svc.FSPFPath)
	}
	if !isHex(svc.FSPFKey, 64) {
		v.p.add(sp+".fspf_key", "want 64 hex characters (the key that attestmesh fspf encrypt printed)")
	}
	if !isHex(svc.FSPFTag, 0) {
		v.p.add(sp+".fspf_tag", "want hex (the tag that attestmesh fspf encrypt printed)")
	}
}

func (v validator) imageNames() []string {
	names := make([]string, 0, len(v.s.Images))
	for _, img := range v.s.Images {
		names = append(names, img.Name)
	}
	return names
}

func (v validator) images() {
	seen := map[string]int{}
	for i, img := range v.s.Images {
		ip := index("images", i)
		if img.Name == "" {
			v.p.add(ip+".name", "required")
		} else if j, dup := seen[img.Name]; dup {
			v.p.add(ip+".name", "duplicate image %q (also images[%d])", truncate(img.Name, 60), j)
		} else {
			seen[img.Name] = i
		}
		paths := map[string]int{}
		for j, f := range img.InjectionFiles {
			fp := index(ip+".injection_files", j)
			if f.Path == "" {
				v.p.add(fp+".path", "required")
				continue
			}
			v.absPath(fp+".path", f.Path)
			if k, dup := paths[f.Path]; dup {
				v.p.add(fp+".path", "duplicate path %q (also injection_files[%d])", truncate(f.Path, 80), k)
			}
			paths[f.Path] = j
		}
	}
}

func (v validator) secretNames() []string {
	names := make([]string, 0, len(v.s.Secrets))
	for _, sec := range v.s.Secrets {
		names = append(names, sec.Name)
	}
	return names
}

func (v validator) secrets() {
	seen := map[string]int{}
	for i := range v.s.Secrets {
		sec := &v.s.Secrets[i]
		sp := index("secrets", i)
		switch {
		case sec.Name == "":
			v.p.add(sp+".name", "required")
		case !isIdentifier(sec.Name):
			v.p.add(sp+".name", "%q: want an identifier ([A-Za-z_][A-Za-z0-9_]*)", truncate(sec.Name, 60))
		default:
			if j, dup := seen[sec.Name]; dup {
				v.p.add(sp+".name", "duplicate secret %q (also secrets[%d])", sec.Name, j)
			}
			seen[sec.Name] = i
		}
		if sec.Import != nil {
			v.importFields(sp, sec)
		} else {
			v.kindFields(sp, sec)
		}
		for j, e := range sec.Export {
			ep := index(sp+".export", j) + ".session"
			if p := checkName(e.Session); p != nil {
				v.p.add(ep, "%s", p.inField(e.Session))
			} else if e.Session == v.s.Name {
				v.p.add(ep, "a session cannot export to itself")
			}
			if e.SessionHash != "" && !isHex(e.SessionHash, 64) {
				v.p.add(index(sp+".export", j)+".session_hash", "want the 64 hex characters of the importing session's hash")
			}
		}
		if sec.ExportPublic && !sec.Kind.IsCertificate() && sec.Import == nil {
			v.p.add(sp+".export_public", "only certificates (x509, x509-ca) can be public, this secret is %s", kindOrNone(sec.Kind))
		}
	}
	v.issuerCycles()
}

func kindOrNone(k Kind) string {
	if k == "" {
		return "of no kind"
	}
	return string(k)
}

// generationFields lists the kind-specific fields that are set, with their YAML names.
func generationFields(sec *Secret) []string {
	var set []string
	add := func(name string, given bool) {
		if given {
			set = append(set, name)
		}
	}
	add("size", sec.Size != 0)
	add("value", sec.Value != "")
	add("algorithm", sec.Algorithm != "")
	add("private_key", sec.PrivateKey != "")
	add("issuer", sec.Issuer != "")
	add("common_name", sec.CommonName != "")
	add("dns", len(sec.DNS) > 0)
	add("valid_for", sec.ValidFor != "")
	return set
}

var allowed = map[Kind][]string{
	KindASCII:      {"size", "value"},
	KindBinary:     {"size", "value"},
	KindPrivateKey: {"algorithm"},
	KindX509CA:     {"private_key", "issuer", "common_name", "dns", "valid_for"},
	KindX509:       {"private_key", "issuer", "common_name", "dns", "valid_for"},
}

func (v validator) importFields(sp string, sec *Secret) {
	im := sec.Import
	if p := checkName(im.Session); p != nil {
		v.p.add(sp+".import.session", "%s", p.inField(im.Session))
	} else if im.Session == v.s.Name {
		v.p.add(sp+".import.session", "a session cannot import from itself")
	}
	if !isIdentifier(im.Secret) {
		v.p.add(sp+".import.secret", "want the name of the exported secret, an identifier")
	}
	if sec.Kind != "" && !slices.Contains(Kinds, sec.Kind) {
		v.p.add(sp+".kind", "unknown kind %q (known: %s)", truncate(string(sec.Kind), 40), quoteList(Kinds))
	}
	for _, f := range generationFields(sec) {
		v.p.add(sp+"."+f, "an imported secret takes no %s: the exporting session defines it", f)
	}
	if len(sec.Export) > 0 {
		v.p.add(sp+".export", "an imported secret cannot be exported again")
	}
	if sec.ExportPublic {
		v.p.add(sp+".export_public", "an imported secret cannot be made public")
	}
}

func (v validator) kindFields(sp string, sec *Secret) {
	ok, known := allowed[sec.Kind]
	if !known {
		if sec.Kind == "" {
			v.p.add(sp+".kind", "required unless the secret is imported (known: %s)", quoteList(Kinds))
		} else {
			v.p.add(sp+".kind", "unknown kind %q (known: %s)", truncate(string(sec.Kind), 40), quoteList(Kinds))
		}
		return
	}
	for _, f := range generationFields(sec) {
		if !slices.Contains(ok, f) {
			v.p.add(sp+"."+f, "not allowed for kind %s (allowed: %s)", sec.Kind, quoteList(ok))
		}
	}
	switch sec.Kind {
	case KindASCII:
		if sec.Size != 0 && sec.Value != "" {
			v.p.add(sp+".value", "give size or value, not both")
		}
		for _, c := range []byte(sec.Value) {
			if c < 0x20 || c > 0x7e {
				v.p.add(sp+".value", "an ascii value holds printable ASCII only (use kind binary)")
				break
			}
		}
		v.sizeRange(sp, sec.Size)
	case KindBinary:
		if sec.Size != 0 && sec.Value != "" {
			v.p.add(sp+".value", "give size or value, not both")
		}
		if sec.Value != "" {
			if _, err := base64.StdEncoding.DecodeString(sec.Value); err != nil {
				v.p.add(sp+".value", "a binary value is standard base64: %v", err)
			}
		}
		v.sizeRange(sp, sec.Size)
	case KindPrivateKey:
		if sec.Algorithm != "" && !slices.Contains(Algorithms, sec.Algorithm) {
			v.p.add(sp+".algorithm", "unknown algorithm %q (known: %s)", truncate(string(sec.Algorithm), 40), quoteList(Algorithms))
		}
	case KindX509, KindX509CA:
		v.certFields(sp, sec)
	}
}

func (v validator) sizeRange(sp string, size int) {
	if size < 0 || size > maxSecretSize {
		v.p.add(sp+".size", "%d is out of range [1, %d]", size, maxSecretSize)
	}
}

func (v validator) certFields(sp string, sec *Secret) {
	if sec.ValidFor != "" {
		if _, err := parseValidFor(sec.ValidFor); err != nil {
			v.p.add(sp+".valid_for", "%s", err)
		}
	}
	for i, name := range sec.DNS {
		if !isDNSName(name) {
			v.p.add(index(sp+".dns", i), "%q is not a DNS name", truncate(name, 80))
		}
	}
	if len(sec.CommonName) > 64 {
		v.p.add(sp+".common_name", "%d characters, at most 64 (RFC 5280)", len(sec.CommonName))
	}
}

// isDNSName accepts host names made of letter-digit-hyphen labels, with an optional leading
// "*." wildcard label.
func isDNSName(name string) bool {
	name = strings.TrimPrefix(name, "*.")
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			default:
				return false
			}
		}
	}
	return true
}

// issuerCycles refuses issuer chains that loop (including a certificate that names itself).
func (v validator) issuerCycles() {
	reported := map[string]bool{}
	for i := range v.s.Secrets {
		start := &v.s.Secrets[i]
		if start.Issuer == "" || reported[start.Name] {
			continue
		}
		chain := []string{start.Name}
		seen := map[string]bool{start.Name: true}
		cur := start
		for cur.Issuer != "" {
			next, ok := v.s.Secret(cur.Issuer)
			if !ok {
				break
			}
			chain = append(chain, next.Name)
			if seen[next.Name] {
				for _, n := range chain {
					reported[n] = true
				}
				v.p.add(index("secrets", i)+".issuer", "issuer cycle: %s", strings.Join(chain, " -> "))
				break
			}
			seen[next.Name] = true
			cur = next
		}
	}
}

// localKinds maps every secret name to its kind; "" (unknown) for imports whose kind is
// omitted and for invalid kinds, which are reported once, where they are declared.
func (v validator) localKinds() map[string]Kind {
	kinds := make(map[string]Kind, len(v.s.Secrets))
	for _, sec := range v.s.Secrets {
		if _, dup := kinds[sec.Name]; !dup {
			kinds[sec.Name] = ""
			if slices.Contains(Kinds, sec.Kind) {
				kinds[sec.Name] = sec.Kind
			}
		}
	}
	return kinds
}

// references checks issuer, private_key and placeholders against kinds. A kind of "" means
// unknown (an import not yet resolved): such references are accepted. Problems are reported
// only for references to names for which report returns true.
func (v validator) references(kinds map[string]Kind, report func(name string) bool) {
	known := v.secretNames()
	ref := func(field, name string, want Kind) {
		k, ok := kinds[name]
		switch {
		case !report(name):
		case !ok:
			v.p.add(field, "unknown secret %q (known: %s)", truncate(name, 60), quoteList(known))
		case k != "" && k != want:
			v.p.add(field, "secret %q is %s, want %s", name, k, want)
		}
	}
	for i, sec := range v.s.Secrets {
		if sec.Import != nil || !sec.Kind.IsCertificate() {
			continue
		}
		sp := index("secrets", i)
		if sec.PrivateKey != "" {
			ref(sp+".private_key", sec.PrivateKey, KindPrivateKey)
		}
		if sec.Issuer != "" && sec.Issuer != sec.Name {
			ref(sp+".issuer", sec.Issuer, KindX509CA)
		}
	}
	text := func(field, t string, inArgs bool) {
		phs, bad := scan(t)
		if report("") {
			for _, msg := range bad {
				v.p.add(field, "%s", msg)
			}
		}
		for _, ph := range phs {
			k, ok := kinds[ph.name]
			switch {
			case !report(ph.name):
			case !ok:
				v.p.add(field, "placeholder %s names no secret (known: %s)", ph.text, quoteList(known))
			case k == "":
			case formatFits(ph.format, k) != "":
				v.p.add(field, "placeholder %s: %s", ph.text, formatFits(ph.format, k))
			case inArgs && k == KindBinary && ph.format == FormatDefault:
				v.p.add(field, "placeholder %s puts raw binary bytes into a command or environment: use :hex or :base64", ph.text)
			}
		}
	}
	for i, svc := range v.s.Services {
		sp := index("services", i)
		text(sp+".command", svc.Command, true)
		for _, k := range slices.Sorted(maps.Keys(svc.Environment)) {
			text(join(sp+".environment", k), svc.Environment[k], true)
		}
	}
	for i, img := range v.s.Images {
		for j, f := range img.InjectionFiles {
			text(index(index("images", i)+".injection_files", j)+".content", f.Content, false)
		}
	}
}

// eachText calls f for every text that may hold placeholders: commands, environment values
// and injection file contents, with their field paths.
func (v validator) eachText(f func(field, text string)) {
	for i, svc := range v.s.Services {
		sp := index("services", i)
		f(sp+".command", svc.Command)
		for _, k := range slices.Sorted(maps.Keys(svc.Environment)) {
			f(join(sp+".environment", k), svc.Environment[k])
		}
	}
	for i, img := range v.s.Images {
		for j, file := range img.InjectionFiles {
			f(index(index("images", i)+".injection_files", j)+".content", file.Content)
		}
	}
}

// keyPlaceholders refuses placeholders for the private key of an imported certificate that
// comes without it; noKey maps such secrets to the reason.
func (v validator) keyPlaceholders(noKey map[string]string) {
	if len(noKey) == 0 {
		return
	}
	v.eachText(func(field, text string) {
		phs, _ := scan(text)
		for _, ph := range phs {
			if why := noKey[ph.name]; why != "" && ph.format == FormatPrivateKey {
				v.p.add(field, "placeholder %s %s", ph.text, why)
			}
		}
	})
}

func (v validator) security() {
	a := v.s.Security.Attestation
	switch a.Mode {
	case ModeHardware, ModeSimulation:
	default:
		v.p.add("security.attestation.mode", "unknown mode %q: want %s or %s", truncate(string(a.Mode), 40), ModeHardware, ModeSimulation)
	}
	for i, t := range a.Tolerate {
		if !slices.Contains(Tolerances, t) {
			v.p.add(index("security.attestation.tolerate", i), "unknown tolerance %q (known: %s)", truncate(string(t), 40), quoteList(Tolerances))
		}
	}
	for i, id := range a.IgnoreAdvisories {
		if id != AdvisoryWildcard && !isAdvisoryID(id) {
			v.p.add(index("security.attestation.ignore_advisories", i), "%q: want an Intel advisory ID like INTEL-SA-00615, or \"*\" for every advisory", truncate(id, 40))
		}
	}
}

// isAdvisoryID accepts Intel security advisory IDs: INTEL-SA- followed by five digits.
func isAdvisoryID(id string) bool {
	rest, ok := strings.CutPrefix(strings.ToUpper(id), "INTEL-SA-")
	if !ok || len(rest) != 5 {
		return false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
