package cri

import "google.golang.org/grpc"

// streamPageSize is how many objects one message of a Stream* RPC holds:
// those RPCs exist so that a node with many pods, containers or images
// stays under gRPC's message size limit, which one List answer may pass.
const streamPageSize = 128

// sendPages sends a list answer in pages, at least one (an empty list is
// one empty message, so the client knows the list is complete).
func sendPages[T, R any](stream grpc.ServerStreamingServer[R], items []T, page func([]T) *R) error {
	for {
		n := min(len(items), streamPageSize)
		if err := stream.Send(page(items[:n])); err != nil {
			return err
		}
		items = items[n:]
		if len(items) == 0 {
			return nil
		}
	}
}
