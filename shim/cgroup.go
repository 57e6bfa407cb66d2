package shim

import (
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mine-runtime/mine/cgroup"
)

// watchContainer finds a new container's cgroup and watches it for OOM
// kills. A container without a memory cgroup runs; it just reports less.
func (s *service) watchContainer(c *container) {
	cg, err := cgroup.Load(c.init.pid)
	if err != nil {
		log.L.WithError(err).WithField("id", c.id).Warn("load cgroup")
		return
	}
	c.cgroup = cg
	c.stopOOMWatch = s.watchOOM(c.id, cg)
}

func cgroupStats(cg any) (*anypb.Any, error) {
	metrics, err := cgroup.Stat(cg)
	if err != nil {
		return nil, err
	}
	return typeurl.MarshalAnyToProto(metrics)
}
