// Command mine-pod-init is a pod's init: the plugin runs it, bind-mounted
// as /pod-init into an otherwise empty, read-only root file system, in the
// pod's namespaces and under the pod's cgroup, where containerd's CRI runs
// a pause container. It is PID 1 of a pod whose containers share one PID
// namespace, reaping the orphans that land on it, and otherwise the
// process through which kubelet's cAdvisor reads the pod's network
// statistics. It exits on SIGTERM or SIGINT.
//
// It is a program of its own, importing nothing but the standard library,
// rather than a mode of the shim binary: every pod runs one, and the
// shim's packages would cost each its start-up (package initialisation)
// and twice its memory.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
