//go:build linux && !race

package listener

import (
	"syscall"
	"unsafe"
)

// rawRead and rawWrite make the system call without telling the runtime (see sysConn).
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) { return rawRW(syscall.SYS_READ, fd, p) }

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) { return rawRW(syscall.SYS_WRITE, fd, p) }

func rawRW(trap, fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	// The conversion is in the call's arguments, so p stays reachable through the call (as in
	// syscall.Read and syscall.Write).
	n, _, err := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p))) //nolint:gosec // G103: see above

	return int(n), err //nolint:gosec // G115: at most len(p)
}
