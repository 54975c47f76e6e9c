package h2

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// NewServer fills what the Config leaves unset (zero or negative) with the documented defaults,
// and keeps what it sets.
func TestConfigDefaults(t *testing.T) {
	_, err := NewServer(Config{})
	require.ErrorContains(t, err, "TLS is required")

	s, err := NewServer(Config{TLS: &tls.Config{}, MaxRecvMsgSize: -1, WriteTimeout: -time.Second})
	require.NoError(t, err)
	want := Config{
		MaxConcurrentStreams: defaultMaxStreams, MaxRecvMsgSize: defaultMaxRecvMsgSize,
		HandshakeTimeout: defaultHandshakeTimeout, MaxHandshakes: defaultMaxHandshakes,
		WriteTimeout: defaultWriteTimeout, KeepaliveTime: defaultKeepaliveTime,
		KeepaliveTimeout: defaultKeepaliveTimeout, MinPingInterval: defaultMinPingInterval,
	}
	got := s.cfg
	got.TLS, got.Logger = nil, nil
	assert.Equal(t, want, got)

	set := Config{
		TLS: &tls.Config{}, MaxConcurrentStreams: 3, MaxRecvMsgSize: 5, HandshakeTimeout: 7 * time.Second,
		MaxHandshakes: 11, WriteTimeout: 13 * time.Second, KeepaliveTime: 17 * time.Second,
		KeepaliveTimeout: 19 * time.Second, MinPingInterval: 23 * time.Second,
	}
	s, err = NewServer(set)
	require.NoError(t, err)
	got = s.cfg
	got.TLS, set.TLS = nil, nil
	assert.Equal(t, set, got)
}
