// Package podns holds a pod's namespaces without any process: each one is
// created on a throw-away OS thread and pinned by bind-mounting its nsfs
// file, as CRI-O's pinns does. Containers then join the pod's namespaces
// by path, and no pause image is ever pulled.
//
// A new network namespace comes with its loopback interface up, as CNI's
// loopback plugin would leave it: one ioctl here rather than a plugin
// process started for every pod's setup and teardown (containerd's CRI
// runs it; mine does better on purpose).
package podns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Paths are the pinned namespaces of a pod; "" where the pod uses the
// host's namespace.
type Paths struct {
	Net string `json:"net,omitempty"`
	IPC string `json:"ipc,omitempty"`
	UTS string `json:"uts,omitempty"`
	// PID is pinned from the pod's init once it runs, for pods that
	// share one PID namespace.
	PID string `json:"pid,omitempty"`
	// User is the pod's own user namespace, "" for the host's; it owns
	// the pod's other namespaces.
	User string `json:"user,omitempty"`
}

// Request says which namespaces to create.
type Request struct {
	Net, IPC, UTS bool
	Hostname      string // set in the new UTS namespace
	// User, when set, puts the pod in a user namespace of its own with
	// these mappings, and the other namespaces in it.
	User *IDMap
}

// IDMap is a user namespace's UID and GID mappings.
type IDMap struct {
	UIDs, GIDs []specs.LinuxIDMapping
}

func sysProcIDMaps(in []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, 0, len(in))
	for _, m := range in {
		out = append(out, syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)})
	}
	return out
}

// Pin creates the requested namespaces and pins them below dir.
func Pin(dir string, req Request) (Paths, error) {
	var flags int
	kinds := map[string]int{}
	if req.Net {
		flags |= unix.CLONE_NEWNET
		kinds["net"] = unix.CLONE_NEWNET
	}
	if req.IPC {
		flags |= unix.CLONE_NEWIPC
		kinds["ipc"] = unix.CLONE_NEWIPC
	}
	if req.UTS {
		flags |= unix.CLONE_NEWUTS
		kinds["uts"] = unix.CLONE_NEWUTS
	}
	var paths Paths
	if flags == 0 && req.User == nil {
		return paths, nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return paths, err
	}
	if req.User != nil {
		kinds["user"] = unix.CLONE_NEWUSER
	}
	for kind := range kinds {
		p := filepath.Join(dir, kind)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if err != nil {
			Remove(paths)
			return Paths{}, err
		}
		f.Close()
		switch kind {
		case "net":
			paths.Net = p
		case "ipc":
			paths.IPC = p
		case "uts":
			paths.UTS = p
		case "user":
			paths.User = p
		}
	}
	if req.User != nil {
		if err := pinInUserNamespace(paths, flags, *req.User, req.Hostname); err != nil {
			Remove(paths)
			return Paths{}, err
		}
		return paths, nil
	}
	if err := onLockedThread(func() (bool, error) { return pinOnThisThread(flags, paths, req.Hostname) }); err != nil {
		Remove(paths)
		return Paths{}, err
	}
	return paths, nil
}

// pinOnThisThread moves the locked thread into new namespaces, pins them,
// and moves it back; restored tells whether it is back where it was.
func pinOnThisThread(flags int, paths Paths, hostname string) (restored bool, err error) {
	var orig []int
	for _, kind := range []string{"net", "ipc", "uts"} {
		fd, err := unix.Open("/proc/thread-self/ns/"+kind, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			for _, fd := range orig {
				unix.Close(fd)
			}
			return true, err // nothing was changed yet
		}
		orig = append(orig, fd)
	}
	defer func() {
		restored = true
		for _, fd := range orig {
			if unix.Setns(fd, 0) != nil {
				restored = false
			}
			unix.Close(fd)
		}
	}()
	if err := unix.Unshare(flags); err != nil {
		return false, fmt.Errorf("unshare namespaces: %w", err)
	}
	if paths.Net != "" {
		if err := loopbackUp(); err != nil {
			return false, err
		}
	}
	if paths.UTS != "" && hostname != "" {
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			return false, fmt.Errorf("set hostname: %w", err)
		}
	}
	tid := unix.Gettid()
	for kind, p := range map[string]string{"net": paths.Net, "ipc": paths.IPC, "uts": paths.UTS} {
		if p == "" {
			continue
		}
		src := fmt.Sprintf("/proc/%d/task/%d/ns/%s", os.Getpid(), tid, kind)
		if err := unix.Mount(src, p, "", unix.MS_BIND, ""); err != nil {
			return false, fmt.Errorf("pin %s namespace: %w", kind, err)
		}
	}
	return false, nil
}

// pinInUserNamespace makes a user namespace with the pod's mappings and,
// owned by it, the pod's other namespaces, and pins them: a pod whose root
// is not the host's must own its network, IPC and UTS namespaces to mount
// sysfs and mqueue and set its hostname. Only a new process can make a
// user namespace (a thread of a multithreaded one cannot): the child is
// traced, so it stops at its exec and never runs, and is killed once its
// namespaces are pinned, as containerd makes its idmapped mounts' ones.
func pinInUserNamespace(paths Paths, flags int, ids IDMap, hostname string) error {
	// A traced child is detached, and runs, if its tracer thread exits.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	proc, err := os.StartProcess("/proc/self/exe", []string{"mine-pod-namespaces"}, &os.ProcAttr{Sys: &syscall.SysProcAttr{
		Cloneflags:  uintptr(unix.CLONE_NEWUSER | flags),
		UidMappings: sysProcIDMaps(ids.UIDs),
		GidMappings: sysProcIDMaps(ids.GIDs),
		// Left to "deny", setgroups would stay denied to every process
		// that joins the namespace: runc could not give containers their
		// supplementary groups (kubelet's supplementalGroups, fsGroup).
		GidMappingsEnableSetgroups: true,
		Ptrace:                     true,
		Pdeathsig:                  syscall.SIGKILL,
	}})
	if err != nil {
		return fmt.Errorf("make the pod's user namespace: %w", err)
	}
	defer func() {
		proc.Kill()
		proc.Wait()
	}()
	for kind, p := range map[string]string{"user": paths.User, "net": paths.Net, "ipc": paths.IPC, "uts": paths.UTS} {
		if p == "" {
			continue
		}
		if err := unix.Mount(fmt.Sprintf("/proc/%d/ns/%s", proc.Pid, kind), p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin %s namespace: %w", kind, err)
		}
	}
	if paths.Net != "" {
		if err := In(paths.Net, "net", unix.CLONE_NEWNET, loopbackUp); err != nil {
			return err
		}
	}
	if paths.UTS == "" || hostname == "" {
		return nil
	}
	return In(paths.UTS, "uts", unix.CLONE_NEWUTS, func() error {
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
		return nil
	})
}

// In runs fn on a locked thread moved into the namespace at path (of kind
// and type nstype, as /proc/thread-self/ns names and setns(2) takes it)
// and back. A thread that cannot go back is never unlocked: Go discards
// it with its goroutine.
func In(path, kind string, nstype int, fn func() error) error {
	return onLockedThread(func() (restored bool, err error) {
		orig, err := unix.Open("/proc/thread-self/ns/"+kind, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return true, err
		}
		defer unix.Close(orig)
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return true, err
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, nstype); err != nil {
			return true, fmt.Errorf("enter the pod's %s namespace: %w", kind, err)
		}
		defer func() { restored = unix.Setns(orig, nstype) == nil }()
		return false, fn()
	})
}

// onLockedThread runs fn on a goroutine locked to its OS thread. A thread
// fn could not bring back to the namespaces it started in (restored false)
// stays locked, and Go discards it with the goroutine: nothing else ever
// runs in the pod's namespaces.
func onLockedThread(fn func() (restored bool, err error)) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored, err := fn()
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// loopbackUp brings up lo in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
}

// Remove unpins the namespaces and removes their files; a namespace no
// process uses any more then goes away. Removing twice is harmless.
func Remove(paths Paths) error {
	var errs []error
	for _, p := range []string{paths.Net, paths.IPC, paths.UTS, paths.PID, paths.User} {
		if p == "" {
			continue
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p, err))
			continue
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// PinProcess pins a namespace of a running process at path. same tells,
// after the namespace file is open, whether pid is still the process the
// caller means: a pid that was reused must never pin another namespace.
func PinProcess(path string, pid int, kind string, same func() bool) error {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s namespace of pid %d: %w", kind, pid, err)
	}
	defer unix.Close(fd)
	if !same() {
		return fmt.Errorf("process %d ended before its %s namespace was pinned", pid, kind)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), path, "", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("pin %s namespace: %w", kind, err)
	}
	return nil
}
