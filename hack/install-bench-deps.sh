#!/usr/bin/env bash
# Builds stock containerd v2.4.2, with its own CRI plugin, for `make bench`
# to measure mine against in the same run. It goes to its own directory so
# that it never shadows our containerd.
set -euo pipefail
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
STOCK_DIR=${STOCK_DIR:-/usr/local/lib/mine-bench/containerd-$CONTAINERD_VERSION}
if [ -x "$STOCK_DIR/containerd" ]; then
	exit 0
fi
echo "install-bench-deps: building stock containerd $CONTAINERD_VERSION" >&2
mkdir -p "$STOCK_DIR"
GOBIN="$STOCK_DIR" GOFLAGS=-buildvcs=false go install \
	-ldflags "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
	"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION"
