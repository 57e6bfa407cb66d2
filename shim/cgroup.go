package shim

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// unified tells whether runc puts containers in cgroup v2. On a hybrid
// host (v1 controllers, cgroup2 mounted beside them) it uses v1.
func unified() bool { return cgroups.Mode() == cgroups.Unified }

// loadCgroup finds the cgroup runc placed a process in.
func loadCgroup(pid int) (any, error) {
	if unified() {
		path, err := cgroup2.PidGroupPath(pid)
		if err != nil {
			return nil, err
		}
		return cgroup2.Load(path)
	}
	return cgroup1.Load(pidPath(pid))
}

// pidPath is cgroup1.PidPath reading /proc/self/mountinfo once where
// PidPath reads it again for each of the dozen hierarchies: the file
// grows by a few mounts with every pod, and every container's start loads
// its cgroup.
func pidPath(pid int) cgroup1.Path {
	paths, err := cgroup1.ParseCgroupFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err == nil {
		var roots map[string]string
		if roots, err = cgroupMountRoots(); err == nil {
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

// cgroupMountRoots maps each cgroup v1 mount option (a controller, or
// name=...) to the root of the first cgroup mount with it, in
// /proc/self/mountinfo order, as cgroup1 finds them.
func cgroupMountRoots() (map[string]string, error) {
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
// mount roots, for a shim in a nested cgroup namespace.
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

// watchContainer finds a new container's cgroup and watches it for OOM
// kills. A container without a memory cgroup runs; it just reports less.
func (s *service) watchContainer(c *container) {
	cg, err := loadCgroup(c.init.pid)
	if err != nil {
		log.L.WithError(err).WithField("id", c.id).Warn("load cgroup")
		return
	}
	c.cgroup = cg
	c.stopOOMWatch = s.watchOOM(c.id, cg)
}

func cgroupStats(cg any) (*anypb.Any, error) {
	var (
		metrics any
		err     error
	)
	switch cg := cg.(type) {
	case cgroup1.Cgroup:
		metrics, err = cg.Stat(cgroup1.IgnoreNotExist)
	case *cgroup2.Manager:
		metrics, err = cg.Stat()
	default:
		return nil, fmt.Errorf("container has no cgroup")
	}
	if err != nil {
		return nil, err
	}
	return typeurl.MarshalAnyToProto(metrics)
}
