package attestation

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/attest/attestapi/attestationpb"
)

// GetNonce is unauthenticated and keeps the config ID with every outstanding nonce: a config
// ID longer than any valid one (session name at most 200, service at most 200) is refused, so
// that a caller cannot make the control plane hold megabytes per nonce.
func TestGetNonceBoundsConfigID(t *testing.T) {
	s, err := NewServer(Config{MACKey: make([]byte, 32)})
	require.NoError(t, err)
	tests := []struct {
		name     string
		configID string
		code     codes.Code
		msg      string
	}{
		{"longest valid", strings.Repeat("s", 200) + "/" + strings.Repeat("v", 200), codes.OK, ""},
		{"one byte too long", strings.Repeat("s", 201) + "/" + strings.Repeat("v", 200), codes.InvalidArgument, "config ID is 402 bytes, at most 401"},
		{"megabyte", strings.Repeat("s", 1<<20) + "/svc", codes.InvalidArgument, "at most 401"},
	}
	for _, tt := range tests {
		resp, err := s.GetNonce(context.Background(), &attestationpb.GetNonceRequest{ConfigId: tt.configID})
		if tt.code == codes.OK {
			require.NoError(t, err, tt.name)
			assert.Len(t, resp.GetNonce(), attestapi.NonceSize, tt.name)
			continue
		}
		require.Error(t, err, tt.name)
		assert.Equal(t, tt.code, status.Code(err), tt.name)
		assert.Contains(t, status.Convert(err).Message(), string(attestapi.ReasonMalformed), tt.name)
		assert.Contains(t, status.Convert(err).Message(), tt.msg, tt.name)
		assert.Less(t, len(status.Convert(err).Message()), 1024, "%s: the refusal must not echo the whole config ID", tt.name)
	}
}
