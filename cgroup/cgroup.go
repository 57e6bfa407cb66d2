// Package cgroup finds the cgroup runc placed a process in and reads its
// statistics: the shim reads them for containerd's Stats, and the plugin's
// collector reads them directly, so that an idle pod's shim is left idle.
package cgroup

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// Unified tells whether runc puts containers in cgroup v2. On a hybrid
// host (v1 controllers, cgroup2 mounted beside them) it uses v1.
func Unified() bool { return cgroups.Mode() == cgroups.Unified }

// Load finds the cgroup a process is in: a cgroup1.Cgroup, or a
// *cgroup2.Manager on a cgroup v2 host.
func Load(pid int) (any, error) {
	return load(pid, func(path string) (string, error) { return path, nil })
}

// LoadContainer is Load for a container's init, cut at the container's
// own cgroup: the first path element named after the container's id, as
// runc names it (the cgroupfs path's last element, or a systemd scope
// cri-mine-<id>.scope). The init may have moved itself below it since
// (systemd in a container moves to init.scope, docker-in-docker to
// /init): the container's figures are its whole cgroup's.
func LoadContainer(pid int, id string) (any, error) {
	return load(pid, func(path string) (string, error) { return cut(path, id) })
}

// load loads the cgroup at(path) for each path of the process's.
func load(pid int, at func(path string) (string, error)) (any, error) {
	if Unified() {
		path, err := cgroup2.PidGroupPath(pid)
		if err == nil {
			path, err = at(path)
		}
		if err != nil {
			return nil, err
		}
		return cgroup2.Load(path)
	}
	paths := PidPath(pid)
	return cgroup1.Load(func(name cgroup1.Name) (string, error) {
		path, err := paths(name)
		if err != nil {
			return "", err
		}
		return at(path)
	})
}

// cut ends a cgroup path at its first element that names id: those
// above are kubelet's (pod, QoS class), those below the container's own.
func cut(path, id string) (string, error) {
	elems := strings.Split(path, "/")
	for i := range elems {
		if strings.Contains(elems[i], id) {
			return strings.Join(elems[:i+1], "/"), nil
		}
	}
	return "", fmt.Errorf("cgroup %s is not container %s's", path, id)
}

// Stat reads a loaded cgroup's statistics: a *stats.Metrics of cgroup1
// or of cgroup2.
func Stat(cg any) (any, error) {
	switch cg := cg.(type) {
	case cgroup1.Cgroup:
		return cg.Stat(cgroup1.IgnoreNotExist)
	case *cgroup2.Manager:
		return cg.Stat()
	}
	return nil, fmt.Errorf("container has no cgroup")
}

// Procs lists the processes of a loaded cgroup and of its children.
func Procs(cg any) ([]int, error) {
	var pids []int
	switch cg := cg.(type) {
	case cgroup1.Cgroup:
		ps, err := cg.Processes(cgroup1.Pids, true)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			pids = append(pids, p.Pid)
		}
	case *cgroup2.Manager:
		ps, err := cg.Procs(true)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			pids = append(pids, int(p))
		}
	default:
		return nil, fmt.Errorf("container has no cgroup")
	}
	return pids, nil
}

// PidPath is cgroup1.PidPath reading /proc/self/mountinfo once where
// PidPath reads it again for each of the dozen hierarchies: the file
// grows by a few mounts with every pod, and every container's start loads
// its cgroup.
func PidPath(pid int) cgroup1.Path {
	paths, err := cgroup1.ParseCgroupFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err == nil {
		var roots map[string]string
		if roots, err = mountRoots(); err == nil {
			err = localize(paths, roots)
		}
	}
	return func(name cgroup1.Name) (string, error) {
		if err != nil {
			return "", err
		}
		path, ok := paths[string(name)]
		if !ok {
			if path, ok = paths["name="+string(name)]; !ok {
				return "", cgroup1.ErrControllerNotActive
			}
		}
		return path, nil
	}
}

// mountRoots maps each cgroup v1 mount option (a controller, or name=...)
// to the root of the first cgroup mount with it, in /proc/self/mountinfo
// order, as cgroup1 finds them.
func mountRoots() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	roots := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Split(s.Text(), " ")
		if len(fields) < 10 || fields[len(fields)-3] != "cgroup" {
			continue
		}
		for _, opt := range strings.Split(fields[len(fields)-1], ",") {
			if _, ok := roots[opt]; !ok {
				roots[opt] = fields[3]
			}
		}
	}
	return roots, s.Err()
}

// localize makes a process's cgroup paths relative to their hierarchies'
// mount roots, for a process in a nested cgroup namespace.
func localize(paths, roots map[string]string) error {
	for name, path := range paths {
		root, ok := roots[name]
		if !ok {
			return fmt.Errorf("cgroup %s: %w", name, cgroup1.ErrNoCgroupMountDestination)
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if rel == "." {
			rel = root
		}
		paths[name] = filepath.Join("/", rel)
	}
	return nil
}
