// Package failpoint makes named steps of the daemon and the shim fail,
// hang or crash, for tests. It is compiled in only with the failpoints
// build tag (make test builds a second pair of binaries with it, under
// bin/failpoints); without the tag, Inject is an empty function.
//
// A test arms failpoints by writing the file named by $MINE_FAILPOINTS,
// which containerd hands on to its shims, one per line:
//
//	NAME ACTION [COUNT]
//
// ACTION is error (the step fails with an error naming the failpoint),
// hang (the step waits until the failpoint is no longer armed, or its
// context ends) or crash (the process kills itself with SIGKILL). COUNT,
// 1 by default, is how many times it acts, across every process: each
// time is a line in the file's .fired companion, which a test removes when
// it arms afresh.
package failpoint

// Env names the file of armed failpoints.
const Env = "MINE_FAILPOINTS"

// The steps that can be made to fail.
const (
	PodNamespaces   = "pod-namespaces"   // plugin: pinning a pod's namespaces
	CNIAdd          = "cni-add"          // plugin: CNI ADD
	CNIDel          = "cni-del"          // plugin: CNI DEL
	PodRecord       = "pod-record"       // plugin: the pod's containerd record
	ContainerRecord = "container-record" // plugin: a container's containerd record
	StreamServer    = "stream-server"    // plugin: an exec, attach or port-forward URL
	ExitEvent       = "exit-event"       // plugin: a container's exit event is dropped (error)
	ShimStart       = "shim-start"       // shim: the start bootstrap
	Mount           = "mount"            // shim: mounting a container's root file system
	Unmount         = "unmount"          // shim: unmounting it
	RuncCreate      = "runc-create"      // shim: after runc made the container (runc create, or runc run at Start or, for a pod init, at Create)
	RuncStart       = "runc-start"       // shim: before runc starts it (runc start, or runc run)
	RuncKill        = "runc-kill"        // shim: signalling a container's init (by pid, or runc kill)
	RuncDelete      = "runc-delete"      // shim
	LogOpen         = "log-open"         // shim: opening a container's log file
	ShimStats       = "shim-stats"       // shim: serving a task's Stats
)
