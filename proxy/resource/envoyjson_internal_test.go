package resource

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestJSONDuration: durations print as protojson prints them.
func TestJSONDuration(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, 5 * time.Second, time.Hour, 1500 * time.Millisecond, time.Nanosecond,
		-time.Nanosecond, -1500 * time.Millisecond, 1234567 * time.Microsecond, math.MaxInt64, math.MinInt64 + 1} {
		want, err := protojson.Marshal(durationpb.New(d))
		require.NoError(t, err)
		assert.Equal(t, string(want), `"`+jsonDuration(d)+`"`, "%v", d)
	}
}
