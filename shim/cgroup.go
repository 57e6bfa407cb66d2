package shim

import (
	"fmt"

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
	return cgroup1.Load(cgroup1.PidPath(pid))
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
