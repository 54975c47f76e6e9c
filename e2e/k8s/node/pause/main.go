//go:build e2e_k8s

// Command pause is the pod sandbox ("pause") image of the e2e/k8s/node harness: PID 1 of every
// pod's sandbox, which holds the pod's namespaces. It sleeps until SIGTERM or SIGINT, and reaps
// the children it inherits when the pod shares its process namespace. Build it static
// (CGO_ENABLED=0); node.Start does, and imports it as node.PauseImage.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run())
}

func run() int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return 0
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
	return 0
}
