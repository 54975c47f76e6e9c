package resource

import "strconv"

// The names of docs/xds-conventions.md. The sidecar owns them, because it is the side that
// refuses anything else: the control plane's builder (controlplane/xds) and the test control
// plane (proxy/proxytest) name their resources with these, and the golden tests of
// controlplane/xds run the resources they build through ParseListeners, ParseClusters and
// ParseSecrets.

// The SDS secret names the sidecar knows.
const (
	// SecretSVID is the secret holding the node's X.509-SVID chain, leaf first.
	SecretSVID = "svid"
	// SecretTrustBundle is the secret holding the trust domain's CA bundle.
	SecretTrustBundle = "trust_bundle"
	// KeyProvider is the private_key_provider name of the svid secret: the
	// key is the one the sidecar generated before attesting, and it never
	// leaves the workload.
	KeyProvider = "attestmesh.attested_key"
)

// Type URLs of the resources the sidecar subscribes to.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// InboundName is the name of the inbound listener for a served port:
// inbound|<port>. Its stat_prefix is the same.
func InboundName(port uint32) string { return "inbound|" + strconv.FormatUint(uint64(port), 10) }

// LocalClusterName is the name of the plaintext cluster leading from the
// inbound listener on port to the app's own loopback: local|<port>.
func LocalClusterName(port uint32) string { return "local|" + strconv.FormatUint(uint64(port), 10) }

// OutboundName is the name of the outbound listener, and of its cluster,
// for the connections the app makes to service's port:
// outbound|<service>|<port>.
func OutboundName(service string, port uint32) string {
	return "outbound|" + service + "|" + strconv.FormatUint(uint64(port), 10)
}
