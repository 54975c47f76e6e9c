package proxytest

import "runtime"

// Allocated returns the bytes f allocates. It reads the process's counters, so the tests
// that measure with it must not run in parallel with others.
func Allocated(f func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
