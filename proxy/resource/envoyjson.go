package resource

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// The admin endpoint's /config_dump shows listeners and clusters in the shape of Envoy's JSON
// (proto field names). The sidecar keeps no copy of the resources as received: these are the
// fields it accepted and acts on, with its defaults filled in.

// EnvoyJSON returns the listener as Envoy's Listener JSON.
func (l *Listener) EnvoyJSON() map[string]any {
	tp := map[string]any{
		"@type":       "type.googleapis.com/" + tcpProxyMessage,
		"stat_prefix": l.StatPrefix,
		"cluster":     l.Cluster,
	}
	tp["idle_timeout"] = jsonDuration(l.IdleTimeout) // 0s: none
	fc := map[string]any{"filters": []any{map[string]any{"name": tcpProxyFilter, "typed_config": tp}}}
	if l.Peers != nil {
		fc["transport_socket"] = map[string]any{"name": tlsTransportSocket, "typed_config": map[string]any{
			"@type":                      "type.googleapis.com/" + downstreamTLSName,
			"require_client_certificate": true,
			"common_tls_context":         l.Peers.envoyJSON(),
		}}
	}
	return map[string]any{"name": l.Name, "address": jsonAddress(l.Address), "filter_chains": []any{fc}}
}

// EnvoyJSON returns the cluster as Envoy's Cluster JSON.
func (c *Cluster) EnvoyJSON() map[string]any {
	eps := make([]any, 0, len(c.Endpoints))
	for _, e := range c.Endpoints {
		eps = append(eps, map[string]any{"endpoint": map[string]any{"address": jsonAddress(e)}})
	}
	out := map[string]any{
		"name":            c.Name,
		"type":            "STATIC",
		"connect_timeout": jsonDuration(c.ConnectTimeout),
		"load_assignment": map[string]any{"cluster_name": c.Name, "endpoints": []any{map[string]any{"lb_endpoints": eps}}},
	}
	if c.TLS != nil {
		utc := map[string]any{
			"@type":              "type.googleapis.com/" + upstreamTLSName,
			"common_tls_context": c.TLS.Peers.envoyJSON(),
		}
		if c.TLS.SNI != "" {
			utc["sni"] = c.TLS.SNI
		}
		out["transport_socket"] = map[string]any{"name": tlsTransportSocket, "typed_config": utc}
	}
	return out
}

func (p *PeerPolicy) envoyJSON() map[string]any {
	ads := map[string]any{"ads": map[string]any{}}
	sans := make([]any, 0, len(p.Matchers))
	for _, m := range p.Matchers {
		kind, id, _ := strings.Cut(m, ":")
		sans = append(sans, map[string]any{"san_type": "URI", "matcher": map[string]any{kind: id}})
	}
	return map[string]any{
		"tls_certificate_sds_secret_configs": []any{map[string]any{"name": p.CertSecret, "sds_config": ads}},
		"combined_validation_context": map[string]any{
			"default_validation_context":           map[string]any{"match_typed_subject_alt_names": sans},
			"validation_context_sds_secret_config": map[string]any{"name": p.BundleSecret, "sds_config": ads},
		},
	}
}

func jsonAddress(hostport string) map[string]any {
	host, port, _ := net.SplitHostPort(hostport)
	p, _ := strconv.ParseUint(port, 10, 32)
	return map[string]any{"socket_address": map[string]any{"address": host, "port_value": p}}
}

// jsonDuration prints a duration as protojson does: seconds with 0, 3, 6 or 9 decimals.
func jsonDuration(d time.Duration) string {
	sign, secs, nanos := "", int64(d/time.Second), int64(d%time.Second)
	if d < 0 {
		sign, secs, nanos = "-", -secs, -nanos
	}
	s := sign + strconv.FormatInt(secs, 10)
	if nanos != 0 {
		frac := fmt.Sprintf("%09d", nanos)
		for strings.HasSuffix(frac, "000") {
			frac = strings.TrimSuffix(frac, "000")
		}
		s += "." + frac
	}
	return s + "s"
}
