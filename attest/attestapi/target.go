package attestapi

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// pickFirstShuffled connects to one control-plane replica, chosen at random so that clients
// spread over the replicas, and moves to another one when it fails. One connection, hence one
// replica, carries an attestation's GetNonce and Attest (see OtherReplicaNonce).
const pickFirstShuffled = `{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": true}}]}`

// pickFirstInOrder is pick_first over addresses that the client has already put in the order
// it prefers (see Client).
const pickFirstInOrder = `{"loadBalancingConfig": [{"pick_first": {}}]}`

// Target turns a control-plane address as users give it into a gRPC target and the options
// that resolve it: "host:port" as is; "host:port,host:port,..." (several replicas) as one
// target over all of them; "dns:///name:port" as gRPC's DNS resolver does (every address the
// name has, e.g. a headless Service). With several addresses a connection uses one replica at
// a time and fails over to another.
func Target(addrs string) (string, []grpc.DialOption, error) {
	list, err := replicaList(addrs)
	if err != nil || list == nil {
		return addrs, []grpc.DialOption{grpc.WithDefaultServiceConfig(pickFirstShuffled)}, err
	}
	target, opt := listTarget(list)
	return target, []grpc.DialOption{grpc.WithDefaultServiceConfig(pickFirstShuffled), opt}, nil
}

// replicaList splits a comma-separated list of host:port; it returns nil for one address or
// a dns:/// target.
func replicaList(addrs string) ([]string, error) {
	if strings.HasPrefix(addrs, "dns:///") || !strings.Contains(addrs, ",") {
		return nil, nil
	}
	var list []string
	for a := range strings.SplitSeq(addrs, ",") {
		a = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("attestapi: address %q in %q is not host:port", a, addrs)
		}
		list = append(list, a)
	}
	return list, nil
}

// listTarget is a target over the addresses in list, in that order, and the resolver that
// serves them.
func listTarget(list []string) (string, grpc.DialOption) {
	var state resolver.State
	for _, a := range list {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	var id [6]byte
	_, _ = rand.Read(id[:]) // crypto/rand does not fail
	r := manual.NewBuilderWithScheme("attestmesh-" + hex.EncodeToString(id[:]))
	r.InitialState(state)
	return r.Scheme() + ":///controlplane", grpc.WithResolvers(r)
}

// OtherReplicaNonce is what a control-plane replica says of a nonce that another replica
// issued (reason nonce_invalid): the client's connection moved between GetNonce and Attest,
// and it asks for a nonce again.
const OtherReplicaNonce = "nonce was issued by another control-plane replica: ask for a nonce and attest over one connection"
