package attestapi

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxConfigIDSize bounds a config ID: a session name of at most 200 bytes, '/', a service name
// of at most 200 bytes.
const MaxConfigIDSize = 401

// ControlPlanePath is the path of the control plane's own SPIFFE ID, which its servers present.
const ControlPlanePath = "/controlplane"

// ControlPlaneID returns the control plane's SPIFFE ID in trust domain td.
func ControlPlaneID(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := spiffeid.FromPath(td, ControlPlanePath)
	if err != nil {
		panic(err) // a constant, valid path
	}
	return id
}

// SplitConfigID splits "session/service" at its last '/': a session name may itself hold '/'.
func SplitConfigID(configID string) (session, service string, err error) {
	if len(configID) > MaxConfigIDSize {
		return "", "", fmt.Errorf("config ID is %d bytes, at most %d", len(configID), MaxConfigIDSize)
	}
	i := strings.LastIndexByte(configID, '/')
	if i <= 0 || i == len(configID)-1 {
		return "", "", fmt.Errorf("config ID %q: want SESSION/SERVICE", configID)
	}
	return configID[:i], configID[i+1:], nil
}

// SPIFFEID returns the SPIFFE ID that config ID "session/service" stands for in trust domain
// td: spiffe://<td>/<session>/<service>, each '/'-separated part of the session a path segment.
func SPIFFEID(td spiffeid.TrustDomain, configID string) (spiffeid.ID, error) {
	session, service, err := SplitConfigID(configID)
	if err != nil {
		return spiffeid.ID{}, err
	}
	id, err := spiffeid.FromSegments(td, append(strings.Split(session, "/"), service)...)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("config ID %q is not a valid SPIFFE path: %w", configID, err)
	}
	return id, nil
}
