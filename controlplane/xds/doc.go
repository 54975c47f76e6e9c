// Package xds is the control plane's xDS server: it builds the Envoy v3 listeners, clusters and
// secrets of each mesh service (docs/xds-conventions.md), validates them, including the typed
// configs inside Any fields, and serves them over ADS with mutual TLS, where the node is the
// SPIFFE ID of the client certificate and never the node ID the client claims.
package xds
