package cri

import (
	"context"
	"errors"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// toStatus gives an error the gRPC status kubelet acts on. Errors that are
// already statuses pass through; errdefs kinds map to their codes; what is
// left is Internal, never Unknown.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	if st := errgrpc.ToGRPC(err); status.Code(st) != codes.Unknown {
		return status.Error(status.Code(st), err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func invalid(msg string) error  { return errdefs.ErrInvalidArgument.WithMessage(msg) }
func notFound(msg string) error { return errdefs.ErrNotFound.WithMessage(msg) }
