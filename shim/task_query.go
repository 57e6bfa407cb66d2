package shim

import (
	"context"
	"os"
	"strconv"
	"strings"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/version"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/mine-runtime/mine/extension"
	"github.com/mine-runtime/mine/failpoint"
)

type emptyResponse = emptypb.Empty

var empty = &emptypb.Empty{}

func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	resp := &taskAPI.StateResponse{
		ID:       p.id(),
		Bundle:   c.bundle,
		Pid:      uint32(p.pid),
		Status:   p.status,
		Stdin:    p.stdio.stdin,
		Stdout:   p.stdio.stdout,
		Stderr:   p.stdio.stderr,
		Terminal: p.stdio.terminal,
		ExecID:   p.execID,
	}
	if p.status == task.Status_STOPPED {
		resp.ExitStatus = uint32(p.exitCode)
		resp.ExitedAt = protobuf.ToTimestamp(p.exitedAt)
	}
	return resp, nil
}

func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	s.mu.Lock()
	_, p, err := s.lookup(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &taskAPI.WaitResponse{ExitStatus: uint32(p.exitCode), ExitedAt: protobuf.ToTimestamp(exitTime(p))}, nil
}

func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	s.mu.Lock()
	c, p, err := s.lookup(r.ID, "")
	if err == nil && p.status == task.Status_STOPPED {
		// Not an empty list: containerd, reconnecting after a restart,
		// takes a task without processes for one never created and drops
		// it, and with it the exit status it is still to report.
		err = errdefs.ErrFailedPrecondition.WithMessage("container " + r.ID + " has exited; it has no processes")
	}
	execByPid := make(map[int]string)
	if err == nil {
		for id, x := range c.execs {
			if x.pid > 0 {
				execByPid[x.pid] = id
			}
		}
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	pids, err := c.runc.Ps(ctx, c.id)
	if err != nil {
		return nil, runcError(c.bundle, err)
	}
	resp := &taskAPI.PidsResponse{}
	for _, pid := range pids {
		info := &task.ProcessInfo{Pid: uint32(pid)}
		if id, ok := execByPid[pid]; ok {
			if info.Info, err = typeurl.MarshalAnyToProto(&options.ProcessDetails{ExecID: id}); err != nil {
				return nil, err
			}
		}
		resp.Processes = append(resp.Processes, info)
	}
	return resp, nil
}

func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	if err := failpoint.Inject(ctx, failpoint.ShimStats); err != nil {
		return nil, err
	}
	s.mu.Lock()
	c, _, err := s.lookup(r.ID, "")
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if c.cgroup == nil {
		return nil, errdefs.ErrNotFound.WithMessage("container " + c.id + " has no cgroup to read stats from")
	}
	stats, err := cgroupStats(c.cgroup)
	if err != nil {
		return nil, err
	}
	stats.Value = extension.AppendShimStats(stats.Value, ownStats())
	return &taskAPI.StatsResponse{Stats: stats}, nil
}

// ownStats are the shim's figures (package extension).
func ownStats() extension.ShimStats {
	st := extension.ShimStats{
		Pid:               shimPid(),
		LogLines:          logCounters.lines.Load(),
		LogLinesSplit:     logCounters.split.Load(),
		LogEntriesDropped: logCounters.dropped.Load(),
	}
	// statm's second field is the resident set, in pages.
	if data, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(data)); len(f) > 1 {
			if pages, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				st.RSSBytes = pages * uint64(os.Getpagesize())
			}
		}
	}
	return st
}

func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	resp := &taskAPI.ConnectResponse{ShimPid: shimPid(), Version: version.Version}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.created(r.ID); ok {
		resp.TaskPid = uint32(c.init.pid)
	}
	return resp, nil
}
