package cri

import (
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// A message of a Stream* RPC holds at most streamPageSize objects and,
// but for a single larger object, streamPageBytes of them: those RPCs
// exist so that a node with many pods, containers or images stays under
// gRPC's message size limit (4 MiB by default, 16 MiB in kubelet), which
// one List answer may pass, and objects carry up to 256 KiB of labels and
// annotations each.
const (
	streamPageSize  = 128
	streamPageBytes = 2 << 20
)

// sendPages sends a list answer in pages, at least one (an empty list is
// one empty message, so the client knows the list is complete).
func sendPages[T proto.Message, R any](stream grpc.ServerStreamingServer[R], items []T, page func([]T) *R) error {
	for {
		n, size := 0, 0
		for n < len(items) && n < streamPageSize {
			s := proto.Size(items[n])
			if n > 0 && size+s > streamPageBytes {
				break
			}
			size += s
			n++
		}
		if err := stream.Send(page(items[:n])); err != nil {
			return err
		}
		items = items[n:]
		if len(items) == 0 {
			return nil
		}
	}
}
