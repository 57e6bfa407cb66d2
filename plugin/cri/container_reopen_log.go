package cri

import (
	"context"

	containerd "github.com/containerd/containerd/v2/client"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/extension"
)

// ReopenContainerLog has the shim reopen the container's log file after
// kubelet rotated it (package extension).
func (s *Service) ReopenContainerLog(ctx context.Context, r *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	ctx = s.nsContext(ctx)
	_, task, err := s.runningTask(ctx, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := task.Update(ctx, containerd.WithAnnotations(map[string]string{extension.ReopenLogAnnotation: "true"})); err != nil {
		return nil, toStatus(err)
	}
	logRotations.Inc()
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
