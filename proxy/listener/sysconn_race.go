//go:build linux && race

package listener

import "syscall"

// Under the race detector, rawRead and rawWrite are syscall.Read and syscall.Write: those tell
// the detector that bytes written to a socket happen before their read, which is how the tests'
// goroutines synchronize with the sidecar's; raw system calls would hide it.

func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	return errno(syscall.Read(int(fd), p))
}

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	return errno(syscall.Write(int(fd), p))
}
