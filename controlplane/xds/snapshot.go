package xds

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	sidecar "github.com/attestmesh/attestmesh/proxy/resource"
)

// bundleState is the trust bundle secret, shared by every snapshot.
type bundleState struct {
	key    [32]byte // hash of the bundle's DER
	secret *tlsv3.Secret
	wire   *anypb.Any // secret marshalled, shared by every response that carries it
	hash   [32]byte   // content hash of secret
}

// wireResources are the resources of one type of a snapshot as state-of-the-world responses
// carry them: marshalled once when built, shared by every response and every stream.
type wireResources struct {
	version string
	names   []string     // sorted
	anys    []*anypb.Any // anys[i] is the resource named names[i]
}

// serviceState is what was published for one service (one SPIFFE ID, all its replicas). Each
// part is rebuilt only when its inputs change, so unchanged parts are shared between successive
// snapshots and unchanged services keep their snapshot object.
type serviceState struct {
	id        spiffeid.ID
	configKey [32]byte // hash of the mesh inputs of the listeners and clusters
	listeners cache.Resources
	clusters  cache.Resources
	wire      [len(wireTypes)]*wireResources // clusters, listeners and secrets, as wireTypes orders them
	refs      []reference                    // what the listeners and clusters reference, checked when built
	svidKey   [32]byte                       // hash of the SVID chain's DER
	svidHash  [32]byte                       // content hash of the SVID secret
	bundleKey [32]byte
	secrets   cache.Resources
	snap      *cache.Snapshot
}

// buildService returns the state of svc, reusing from old what did not change; it returns old
// itself when nothing changed. A new snapshot is validated as ValidateSnapshot does, except that
// resources reused from old (and the trust bundle) were checked when they were built: only the
// new ones are checked again, and the references of all of them. m must be valid.
func buildService(idx map[string]*Service, svc *Service, old *serviceState, b *bundleState, chain []*x509.Certificate) (*serviceState, error) {
	st := &serviceState{id: svc.ID, configKey: configKey(idx, svc), svidKey: hashCerts(chain), bundleKey: b.key}
	configSame := old != nil && old.configKey == st.configKey
	secretsSame := old != nil && old.svidKey == st.svidKey && old.bundleKey == st.bundleKey
	if configSame && secretsSame {
		return old, nil
	}
	var errs []error
	if configSame {
		st.listeners, st.clusters, st.refs = old.listeners, old.clusters, old.refs
		st.wire[wireListeners], st.wire[wireClusters] = old.wire[wireListeners], old.wire[wireClusters]
	} else {
		listeners, clusters := buildConfig(idx, svc)
		var err error
		if st.listeners, st.wire[wireListeners], err = newResources(resource.ListenerType, listeners); err != nil {
			return nil, err
		}
		if st.clusters, st.wire[wireClusters], err = newResources(resource.ClusterType, clusters); err != nil {
			return nil, err
		}
		refs, err := checkItems(st.listeners.Items)
		errs = append(errs, err)
		st.refs = append(st.refs, refs...)
		refs, err = checkItems(st.clusters.Items)
		errs = append(errs, err)
		st.refs = append(st.refs, refs...)
	}
	switch {
	case secretsSame:
		st.secrets, st.svidHash, st.wire[wireSecrets] = old.secrets, old.svidHash, old.wire[wireSecrets]
	case old != nil && old.svidKey == st.svidKey:
		// The trust bundle changed, the SVID did not: its secret is reused as it was checked.
		svid := old.secrets.Items[sidecar.SecretSVID].Resource
		st.svidHash = old.svidHash
		st.secrets, st.wire[wireSecrets] = secretResources(svid, old.wire[wireSecrets].anys[0], st.svidHash, b)
	default:
		svid, err := buildSVIDSecret(svc.ID, chain)
		if err != nil {
			return nil, err
		}
		svidWire, h, err := marshalResource(resource.SecretType, svid)
		if err != nil {
			return nil, err
		}
		_, err = checkResource(svid)
		errs = append(errs, err)
		st.svidHash = h
		st.secrets, st.wire[wireSecrets] = secretResources(svid, svidWire, h, b)
	}
	snap := &cache.Snapshot{}
	snap.Resources[types.Listener] = st.listeners
	snap.Resources[types.Cluster] = st.clusters
	snap.Resources[types.Secret] = st.secrets
	// Consistent looks at the listeners and clusters only: unchanged ones passed it when built.
	errs = append(errs, checkReferences(snap, st.refs, !configSame))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("xds: snapshot for %q not published: %w", svc.ID, err)
	}
	st.snap = snap
	return st, nil
}

// secretResources returns the secrets of a snapshot: the SVID secret svid (marshalled svidWire,
// with content hash svidHash) and the trust bundle b.
func secretResources(svid types.Resource, svidWire *anypb.Any, svidHash [32]byte, b *bundleState) (cache.Resources, *wireResources) {
	v := version(svidHash, b.hash)
	return cache.Resources{
			Version: v,
			Items: map[string]types.ResourceWithTTL{
				sidecar.SecretSVID:        {Resource: svid},
				sidecar.SecretTrustBundle: {Resource: b.secret},
			},
		}, &wireResources{
			version: v,
			names:   []string{sidecar.SecretSVID, sidecar.SecretTrustBundle}, // sorted
			anys:    []*anypb.Any{svidWire, b.wire},
		}
}

// newResources indexes rs, resources of typeURL sorted by name, with a version that is the
// hash of their content, and marshals them for the wire.
func newResources(typeURL string, rs []types.Resource) (cache.Resources, *wireResources, error) {
	hashes := make([][32]byte, 0, len(rs))
	wire := &wireResources{names: make([]string, 0, len(rs)), anys: make([]*anypb.Any, 0, len(rs))}
	for _, r := range rs {
		a, h, err := marshalResource(typeURL, r)
		if err != nil {
			return cache.Resources{}, nil, err
		}
		hashes = append(hashes, h)
		wire.names = append(wire.names, resourceName(r))
		wire.anys = append(wire.anys, a)
	}
	wire.version = version(hashes...)
	return cache.NewResources(wire.version, rs), wire, nil
}

// version is a short hex digest of the content hashes of a type's resources, in order.
func version(hashes ...[32]byte) string {
	h := sha256.New()
	for _, x := range hashes {
		h.Write(x[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// marshalResource returns r marshalled (deterministically, as go-control-plane marshals) in an
// Any of typeURL, and the hash of its content.
func marshalResource(typeURL string, r types.Resource) (*anypb.Any, [32]byte, error) {
	b, err := deterministic.Marshal(r)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("xds: marshal %s: %w", describe(r), err)
	}
	return &anypb.Any{TypeUrl: typeURL, Value: b}, sha256.Sum256(b), nil
}

func hashCerts(certs []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, c := range certs {
		writeBytes(h, c.Raw)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// configKey hashes everything the listeners and clusters of svc are built from.
func configKey(idx map[string]*Service, svc *Service) [32]byte {
	h := sha256.New()
	str := func(s string) { writeBytes(h, []byte(s)) }
	num := func(n uint32) { _ = binary.Write(h, binary.BigEndian, n) }
	count := func(n int) { _ = binary.Write(h, binary.BigEndian, int64(n)) }
	str(svc.Name)
	str(svc.ID.String())
	str(svc.bindAddress())
	count(len(svc.Ports))
	for _, p := range svc.Ports {
		num(p.Port)
		num(p.AppPort)
		count(len(p.AllowedPeers))
		for _, peer := range p.AllowedPeers {
			str(idx[peer].ID.String())
		}
	}
	count(len(svc.Connects))
	for _, c := range svc.Connects {
		str(c.Service)
		str(idx[c.Service].ID.String())
		num(c.Port)
		num(c.LocalPort)
		count(len(c.Endpoints))
		for _, ep := range c.Endpoints {
			str(ep)
		}
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func writeBytes(h interface{ Write([]byte) (int, error) }, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	_, _ = h.Write(n[:])
	_, _ = h.Write(b)
}
