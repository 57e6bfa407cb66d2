package cri

import (
	"context"

	"github.com/containerd/containerd/v2/core/snapshots"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageFsInfo reports what the snapshotter's file system holds for images
// and containers.
func (s *Service) ImageFsInfo(ctx context.Context, _ *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	ctx = s.nsContext(ctx)
	sn := s.client.SnapshotService(s.config().Snapshotter)
	var bytes, inodes uint64
	err := sn.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		u, err := sn.Usage(ctx, info.Name)
		if err == nil {
			bytes += uint64(u.Size)
			inodes += uint64(u.Inodes)
		}
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	usage := &runtimeapi.FilesystemUsage{
		Timestamp:  nowNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: s.snapshotterRoot()},
		UsedBytes:  &runtimeapi.UInt64Value{Value: bytes},
		InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{usage}}, nil
}
