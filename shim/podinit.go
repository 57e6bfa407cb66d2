package shim

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// podInit is `containerd-shim-mine-v2 pod-init`: the init of a pod whose
// containers share one PID namespace. It holds the namespace, reaps the
// orphans that land on it, and exits on SIGTERM or SIGINT. The plugin
// runs it from a root file system that holds nothing but this binary, so
// a pod never needs a pause image.
func podInit() error {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGCHLD)
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			return nil
		}
		for {
			pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
	return nil
}
