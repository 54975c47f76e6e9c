//go:build !linux

package listener

import (
	"net"
	"syscall"
)

// rawIO returns c: raw system calls are used on Linux only (see sysconn_linux.go).
func rawIO(c net.Conn) net.Conn { return c }

// writeFD writes p to the non-blocking socket fd once.
func writeFD(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }
