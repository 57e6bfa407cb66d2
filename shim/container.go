package shim

import (
	runc "github.com/containerd/go-runc"
)

// container is one runc container of the pod and its processes.
type container struct {
	id     string
	bundle string
	runc   *runc.Runc
	opts   runtimeOptions
	rootfs string // where the shim mounted the rootfs; "" if it did not
	cgroup any    // cgroup1.Cgroup or *cgroup2.Manager, for stats and OOM
	// stopOOMWatch ends the container's OOM watch; nil without a cgroup.
	stopOOMWatch func()
	init         *process
	execs        map[string]*process
	// initExitPending is set while the init has exited but some exec's
	// exit has not been published yet.
	initExitPending bool
	// ownPIDNamespace is set when its init is the init of a PID namespace
	// of its own: the kernel ends every process of the container with it.
	ownPIDNamespace bool
	// madeAtStart is set when runc makes its init at Start rather than
	// at Create: runc restore from restoreFrom, or runc run (package
	// extension's RunAtStartAnnotation). Until then its pid is 0 and runc
	// knows nothing of it.
	madeAtStart bool
	// startedAtCreate is set when Create made and ran its init (package
	// extension's RunAtCreateAnnotation): Start only reports it.
	startedAtCreate bool
	// restoreFrom is the CRIU images its init is restored from at Start
	// (runc restore in place of runc create and start), "" otherwise.
	restoreFrom string
}

// unpublishedExecs lists the started execs whose TaskExit is not out yet.
func (c *container) unpublishedExecs() []*process {
	var out []*process
	for _, p := range c.execs {
		if p.pid > 0 && !p.hasExited() {
			out = append(out, p)
		}
	}
	return out
}
