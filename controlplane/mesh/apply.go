package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/fspf"
	"github.com/attestmesh/attestmesh/controlplane/mgmtapi"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// SessionAPI is the part of the management API that Apply uses (mgmtapi.Client implements it).
type SessionAPI interface {
	Create(ctx context.Context, doc []byte) (*mgmtapi.SessionResponse, error)
	Update(ctx context.Context, name string, doc []byte) (*mgmtapi.SessionResponse, error)
	Get(ctx context.Context, name string) (*mgmtapi.SessionResponse, error)
}

// Change is what Apply did to one session.
type Change struct {
	Session string
	Action  string // "created", "updated", "unchanged"
	Hash    string
	Secrets []string // generated or re-issued
}

// FSPFVarPrefix returns the prefix of the variables that carry a service's protected file
// system: <PREFIX>_FSPF_PATH, <PREFIX>_FSPF_KEY and <PREFIX>_FSPF_TAG, PREFIX being the service
// name in upper case with '-' as '_' (service "api": API_FSPF_KEY).
func FSPFVarPrefix(service string) string {
	return strings.ToUpper(strings.ReplaceAll(service, "-", "_"))
}

// FSPFSecret is a protected file system's key and tag, both hex, as a session holds them.
type FSPFSecret struct{ Key, Tag string }

// EncryptFSPF encrypts every service's fspf src into dst (replacing dst, a build output) and
// adds the resulting path, key and tag to vars. A non-empty outDir replaces every dst with
// outDir/<service>.
//
// previous, when set, returns the key and tag that a service's session currently holds: when
// dst still decrypts with them to exactly the files of src, dst is kept with that key and tag,
// so that applying an unchanged mesh again changes no session.
func (m *Mesh) EncryptFSPF(vars map[string]string, outDir string, previous func(s *Service) (FSPFSecret, bool)) error {
	for i := range m.Services {
		s := &m.Services[i]
		if s.FSPF == nil {
			continue
		}
		src, dst := m.path(s.FSPF.Src), m.path(s.FSPF.Dst)
		if outDir != "" {
			dst = filepath.Join(outDir, s.Name)
		}
		abs, err := filepath.Abs(dst)
		if err != nil {
			return fmt.Errorf("mesh: services %s: fspf: %w", s.Name, err)
		}
		p := FSPFVarPrefix(s.Name)
		if previous != nil {
			if prev, ok := previous(s); ok && sameTree(src, dst, prev) {
				vars[p+"_FSPF_PATH"], vars[p+"_FSPF_KEY"], vars[p+"_FSPF_TAG"] = abs, prev.Key, prev.Tag
				continue
			}
		}
		if err := os.RemoveAll(dst); err != nil {
			return fmt.Errorf("mesh: services %s: fspf: %w", s.Name, err)
		}
		key, tag, err := fspf.Encrypt(src, dst, rand.Reader)
		if err != nil {
			return fmt.Errorf("mesh: services %s: fspf: %w", s.Name, err)
		}
		vars[p+"_FSPF_PATH"], vars[p+"_FSPF_KEY"], vars[p+"_FSPF_TAG"] = abs, key.Hex(), tag.String()
	}
	return nil
}

// sameTree reports whether the encrypted tree dst decrypts with prev to exactly the regular
// files (paths and contents) of src.
func sameTree(src, dst string, prev FSPFSecret) bool {
	key, err := fspf.ParseKey(prev.Key)
	if err != nil {
		return false
	}
	tag, err := fspf.ParseTag(prev.Tag)
	if err != nil {
		return false
	}
	tree, err := fspf.Decrypt(dst, key, tag)
	if err != nil {
		return false
	}
	defer tree.Wipe()
	want := map[string][]byte{}
	for _, f := range tree.Files {
		want[f.Path] = f.Data
	}
	root, err := os.OpenRoot(src)
	if err != nil {
		return false
	}
	defer root.Close()
	fsys := root.FS()
	same := true
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		w, ok := want[p]
		if !ok || !bytes.Equal(w, data) {
			same = false
			return fs.SkipAll
		}
		delete(want, p)
		return nil
	})
	return err == nil && same && len(want) == 0
}

// SessionFSPF returns the previous-key lookup for EncryptFSPF over the management API: the
// fspf key and tag that each service's current session holds (nothing when the session does
// not exist yet or the client may not read it).
func SessionFSPF(ctx context.Context, api SessionAPI) func(s *Service) (FSPFSecret, bool) {
	return func(s *Service) (FSPFSecret, bool) {
		name, service, err := attestapi.SplitConfigID(s.ConfigID)
		if err != nil {
			return FSPFSecret{}, false
		}
		cur, err := api.Get(ctx, name)
		if err != nil {
			return FSPFSecret{}, false
		}
		sess, err := session.Parse([]byte(cur.Session))
		if err != nil {
			return FSPFSecret{}, false
		}
		svc, ok := sess.Service(service)
		if !ok || svc.FSPFKey == "" {
			return FSPFSecret{}, false
		}
		return FSPFSecret{Key: svc.FSPFKey, Tag: svc.FSPFTag}, true
	}
}

func (m *Mesh) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(m.Dir, p)
}

// Apply creates or updates the mesh's sessions from their templates expanded with vars, in
// order. An update carries the current hash as predecessor; a session whose document did not
// change is left alone. Progress goes to out.
func (m *Mesh) Apply(ctx context.Context, api SessionAPI, vars map[string]string, out io.Writer) ([]Change, error) {
	docs, err := m.Documents(vars)
	if err != nil {
		return nil, err
	}
	var changes []Change
	parsed := make([]*session.Session, len(docs))
	for i, doc := range docs {
		s, err := session.Parse(doc)
		if err != nil {
			return changes, fmt.Errorf("mesh: %s: %w", m.Sessions[i], err)
		}
		if s.Predecessor != "" {
			return changes, fmt.Errorf("mesh: %s: a template must not set predecessor: apply sets it", m.Sessions[i])
		}
		parsed[i] = s
	}
	nsChanges, err := ensureNamespaces(ctx, api, parsed, m.Name, out)
	changes = append(changes, nsChanges...)
	if err != nil {
		return changes, err
	}
	for i, doc := range docs {
		s := parsed[i]
		ch, err := applyOne(ctx, api, s.Name, doc)
		if err != nil {
			return changes, fmt.Errorf("mesh: session %s (%s): %w", s.Name, m.Sessions[i], err)
		}
		changes = append(changes, ch)
		switch ch.Action {
		case "unchanged":
			fmt.Fprintf(out, "session %s unchanged (hash %.12s)\n", ch.Session, ch.Hash)
		default:
			fmt.Fprintf(out, "session %s %s (hash %.12s; secrets generated or re-issued: %s)\n", ch.Session, ch.Action, ch.Hash, orNone(ch.Secrets))
		}
	}
	return changes, nil
}

// NamespaceDocument is the session that Apply creates for a namespace that does not exist yet:
// it holds nothing, and only its creator may read or update it or create sessions in it.
func NamespaceDocument(name string) []byte {
	return fmt.Appendf(nil, "# The namespace of the sessions named %s/...: only its creator may create sessions in it.\n"+
		"name: %s\nversion: \"0.3\"\naccess_policy:\n  read: [CREATOR]\n  update: [CREATOR]\n  create_sessions: [CREATOR]\n", name, name)
}

// ensureNamespaces creates, outermost first, every namespace session that the sessions need
// ("a" and "a/b" for "a/b/c") and that does not exist yet, owned by the caller; and the session
// the mesh is named after (its registration needs one that its registrant controls), unless the
// mesh's own sessions include it.
func ensureNamespaces(ctx context.Context, api SessionAPI, sessions []*session.Session, meshName string, out io.Writer) ([]Change, error) {
	var need []string
	want := func(ns string) {
		if !slices.Contains(need, ns) && !slices.ContainsFunc(sessions, func(x *session.Session) bool { return x.Name == ns }) {
			need = append(need, ns)
		}
	}
	want(meshName)
	for _, s := range sessions {
		parts := strings.Split(s.Name, "/")
		for i := 1; i < len(parts); i++ {
			want(strings.Join(parts[:i], "/"))
		}
	}
	slices.SortStableFunc(need, func(a, b string) int { return strings.Count(a, "/") - strings.Count(b, "/") })
	var changes []Change
	for _, ns := range need {
		_, err := api.Get(ctx, ns)
		var ae *mgmtapi.APIError
		switch {
		case err == nil:
			continue
		case !errors.As(err, &ae) || ae.Status != http.StatusNotFound:
			return changes, fmt.Errorf("mesh: namespace session %s: %w", ns, err)
		}
		resp, err := api.Create(ctx, NamespaceDocument(ns))
		if errors.As(err, &ae) && ae.Status == http.StatusConflict {
			return changes, fmt.Errorf("mesh: namespace session %s exists and belongs to another client: ask its owner to let you "+
				"create sessions in it (its access_policy.create_sessions), or name the sessions in a namespace of your own", ns)
		}
		if err != nil {
			return changes, fmt.Errorf("mesh: namespace session %s: %w", ns, err)
		}
		changes = append(changes, Change{Session: ns, Action: "created", Hash: resp.Hash})
		fmt.Fprintf(out, "namespace %s created (hash %.12s; only you may create sessions in it)\n", ns, resp.Hash)
	}
	return changes, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

const predecessorKey = "predecessor: "

func applyOne(ctx context.Context, api SessionAPI, name string, doc []byte) (Change, error) {
	cur, err := api.Get(ctx, name)
	var ae *mgmtapi.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		resp, err := api.Create(ctx, doc)
		if err != nil {
			return Change{}, err
		}
		return Change{Session: name, Action: "created", Hash: resp.Hash, Secrets: resp.Changed}, nil
	}
	if err != nil {
		return Change{}, err
	}
	if bytes.Equal(stripPredecessor([]byte(cur.Session)), doc) {
		return Change{Session: name, Action: "unchanged", Hash: cur.Hash}, nil
	}
	resp, err := api.Update(ctx, name, append([]byte(predecessorKey+cur.Hash+"\n"), doc...))
	if err != nil {
		return Change{}, err
	}
	return Change{Session: name, Action: "updated", Hash: resp.Hash, Secrets: resp.Changed}, nil
}

// stripPredecessor removes the first line if it is the predecessor line Apply adds.
func stripPredecessor(doc []byte) []byte {
	if bytes.HasPrefix(doc, []byte(predecessorKey)) {
		if i := bytes.IndexByte(doc, '\n'); i >= 0 {
			return doc[i+1:]
		}
	}
	return doc
}
