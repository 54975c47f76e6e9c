package session_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/session"
)

func lookupIn(sessions ...*session.Session) session.Lookup {
	return func(name string) (*session.Session, bool) {
		for _, s := range sessions {
			if s.Name == name {
				return s, true
			}
		}
		return nil, true
	}
}

// unreadable is a Lookup for an author who may read none of the sessions.
func unreadable(sessions ...*session.Session) session.Lookup {
	in := lookupIn(sessions...)
	return func(name string) (*session.Session, bool) {
		s, _ := in(name)
		return s, false
	}
}

func problemsOf(t *testing.T, err error) []session.Problem {
	t.Helper()
	var se *session.Error
	require.ErrorAs(t, err, &se)
	return se.Problems
}

func TestCheckImports(t *testing.T) {
	redis, flask := examples(t)
	require.NoError(t, session.CheckImports(flask, lookupIn(redis)))

	tests := []struct {
		name   string
		edit   func(redis, flask *session.Session)
		lookup func(redis *session.Session) session.Lookup
		field  string
		line   int
		msg    string
	}{
		{
			name:   "unknown session",
			lookup: func(*session.Session) session.Lookup { return lookupIn() },
			field:  "secrets[4].import.session", line: 71,
			msg: `unknown session "flask-redis/redis": secret "redis_client_key" imports from it`,
		},
		{
			name:  "no such secret",
			edit:  func(_, f *session.Session) { f.Secrets[6].Import.Secret = "redis_ca" },
			field: "secrets[6].import.secret", line: 80,
			msg: `session "flask-redis/redis" has no secret "redis_ca" (known: redis_key, redis, redis_client_key, redis_client_cert, redis_ca_key, redis_ca_cert)`,
		},
		{
			name:  "not exported to the importer",
			edit:  func(_, f *session.Session) { f.Secrets[4].Import.Secret = "redis_key" },
			field: "secrets[4].import.secret", line: 72,
			msg: `secret "redis_key" of session "flask-redis/redis" is not exported to session "flask-redis/flask" (exported to: none)`,
		},
		{
			name:  "exported to another session",
			edit:  func(r, _ *session.Session) { r.Secrets[5].Export[0].Session = "someone/else" },
			field: "secrets[6].import.secret", line: 80,
			msg: `secret "redis_ca_cert" of session "flask-redis/redis" is not exported to session "flask-redis/flask" (exported to: someone/else)`,
		},
		{
			name:  "kind mismatch",
			edit:  func(_, f *session.Session) { f.Secrets[6].Kind = session.KindX509 },
			field: "secrets[6].kind", line: 77,
			msg: `secret "redis_ca_cert" of session "flask-redis/redis" is x509-ca, not x509`,
		},
		{
			name: "placeholder format on the resolved kind",
			edit: func(_, f *session.Session) {
				f.Images[0].InjectionFiles[4].Content = "$$SCONE::redis_client_key.key$$"
			},
			field: "images[0].injection_files[4].content", line: 52,
			msg: `placeholder $$SCONE::redis_client_key.key$$: format "privatekey" needs an x509 or x509-ca secret, this one is private-key`,
		},
		{
			name:   "an exporter the author may not read: unknown session",
			lookup: func(*session.Session) session.Lookup { return unreadable() },
			field:  "secrets[4].import.session", line: 71,
			msg: `secret "redis_client_key" imports "redis_client_key" from session "flask-redis/redis": not found or not permitted ` +
				`(the exporting session must exist and export "redis_client_key" to session "flask-redis/flask")`,
		},
		{
			name:   "an exporter the author may not read: its secret names stay hidden",
			edit:   func(_, f *session.Session) { f.Secrets[6].Import.Secret = "redis_ca" },
			lookup: func(r *session.Session) session.Lookup { return unreadable(r) },
			field:  "secrets[6].import.session", line: 79,
			msg: `secret "redis_ca_cert" imports "redis_ca" from session "flask-redis/redis": not found or not permitted ` +
				`(the exporting session must exist and export "redis_ca" to session "flask-redis/flask")`,
		},
		{
			name:   "an exporter the author may not read: its export targets stay hidden",
			edit:   func(r, _ *session.Session) { r.Secrets[5].Export[0].Session = "someone/else" },
			lookup: func(r *session.Session) session.Lookup { return unreadable(r) },
			field:  "secrets[6].import.session", line: 79,
			msg: `secret "redis_ca_cert" imports "redis_ca_cert" from session "flask-redis/redis": not found or not permitted ` +
				`(the exporting session must exist and export "redis_ca_cert" to session "flask-redis/flask")`,
		},
		{
			name:  "session_hash pins another document",
			edit:  func(r, _ *session.Session) { r.Secrets[5].Export[0].SessionHash = strings.Repeat("ab", 32) },
			field: "secrets[6].import.secret", line: 80,
			msg: `secret "redis_ca_cert" of session "flask-redis/redis" is exported to session "flask-redis/flask" only with session_hash ` + strings.Repeat("ab", 32) + `; this document's hash is `,
		},
		{
			name:  "hardware exporter, simulation importer",
			edit:  func(r, _ *session.Session) { r.Security.Attestation.Mode = session.ModeHardware },
			field: "secrets[4].import.session", line: 71,
			msg: `session "flask-redis/redis" (security.attestation.mode: hardware) exports to session "flask-redis/flask", which accepts ` +
				`simulated quotes (security.attestation.mode: simulation): a workload attested only by the simulated platform would receive a hardware session's secret`,
		},
		{
			name: "the key of a certificate whose private_key is not exported",
			edit: func(_, f *session.Session) {
				f.Images[0].InjectionFiles[2].Content = "$$SCONE::redis_ca_cert.key$$"
			},
			field: "images[0].injection_files[2].content", line: 48,
			msg: `placeholder $$SCONE::redis_ca_cert.key$$ needs the private key of certificate "redis_ca_cert" of session "flask-redis/redis", ` +
				`but its private_key secret "redis_ca_key" is not exported to "flask-redis/flask" (a certificate export carries the certificate and its chain only)`,
		},
		{
			name: "the key of a certificate with an implicit key",
			edit: func(r, f *session.Session) {
				r.Secrets[5].PrivateKey = ""
				f.Images[0].InjectionFiles[2].Content = "$$SCONE::redis_ca_cert:privatekey$$"
			},
			field: "images[0].injection_files[2].content", line: 48,
			msg: `placeholder $$SCONE::redis_ca_cert:privatekey$$ needs the private key of certificate "redis_ca_cert" of session "flask-redis/redis", ` +
				`whose key is implicit and never leaves it (give the certificate a private_key secret and export that one to "flask-redis/flask" too)`,
		},
		{
			name: "issuer resolved to a key",
			edit: func(_, f *session.Session) {
				f.Secrets[3].Issuer = "redis_client_key"
			},
			field: "secrets[3].issuer", line: 66,
			msg: `secret "redis_client_key" is private-key, want x509-ca`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			redis, flask := examples(t)
			if tt.edit != nil {
				tt.edit(redis, flask)
			}
			lookup := lookupIn(redis)
			if tt.lookup != nil {
				lookup = tt.lookup(redis)
			}
			err := session.CheckImports(flask, lookup)
			require.Error(t, err)
			list := problemsOf(t, err)
			assert.Truef(t, hasProblem(list, tt.field, tt.line, tt.msg), "want %s at line %d with %q, got %v", tt.field, tt.line, tt.msg, list)
		})
	}
}

func TestCheckTogether(t *testing.T) {
	redis, flask := examples(t)
	errs := session.Check([]*session.Session{flask, redis})
	require.Len(t, errs, 2)
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])

	errs = session.Check([]*session.Session{flask})
	assert.Len(t, problemsOf(t, errs[0]), 3, "three imports from a session that is not there")

	redis2, _ := examples(t)
	errs = session.Check([]*session.Session{redis, flask, redis2})
	require.NoError(t, errs[0])
	list := problemsOf(t, errs[2])
	assert.True(t, hasProblem(list, "name", 6, `duplicate session "flask-redis/redis" (also sessions[0])`), "%v", list)

	// Validate's and CheckImports' problems come together, in line order.
	flask.Secrets[0].Kind = "nope"
	flask.Secrets[4].Import.Secret = "redis_key"
	list = problemsOf(t, session.Check([]*session.Session{redis, flask})[1])
	require.Len(t, list, 2)
	assert.Equal(t, "secrets[0].kind", list[0].Field)
	assert.Equal(t, "secrets[4].import.secret", list[1].Field)
	assert.Less(t, list[0].Line, list[1].Line)
}

func TestCheckCreateAndUpdate(t *testing.T) {
	doc := []byte(base)
	current, err := session.Parse(doc)
	require.NoError(t, err)
	require.NoError(t, session.CheckCreate(current))
	hash := session.Hash(doc)
	assert.Len(t, hash, 64)
	assert.Equal(t, hash, session.Hash([]byte(base)), "deterministic")
	assert.NotEqual(t, hash, session.Hash(append([]byte(base), '\n')), "over the exact bytes")

	withPred := func(pred string) *session.Session {
		s, err := session.Parse([]byte(base + "predecessor: " + pred + "\n"))
		require.NoError(t, err)
		return s
	}
	stale := strings.Repeat("0", 64)

	err = session.CheckCreate(withPred(hash))
	require.Error(t, err)
	assert.Equal(t, []session.Problem{{Field: "predecessor", Line: 6,
		Msg: `forbidden when creating session "t/s": only an update names the hash of the session it replaces`}}, problemsOf(t, err))

	require.NoError(t, session.CheckUpdate(withPred(hash), current, hash))
	require.NoError(t, session.CheckUpdate(withPred(strings.ToUpper(hash)), current, hash), "hex case does not matter")

	err = session.CheckUpdate(current, current, hash)
	require.ErrorContains(t, err, `session: line 1: predecessor: required to update session "t/s": set it to the current hash `+hash)

	err = session.CheckUpdate(withPred(stale), current, hash)
	require.ErrorContains(t, err, "session: line 6: predecessor: predecessor is stale: got "+stale+", current is "+hash)

	renamed, err := session.Parse([]byte(strings.Replace(base, "t/s", "t/other", 1) + "predecessor: " + hash + "\n"))
	require.NoError(t, err)
	err = session.CheckUpdate(renamed, current, hash)
	require.ErrorContains(t, err, `name: an update keeps the name: got "t/other", current is "t/s"`)
}
