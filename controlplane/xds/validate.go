package xds

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// ValidateSnapshot checks a snapshot before it is published: ValidateAll on every resource and
// on every typed config inside its Any fields (unpacked, recursively, since ValidateAll does not
// open Any), that every SDS secret a listener or cluster names is in the snapshot, that every
// tcp_proxy cluster is in the snapshot, and snapshot.Consistent. The error names the resource and
// the field path.
func ValidateSnapshot(snap *cache.Snapshot) error {
	if snap == nil {
		return errors.New("xds: validate: nil snapshot")
	}
	var errs []error
	var refs []reference
	for _, typ := range []types.ResponseType{types.Listener, types.Cluster, types.Secret} {
		r, err := checkItems(snap.Resources[typ].Items)
		errs = append(errs, err)
		refs = append(refs, r...)
	}
	errs = append(errs, checkReferences(snap, refs, true))
	return errors.Join(errs...)
}

// checkItems runs checkResource on items in name order.
func checkItems(items map[string]types.ResourceWithTTL) ([]reference, error) {
	names := make([]string, 0, len(items))
	for name := range items {
		names = append(names, name)
	}
	slices.Sort(names)
	var errs []error
	var refs []reference
	for _, name := range names {
		r, err := checkResource(items[name].Resource)
		errs = append(errs, err)
		refs = append(refs, r...)
	}
	return refs, errors.Join(errs...)
}

// checkReferences checks that every reference resolves within snap, and, if config, that snap is
// Consistent: a check of the routes and endpoints that the listeners and clusters name, which
// are unchanged when config is false.
func checkReferences(snap *cache.Snapshot, refs []reference, config bool) error {
	var errs []error
	secrets := snap.Resources[types.Secret].Items
	clusters := snap.Resources[types.Cluster].Items
	for _, r := range refs {
		var ok bool
		switch r.typ {
		case resource.SecretType:
			_, ok = secrets[r.name]
		case resource.ClusterType:
			_, ok = clusters[r.name]
		}
		if !ok {
			errs = append(errs, fmt.Errorf("xds: %s: %s references %s %q, which is not in the snapshot",
				r.from, r.path, typeShort(r.typ), r.name))
		}
	}
	if !config {
		return errors.Join(errs...)
	}
	if err := snap.Consistent(); err != nil {
		errs = append(errs, fmt.Errorf("xds: snapshot inconsistent: %w", err))
	}
	return errors.Join(errs...)
}

// reference is a name one resource uses to refer to another.
type reference struct {
	from string // the referring resource, e.g. listener "inbound|6379"
	path string // the field path of the reference inside it
	typ  resource.Type
	name string
}

type validator interface{ ValidateAll() error }

// checkResource validates r and every message inside its Any fields and returns the SDS secret
// and tcp_proxy cluster names it references.
func checkResource(r types.Resource) ([]reference, error) {
	from := describe(r)
	w := walker{from: from}
	w.walk(r.ProtoReflect(), "")
	if v, ok := r.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			w.errs = append([]error{fmt.Errorf("xds: %s: %w", from, err)}, w.errs...)
		}
	}
	return w.refs, errors.Join(w.errs...)
}

func describe(r types.Resource) string {
	switch r := r.(type) {
	case *listener.Listener:
		return fmt.Sprintf("listener %q", r.GetName())
	case *cluster.Cluster:
		return fmt.Sprintf("cluster %q", r.GetName())
	case *tlsv3.Secret:
		return fmt.Sprintf("secret %q", r.GetName())
	}
	return fmt.Sprintf("%T %q", r, cache.GetResourceName(r))
}

func typeShort(t resource.Type) string {
	switch t {
	case resource.SecretType:
		return "secret"
	case resource.ClusterType:
		return "cluster"
	}
	return t
}

// walker visits every populated message field, unpacks Any fields and validates what is inside,
// and collects references.
type walker struct {
	from string
	errs []error
	refs []reference
}

func (w *walker) walk(m protoreflect.Message, path string) {
	switch v := m.Interface().(type) {
	case *anypb.Any:
		w.any(v, path)
		return
	case *tlsv3.SdsSecretConfig:
		w.refs = append(w.refs, reference{from: w.from, path: path, typ: resource.SecretType, name: v.GetName()})
	case *tcpproxy.TcpProxy:
		if c := v.GetCluster(); c != "" {
			w.refs = append(w.refs, reference{from: w.from, path: path + ".cluster", typ: resource.ClusterType, name: c})
		}
		for i, wc := range v.GetWeightedClusters().GetClusters() {
			p := path + ".weighted_clusters.clusters[" + strconv.Itoa(i) + "].name"
			w.refs = append(w.refs, reference{from: w.from, path: p, typ: resource.ClusterType, name: wc.GetName()})
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		name := string(fd.Name())
		if path != "" {
			name = path + "." + name
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := val.List()
			for i := range l.Len() {
				w.walk(l.Get(i).Message(), name+"["+strconv.Itoa(i)+"]")
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			val.Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				w.walk(v.Message(), name+"["+k.String()+"]")
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			w.walk(val.Message(), name)
		}
		return true
	})
}

func (w *walker) any(a *anypb.Any, path string) {
	inner, err := a.UnmarshalNew()
	if err != nil {
		w.errs = append(w.errs, fmt.Errorf("xds: %s: %s: cannot unpack %q: %w", w.from, path, a.GetTypeUrl(), err))
		return
	}
	if v, ok := inner.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			w.errs = append(w.errs, fmt.Errorf("xds: %s: %s (%s): %w", w.from, path, inner.ProtoReflect().Descriptor().FullName(), err))
		}
	}
	w.walk(inner.ProtoReflect(), path)
}
