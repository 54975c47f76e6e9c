package session_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/attestmesh/attestmesh/controlplane/session"
)

// fakeValues gives every secret of s a value of its kind, so that rendering goes through
// every placeholder.
func fakeValues(s *session.Session) session.ValueMap {
	vals := session.ValueMap{}
	for _, sec := range s.Secrets {
		pem := []byte("-----BEGIN X-----\n" + sec.Name + "\n-----END X-----\n")
		vals[sec.Name] = session.Value{Kind: sec.Kind, Bytes: []byte(sec.Name), KeyPEM: pem, CertPEM: pem, ChainPEM: pem}
	}
	return vals
}

// FuzzParse feeds untrusted session documents through Parse, Validate, the cross-session and
// create checks, and rendering. The seed corpus is testdata/fuzz/FuzzParse plus the examples.
func FuzzParse(f *testing.F) {
	f.Add(exampleDoc(f, "redis-session.yaml"))
	f.Add(exampleDoc(f, "flask-session.yaml"))
	f.Add([]byte(base))
	for _, r := range refusals {
		if r.full {
			f.Add([]byte(r.doc))
		} else {
			f.Add([]byte(base + r.doc))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := session.Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		verr := s.Validate()
		errs := session.Check([]*session.Session{s})
		if verr == nil && errs[0] == nil {
			// A valid session (hence without imports) renders every service.
			for _, svc := range s.Services {
				if _, err := s.RenderService(svc.Name, fakeValues(s)); err != nil {
					t.Fatalf("valid session, service %q does not render: %v", svc.Name, err)
				}
			}
		}
		_ = session.CheckCreate(s)
		_ = session.CheckImports(s, func(string) (*session.Session, bool) { return s, true })
	})
}

// FuzzExpand checks that Expand never panics and leaves text without '$' untouched.
func FuzzExpand(f *testing.F) {
	f.Add([]byte("name: $A\nx: ${B}\ny: $$SCONE::c.crt$$ $"))
	f.Add([]byte("${"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := session.Expand(data, map[string]string{"A": "a", "B": "$B"})
		if err == nil && !bytes.ContainsRune(data, '$') && !bytes.Equal(out, data) {
			t.Fatalf("changed text without variables: %q -> %q", data, out)
		}
	})
}

// FuzzSplitCommand checks that splitting never panics and that words without quotes,
// backslashes or blanks come back unchanged.
func FuzzSplitCommand(f *testing.F) {
	f.Add(`python3 "a b" 'c' d\ e`)
	f.Fuzz(func(t *testing.T, cmd string) {
		words, err := session.SplitCommand(cmd)
		if err == nil && cmd != "" && !strings.ContainsAny(cmd, "'\"\\ \t\n\r") && (len(words) != 1 || words[0] != cmd) {
			t.Fatalf("%q split into %q", cmd, words)
		}
	})
}
