package proxy

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCPULimit(t *testing.T) {
	tests := []struct {
		name   string
		limit  func() (float64, bool)
		want   float64
		wantOK bool
	}{
		{"v2 no limit", func() (float64, bool) { return parseCPUMax("max 100000\n") }, 0, false},
		{"v2 half a CPU", func() (float64, bool) { return parseCPUMax("50000 100000\n") }, 0.5, true},
		{"v2 two CPUs", func() (float64, bool) { return parseCPUMax("200000 100000\n") }, 2, true},
		{"v2 garbage", func() (float64, bool) { return parseCPUMax("lots\n") }, 0, false},
		{"v1 no limit", func() (float64, bool) { return parseCFS("-1\n", "100000\n") }, 0, false},
		{"v1 a quarter", func() (float64, bool) { return parseCFS("25000\n", "100000\n") }, 0.25, true},
		{"v1 zero period", func() (float64, bool) { return parseCFS("25000\n", "0\n") }, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.limit()
			assert.Equal(t, tt.wantOK, ok)
			assert.InDelta(t, tt.want, got, 1e-9)
		})
	}
}
