// Command mine-pod-init is a pod's init: the plugin runs it, bind-mounted
// as /pod-init into an otherwise empty, read-only root file system, in the
// pod's namespaces and under the pod's cgroup, where containerd's CRI runs
// a pause container. It is PID 1 of a pod whose containers share one PID
// namespace, reaping the orphans that land on it, and otherwise the
// process through which kubelet's cAdvisor reads the pod's network
// statistics. It exits on SIGTERM or SIGINT.
//
// Every pod runs one, for the pod's whole life, so what it holds is paid
// once per pod on every node. On amd64 the Makefile links it with its
// entry point at start (start_amd64.s): a few system calls that never
// start Go's runtime, whose heap, threads and stacks would hold 0.7 MB of
// every pod's memory where the process needs one page of stack, about
// what a pause container holds. main is the same loop in Go, for other
// architectures and for a build without the Makefile's flags.
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
