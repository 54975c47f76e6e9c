package session_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/session"
)

func TestExamplesParseValidateAndCheck(t *testing.T) {
	redis, flask := examples(t)
	require.NoError(t, redis.Validate())
	require.NoError(t, flask.Validate())
	for i, err := range session.Check([]*session.Session{redis, flask}) {
		require.NoError(t, err, "session %d", i)
	}

	assert.Equal(t, redisName, redis.Name)
	assert.Equal(t, session.ModeSimulation, redis.Security.Attestation.Mode)
	assert.True(t, redis.Security.Attestation.Tolerates(session.TolerateDebugMode))
	assert.False(t, redis.Security.Attestation.Tolerates(session.TolerateInsecureConfiguration))
	assert.Equal(t, []string{session.PolicyCreator}, redis.AccessPolicy.Read)

	srv, ok := redis.Secret("redis")
	require.True(t, ok)
	assert.Equal(t, session.KindX509, srv.Kind)
	assert.Equal(t, "redis_ca_cert", srv.Issuer)
	assert.Equal(t, []string{"redis"}, srv.DNS)
	validity, err := srv.Validity()
	require.NoError(t, err)
	assert.Equal(t, session.DefaultX509Validity, validity)
	for _, name := range []string{"redis_client_key", "redis_client_cert", "redis_ca_cert"} {
		sec, ok := redis.Secret(name)
		require.True(t, ok, name)
		assert.True(t, sec.ExportedTo(flaskName, flask.DocHash()), name)
		assert.False(t, sec.ExportedTo("someone/else", flask.DocHash()), name)
	}

	caCert, ok := flask.Secret("api_ca_cert")
	require.True(t, ok)
	assert.True(t, caCert.ExportPublic)
	caValidity, err := caCert.Validity()
	require.NoError(t, err)
	assert.Equal(t, session.DefaultCAValidity, caValidity)
	imp, ok := flask.Secret("redis_client_cert")
	require.True(t, ok)
	require.NotNil(t, imp.Import)
	assert.Equal(t, session.Import{Session: redisName, Secret: "redis_client_cert"}, *imp.Import)

	svc, ok := flask.Service("flask_restapi")
	require.True(t, ok)
	assert.Equal(t, []string{pythonMR}, svc.MREnclaves)
	assert.Equal(t, "flask_restapi_image", svc.ImageName)
	img, ok := flask.Image("flask_restapi_image")
	require.True(t, ok)
	assert.Len(t, img.InjectionFiles, 5)
}

// base is a valid session; cases append to it from line 6 on.
const base = `name: t/s
version: "0.3"
services:
  - name: svc
    mrenclaves: [` + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + `]
`

// refusals are documents that Parse or Validate refuse, with the problem they must report.
var refusals = []struct {
	name  string
	doc   string // appended to base unless full is set
	full  bool
	field string
	line  int
	msg   string
}{
	{name: "unknown top-level key", doc: "colour: blue\n", field: "colour", line: 6, msg: `unknown key "colour" (known: access_policy, images, name, predecessor, secrets, security, services, version)`},
	{name: "unknown secret key", doc: "secrets:\n  - name: a\n    kind: ascii\n    sise: 3\n", field: "secrets[0].sise", line: 9, msg: `unknown key "sise"`},
	{name: "duplicate key", doc: "secrets: []\nsecrets: []\n", field: "secrets", line: 7, msg: "duplicate key"},
	{name: "wrong type list", doc: "secrets: {a: b}\n", field: "secrets", line: 6, msg: "want a list, got a mapping"},
	{name: "wrong type scalar", doc: "images:\n  - name: [x]\n", field: "images[0].name", line: 7, msg: "want a scalar, got a list"},
	{name: "size not an integer", doc: "secrets:\n  - name: a\n    kind: ascii\n    size: big\n", field: "secrets[0].size", line: 9, msg: `want an integer, got str "big"`},
	{name: "size out of range", doc: "secrets:\n  - name: a\n    kind: binary\n    size: 0\n", field: "secrets[0].size", line: 9, msg: "0 is out of range [1, 65536]"},
	{name: "export_public not a bool", doc: "secrets:\n  - name: a\n    kind: x509-ca\n    export_public: yes please\n", field: "secrets[0].export_public", line: 9, msg: "want true or false"},
	{name: "isvsvn out of range", doc: "  - name: s2\n    attestation:\n      - signer: {mrsigner: " + strings.Repeat("b", 64) + ", isvprodid: 1, isvsvn: 70000}\n", field: "services[1].attestation[0].signer.isvsvn", line: 8, msg: "70000 is out of range [0, 65535]"},
	{name: "alias", doc: "images:\n  - &x {name: a}\n  - *x\n", field: "images[0]", line: 7, msg: "YAML anchors and aliases are not supported"},
	{name: "null list element", doc: "security:\n  attestation:\n    tolerate: [~]\n", field: "security.attestation.tolerate[0]", line: 8, msg: "want a string, got null"},
	{name: "not a mapping", full: true, doc: "- a\n- b\n", field: "", line: 1, msg: "want a mapping, got a list"},

	{name: "missing version", full: true, doc: "name: a\nservices: []\n", field: "version", line: 1, msg: `required: want "0.3"`},
	{name: "wrong version", full: true, doc: "name: a\nversion: \"0.2\"\n", field: "version", line: 2, msg: `unsupported version "0.2": want "0.3"`},
	{name: "bad session name", full: true, doc: "name: a//b\nversion: \"0.3\"\n", field: "name", line: 1, msg: "each '/'-separated part must be non-empty"},
	{name: "bad predecessor", doc: "predecessor: abc\n", field: "predecessor", line: 6, msg: "want the 64 hex characters"},
	{name: "bad policy entry", doc: "access_policy:\n  read: [SOMEONE]\n", field: "access_policy.read[0]", line: 7, msg: "want CREATOR, ANY, NONE or one PEM certificate"},
	{name: "NONE with others", doc: "access_policy:\n  update: [CREATOR, NONE]\n", field: "access_policy.update[1]", line: 7, msg: "NONE must be the only entry"},
	{name: "mrenclave not 64 hex", doc: "  - name: s2\n    mrenclaves: [abc]\n", field: "services[1].mrenclaves[0]", line: 7, msg: `want 64 hex characters, got "abc"`},
	{name: "mrsigner not hex", doc: "  - name: s2\n    attestation:\n      - signer: {mrsigner: zz}\n", field: "services[1].attestation[0].signer.mrsigner", line: 8, msg: "want 64 hex characters"},
	{name: "no enclave", doc: "  - name: s2\n", field: "services[1]", line: 6, msg: "no accepted enclave: give mrenclaves or attestation"},
	{name: "both mrenclaves and attestation", doc: "  - name: s2\n    mrenclaves: [" + strings.Repeat("a", 64) + "]\n    attestation:\n      - mrenclave: [" + strings.Repeat("a", 64) + "]\n", field: "services[1].attestation", line: 9, msg: "give mrenclaves or attestation, not both"},
	{name: "empty variant", doc: "  - name: s2\n    attestation:\n      - {}\n", field: "services[1].attestation[0]", line: 8, msg: "empty variant"},
	{name: "duplicate service", doc: "  - name: svc\n    mrenclaves: [" + strings.Repeat("a", 64) + "]\n", field: "services[1].name", line: 6, msg: `duplicate service "svc" (also services[0])`},
	{name: "unknown image", doc: "    image_name: img\nimages:\n  - name: other\n", field: "services[0].image_name", line: 6, msg: `unknown image "img" (known: other)`},
	{name: "unterminated quote", doc: "    command: echo 'hi\n", field: "services[0].command", line: 6, msg: "unterminated single quote"},
	{name: "relative pwd", doc: "    pwd: app\n", field: "services[0].pwd", line: 6, msg: "want an absolute, clean path"},
	{name: "fspf key", doc: "    fspf_path: /fspf.pb\n    fspf_key: 1234\n    fspf_tag: ab\n", field: "services[0].fspf_key", line: 7, msg: "want 64 hex characters"},
	{name: "duplicate image", doc: "images:\n  - name: i\n  - name: i\n", field: "images[1].name", line: 8, msg: `duplicate image "i" (also images[0])`},
	{name: "duplicate injection path", doc: "images:\n  - name: i\n    injection_files:\n      - {path: /a, content: x}\n      - {path: /a, content: y}\n", field: "images[0].injection_files[1].path", line: 10, msg: `duplicate path "/a"`},
	{name: "relative injection path", doc: "images:\n  - name: i\n    injection_files:\n      - {path: tls/a, content: x}\n", field: "images[0].injection_files[0].path", line: 9, msg: "want an absolute, clean path"},

	{name: "unknown kind", doc: "secrets:\n  - name: a\n    kind: password\n", field: "secrets[0].kind", line: 8, msg: `unknown kind "password" (known: ascii, binary, private-key, x509-ca, x509)`},
	{name: "missing kind", doc: "secrets:\n  - name: a\n", field: "secrets[0].kind", line: 7, msg: "required unless the secret is imported"},
	{name: "bad secret name", doc: "secrets:\n  - name: my-key\n    kind: private-key\n", field: "secrets[0].name", line: 7, msg: "want an identifier"},
	{name: "duplicate secret", doc: "secrets:\n  - {name: a, kind: ascii}\n  - {name: a, kind: binary}\n", field: "secrets[1].name", line: 8, msg: `duplicate secret "a" (also secrets[0])`},
	{name: "field not for kind", doc: "secrets:\n  - name: a\n    kind: private-key\n    dns: [x]\n", field: "secrets[0].dns", line: 9, msg: "not allowed for kind private-key (allowed: algorithm)"},
	{name: "size and value", doc: "secrets:\n  - name: a\n    kind: ascii\n    size: 3\n    value: abc\n", field: "secrets[0].value", line: 10, msg: "give size or value, not both"},
	{name: "binary value not base64", doc: "secrets:\n  - name: a\n    kind: binary\n    value: \"!!\"\n", field: "secrets[0].value", line: 9, msg: "a binary value is standard base64"},
	{name: "unknown algorithm", doc: "secrets:\n  - name: a\n    kind: private-key\n    algorithm: P-521\n", field: "secrets[0].algorithm", line: 9, msg: `unknown algorithm "P-521" (known: P-256, P-384, Ed25519, RSA-2048, RSA-3072)`},
	{name: "issuer unknown", doc: "secrets:\n  - {name: redis_ca_cert, kind: x509-ca}\n  - {name: redis_key, kind: private-key}\n  - name: c\n    kind: x509\n    issuer: redis_ca\n", field: "secrets[2].issuer", line: 11, msg: `unknown secret "redis_ca" (known: redis_ca_cert, redis_key, c)`},
	{name: "issuer not a CA", doc: "secrets:\n  - {name: leaf, kind: x509}\n  - name: c\n    kind: x509\n    issuer: leaf\n", field: "secrets[1].issuer", line: 10, msg: `secret "leaf" is x509, want x509-ca`},
	{name: "private_key not a key", doc: "secrets:\n  - {name: pw, kind: ascii}\n  - name: c\n    kind: x509\n    private_key: pw\n", field: "secrets[1].private_key", line: 10, msg: `secret "pw" is ascii, want private-key`},
	{name: "issuer cycle", doc: "secrets:\n  - {name: a, kind: x509-ca, issuer: b}\n  - {name: b, kind: x509-ca, issuer: a}\n", field: "secrets[0].issuer", line: 7, msg: "issuer cycle: a -> b -> a"},
	{name: "self issuer", doc: "secrets:\n  - {name: a, kind: x509-ca, issuer: a}\n", field: "secrets[0].issuer", line: 7, msg: "issuer cycle: a -> a"},
	{name: "bad dns", doc: "secrets:\n  - {name: a, kind: x509, dns: [\"bad host\"]}\n", field: "secrets[0].dns[0]", line: 7, msg: `"bad host" is not a DNS name`},
	{name: "bad valid_for", doc: "secrets:\n  - {name: a, kind: x509, valid_for: 3 weeks}\n", field: "secrets[0].valid_for", line: 7, msg: `valid_for "3 weeks"`},
	{name: "export_public on key", doc: "secrets:\n  - {name: a, kind: private-key, export_public: true}\n", field: "secrets[0].export_public", line: 7, msg: "only certificates (x509, x509-ca) can be public, this secret is private-key"},
	{name: "export to bad name", doc: "secrets:\n  - {name: a, kind: ascii, export: [{session: \"/x\"}]}\n", field: "secrets[0].export[0].session", line: 7, msg: "each '/'-separated part"},
	{name: "export to itself", doc: "secrets:\n  - {name: a, kind: ascii, export: [{session: t/s}]}\n", field: "secrets[0].export[0].session", line: 7, msg: "a session cannot export to itself"},
	{name: "import with generation field", doc: "secrets:\n  - name: a\n    import: {session: o, secret: a}\n    dns: [x]\n", field: "secrets[0].dns", line: 9, msg: "an imported secret takes no dns"},
	{name: "import re-exported", doc: "secrets:\n  - name: a\n    import: {session: o, secret: a}\n    export: [{session: p}]\n", field: "secrets[0].export", line: 9, msg: "an imported secret cannot be exported again"},

	{name: "placeholder names no secret", doc: "    command: run $$SCONE::nope$$\nsecrets:\n  - {name: a, kind: ascii}\n", field: "services[0].command", line: 6, msg: "placeholder $$SCONE::nope$$ names no secret (known: a)"},
	{name: "placeholder unknown format", doc: "    environment: {K: \"$$SCONE::a:upper$$\"}\nsecrets:\n  - {name: a, kind: ascii}\n", field: "services[0].environment.K", line: 6, msg: `unknown format "upper" (known: crt, privatekey, chain, hex, base64)`},
	{name: "placeholder unknown part", doc: "images:\n  - name: i\n    injection_files:\n      - {path: /a, content: \"$$SCONE::a.pem$$\"}\nsecrets:\n  - {name: a, kind: x509}\n", field: "images[0].injection_files[0].content", line: 9, msg: `unknown part "pem"`},
	{name: "key placeholder on a private key", doc: "images:\n  - name: i\n    injection_files:\n      - {path: /a, content: \"$$SCONE::k.key$$\"}\nsecrets:\n  - {name: k, kind: private-key}\n", field: "images[0].injection_files[0].content", line: 9, msg: `format "privatekey" needs an x509 or x509-ca secret, this one is private-key`},
	{name: "privatekey format on ascii", doc: "images:\n  - name: i\n    injection_files:\n      - {path: /a, content: \"$$SCONE::a:privatekey$$\"}\nsecrets:\n  - {name: a, kind: ascii}\n", field: "images[0].injection_files[0].content", line: 9, msg: "needs an x509 or x509-ca secret, this one is ascii"},
	{name: "hex on a certificate", doc: "    command: run $$SCONE::c:hex$$\nsecrets:\n  - {name: c, kind: x509}\n", field: "services[0].command", line: 6, msg: `format "hex" needs an ascii or binary secret`},
	{name: "raw binary in command", doc: "    command: run $$SCONE::b$$\nsecrets:\n  - {name: b, kind: binary}\n", field: "services[0].command", line: 6, msg: "use :hex or :base64"},
	{name: "unterminated placeholder", doc: "    command: run $$SCONE::a\nsecrets:\n  - {name: a, kind: ascii}\n", field: "services[0].command", line: 6, msg: "unterminated placeholder"},

	{name: "unknown mode", doc: "security:\n  attestation:\n    mode: emulation\n", field: "security.attestation.mode", line: 8, msg: `unknown mode "emulation": want hardware or simulation`},
	{name: "unknown tolerance", doc: "security:\n  attestation:\n    tolerate: [debug]\n", field: "security.attestation.tolerate[0]", line: 8, msg: `unknown tolerance "debug" (known: debug-mode, outdated-tcb`},
	{name: "bad advisory", doc: "security:\n  attestation:\n    ignore_advisories: [INTEL-SA-00615, SA-1]\n", field: "security.attestation.ignore_advisories[1]", line: 8, msg: `"SA-1": want an Intel advisory ID like INTEL-SA-00615, or "*" for every advisory`},
	{name: "bad create_sessions entry", doc: "access_policy:\n  create_sessions: [EVERYONE]\n", field: "access_policy.create_sessions[0]", line: 7, msg: "want CREATOR, ANY, NONE or one PEM certificate"},
	{name: "bad session_hash", doc: "secrets:\n  - {name: a, kind: ascii, export: [{session: o, session_hash: abc}]}\n", field: "secrets[0].export[0].session_hash", line: 7, msg: "want the 64 hex characters of the importing session's hash"},
	{name: "sidecar without measurements", doc: "    sidecar: {}\n", field: "services[0].sidecar.mrenclaves", line: 6, msg: "required: the measurements of the sidecar enclaves"},
	{name: "sidecar measurement not hex", doc: "    sidecar: {mrenclaves: [xyz]}\n", field: "services[0].sidecar.mrenclaves[0]", line: 6, msg: `want 64 hex characters, got "xyz"`},
}

func TestParseNewPolicyKeys(t *testing.T) {
	hash := strings.Repeat("AB", 32)
	doc := base + "    sidecar: {mrenclaves: [" + strings.Repeat("C", 64) + "]}\n" +
		"access_policy:\n  create_sessions: [ANY]\n" +
		"security:\n  attestation:\n    tolerate: [hyperthreading]\n    ignore_advisories: [INTEL-SA-00615, \"*\"]\n" +
		"secrets:\n  - {name: a, kind: ascii, export: [{session: o/p, session_hash: " + hash + "}]}\n"
	s, err := session.Parse([]byte(doc))
	require.NoError(t, err)
	require.NoError(t, s.Validate())
	assert.Equal(t, session.Hash([]byte(doc)), s.DocHash())
	assert.Equal(t, []string{session.PolicyAny}, s.AccessPolicy.CreateSessions)
	assert.Equal(t, []string{strings.Repeat("c", 64)}, s.Services[0].Sidecar.MREnclaves, "lowercased")
	assert.True(t, s.Security.Attestation.IgnoresAdvisory("INTEL-SA-99999"), "* ignores every advisory")
	export := s.Secrets[0].Export[0]
	assert.Equal(t, strings.ToLower(hash), export.SessionHash)
	assert.True(t, export.Allows("o/p", strings.ToLower(hash)))
	assert.False(t, export.Allows("o/p", strings.Repeat("cd", 32)), "a pinned export refuses another document of that name")
	assert.False(t, export.Allows("o/q", strings.ToLower(hash)))

	def, err := session.Parse([]byte(base))
	require.NoError(t, err)
	assert.Equal(t, []string{session.PolicyCreator}, def.AccessPolicy.CreateSessions, "create_sessions defaults to CREATOR")
	assert.Nil(t, def.Services[0].Sidecar)
	assert.False(t, def.Security.Attestation.IgnoresAdvisory("INTEL-SA-00615"))
}

func TestParseAndValidateRefusals(t *testing.T) {
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			doc := tt.doc
			if !tt.full {
				doc = base + doc
			}
			s, err := session.Parse([]byte(doc))
			if err == nil {
				err = s.Validate()
			}
			require.Error(t, err)
			var se *session.Error
			require.ErrorAs(t, err, &se)
			assert.Truef(t, hasProblem(se.Problems, tt.field, tt.line, tt.msg),
				"want %s at line %d with %q, got %v", tt.field, tt.line, tt.msg, se.Problems)
			assert.True(t, strings.HasPrefix(err.Error(), "session: "), err.Error())
		})
	}
}

func hasProblem(list []session.Problem, field string, line int, msg string) bool {
	for _, p := range list {
		if p.Field == field && p.Line == line && strings.Contains(p.Msg, msg) {
			return true
		}
	}
	return false
}

func TestValidateReportsEveryProblem(t *testing.T) {
	doc := base + "secrets:\n  - {name: a, kind: nope}\n  - {name: b, kind: x509, issuer: zz}\n"
	s, err := session.Parse([]byte(doc))
	require.NoError(t, err)
	err = s.Validate()
	var se *session.Error
	require.ErrorAs(t, err, &se)
	require.Len(t, se.Problems, 2)
	assert.Equal(t, session.Problem{Field: "secrets[0].kind", Line: 7, Msg: `unknown kind "nope" (known: ascii, binary, private-key, x509-ca, x509)`}, se.Problems[0])
	assert.Equal(t, "secrets[1].issuer", se.Problems[1].Field)
	assert.Equal(t, 8, se.Problems[1].Line)
	assert.Equal(t, `session: 2 problems: line 7: secrets[0].kind: unknown kind "nope" (known: ascii, binary, private-key, x509-ca, x509); `+
		`line 8: secrets[1].issuer: unknown secret "zz" (known: a, b)`, err.Error())
}

func TestParseDocumentErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		msg  string
	}{
		{name: "empty", doc: "", msg: "session: empty document"},
		{name: "two documents", doc: base + "---\n" + base, msg: "more than one YAML document"},
		{name: "syntax", doc: "name: [\n", msg: "session: yaml: line 1"},
		{name: "too large", doc: strings.Repeat("#", session.MaxDocumentSize+1), msg: "at most 1048576 accepted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := session.Parse([]byte(tt.doc))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestParseDefaultsAndNormalization(t *testing.T) {
	s, err := session.Parse([]byte(strings.Replace(base, strings.Repeat("a", 64), strings.Repeat("A", 64), 1) +
		"secrets:\n  - {name: k, kind: private-key}\n  - {name: b, kind: binary}\n  - {name: s, kind: ascii}\n"))
	require.NoError(t, err)
	require.NoError(t, s.Validate())
	assert.Equal(t, []string{session.PolicyCreator}, s.AccessPolicy.Read)
	assert.Equal(t, []string{session.PolicyCreator}, s.AccessPolicy.Update)
	assert.Equal(t, session.ModeHardware, s.Security.Attestation.Mode)
	assert.Equal(t, []string{strings.Repeat("a", 64)}, s.Services[0].MREnclaves)
	assert.Equal(t, session.AlgorithmP256, s.Secrets[0].EffectiveAlgorithm())
	assert.Equal(t, 32, s.Secrets[1].EffectiveSize())
	assert.Equal(t, 20, s.Secrets[2].EffectiveSize())
}

func TestParseValidFor(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{in: "90d", want: 90 * 24 * time.Hour},
		{in: "1y", want: 365 * 24 * time.Hour},
		{in: "720h", want: 720 * time.Hour},
		{in: "0d", err: "must be positive"},
		{in: "-5h", err: "must be positive"},
		{in: "101y", err: "more than 100 years"},
		{in: "99999999999d", err: "want a number of days"},
		{in: "xd", err: "want a number of days"},
		{in: "ay", err: "want a number of years"},
		{in: "soon", err: `want like "90d"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := session.ParseValidFor(tt.in)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestAccessPolicyCertificate(t *testing.T) {
	certPEM, _ := newCA(t, "client")
	indented := "    " + strings.ReplaceAll(strings.TrimSpace(string(certPEM)), "\n", "\n    ")
	doc := base + "access_policy:\n  read: [ANY]\n  update:\n  - |\n" + indented + "\n"
	s, err := session.Parse([]byte(doc))
	require.NoError(t, err)
	require.NoError(t, s.Validate())
	assert.Equal(t, strings.TrimSpace(string(certPEM)), strings.TrimSpace(s.AccessPolicy.Update[0]))

	broken := strings.Replace(doc, "MII", "MIX", 1)
	s, err = session.Parse([]byte(broken))
	require.NoError(t, err)
	err = s.Validate()
	var se *session.Error
	require.ErrorAs(t, err, &se)
	assert.True(t, hasProblem(se.Problems, "access_policy.update[0]", 9, "invalid certificate"), fmt.Sprint(se.Problems))
}

func TestErrorsAs(t *testing.T) {
	_, err := session.Parse([]byte(base + "bogus: 1\n"))
	wrapped := fmt.Errorf("api: %w", err)
	var se *session.Error
	require.ErrorAs(t, wrapped, &se)
	assert.Equal(t, `line 6: bogus: unknown key "bogus" (known: access_policy, images, name, predecessor, secrets, security, services, version)`, se.Problems[0].String())
}

// TestFieldMessagesCarryNoPrefix pins the exact message of the problems whose checks are also
// exported as functions: the problem list carries the field, so the message holds neither the
// package prefix nor the field again, while the exported function's error holds both.
func TestFieldMessagesCarryNoPrefix(t *testing.T) {
	long := strings.Repeat("n", 201)
	tests := []struct {
		name  string
		doc   string
		full  bool
		field string
		msg   string
	}{
		{name: "own name missing", full: true, doc: "version: \"0.3\"\n", field: "name", msg: "required"},
		{name: "own name too long", full: true, doc: "name: " + long + "\nversion: \"0.3\"\n", field: "name", msg: "201 characters, at most 200"},
		{
			name: "own name malformed", full: true, doc: "name: a//b\nversion: \"0.3\"\n", field: "name",
			msg: `name "a//b": each '/'-separated part must be non-empty, not . or .., and hold only letters, digits, '.', '-' and '_'`,
		},
		{
			name: "export to a malformed name", doc: "secrets:\n  - {name: a, kind: ascii, export: [{session: \"/x\"}]}\n",
			field: "secrets[0].export[0].session",
			msg:   `name "/x": each '/'-separated part must be non-empty, not . or .., and hold only letters, digits, '.', '-' and '_'`,
		},
		{
			name: "import from an empty name", doc: "secrets:\n  - {name: a, import: {session: \"\", secret: b}}\n",
			field: "secrets[0].import.session", msg: "name: required",
		},
		{
			name: "import from a long name", doc: "secrets:\n  - {name: a, import: {session: " + long + ", secret: b}}\n",
			field: "secrets[0].import.session", msg: "name: 201 characters, at most 200",
		},
		{name: "command", doc: "    command: echo \"open\n", field: "services[0].command", msg: "unterminated double quote"},
		{
			name: "valid_for", doc: "secrets:\n  - {name: c, kind: x509, valid_for: 5w}\n", field: "secrets[0].valid_for",
			msg: `valid_for "5w": want like "90d", "1y" or "720h": time: unknown unit "w" in duration "5w"`,
		},
		{name: "valid_for days", doc: "secrets:\n  - {name: c, kind: x509, valid_for: xd}\n", field: "secrets[0].valid_for", msg: `valid_for "xd": want a number of days like "90d"`},
		{name: "valid_for zero", doc: "secrets:\n  - {name: c, kind: x509, valid_for: 0y}\n", field: "secrets[0].valid_for", msg: `valid_for "0y": must be positive`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := tt.doc
			if !tt.full {
				doc = base + doc
			}
			s, err := session.Parse([]byte(doc))
			require.NoError(t, err)
			var se *session.Error
			require.ErrorAs(t, s.Validate(), &se)
			var got []string
			for _, p := range se.Problems {
				if p.Field == tt.field {
					got = append(got, p.Msg)
				}
			}
			assert.Equal(t, []string{tt.msg}, got)
		})
	}

	// The exported checks say which package and which field.
	_, err := session.SplitCommand(`echo "open`)
	require.EqualError(t, err, "session: command: unterminated double quote")
	_, err = session.ParseValidFor("0y")
	require.EqualError(t, err, `session: valid_for "0y": must be positive`)
	require.EqualError(t, session.CheckSessionName(""), "session: name: required")
	require.EqualError(t, session.CheckSessionName("a//b"),
		`session: name "a//b": each '/'-separated part must be non-empty, not . or .., and hold only letters, digits, '.', '-' and '_'`)
}
