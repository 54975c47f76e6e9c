package injector

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/attestmesh/attestmesh/controlplane/session"
)

const testSession = `name: flask-redis/flask
version: "0.3"
services:
  - name: flask_restapi
    image_name: flask_restapi_image
    mrenclaves: ["0000000000000000000000000000000000000000000000000000000000000000"]
    command: python3 /app/rest_api.py
  - name: worker
    mrenclaves: ["0000000000000000000000000000000000000000000000000000000000000000"]
    command: python3 /app/worker.py
images:
  - name: flask_restapi_image
    injection_files:
      - path: /tls/flask.crt
        content: crt
      - path: /tls/flask.key
        content: key
      - path: /etc/redis/client.crt
        content: crt
security:
  attestation:
    mode: simulation
`

func TestSessionDirs(t *testing.T) {
	s, err := session.Parse([]byte(testSession))
	require.NoError(t, err)
	lookup := SessionDirs(func(_ context.Context, name string) (*session.Session, error) {
		if name == s.Name {
			return s, nil
		}
		return nil, fmt.Errorf("session %q: %w", name, ErrUnknownConfigID)
	})
	tests := []struct {
		id      string
		want    []string
		unknown bool
	}{
		{"flask-redis/flask/flask_restapi", []string{"/tls", "/tls", "/etc/redis"}, false},
		{"flask-redis/flask/worker", nil, false},
		{"flask-redis/flask/nosuch", nil, true},
		{"other/flask_restapi", nil, true},
		{"noslash", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			got, err := lookup.InjectionDirs(t.Context(), tt.id)
			if tt.unknown {
				require.ErrorIs(t, err, ErrUnknownConfigID)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
