#!/usr/bin/env bash
# Installs, idempotently, everything the tests and the demo need on a fresh
# Debian machine: runc (built with seccomp), crun, criu, the CNI plugins, busybox-static,
# crictl, and stock containerd v2.4.2 binaries (ctr, and the runc shim we
# compare with).
# Everything goes to $PREFIX (default /usr/local) and /opt/cni/bin.
set -euo pipefail

PREFIX=${PREFIX:-/usr/local}
RUNC_VERSION=${RUNC_VERSION:-v1.5.2}
CNI_VERSION=${CNI_VERSION:-v1.9.1}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CRI_TOOLS_VERSION=${CRI_TOOLS_VERSION:-v1.37.0}
CNI_BIN_DIR=${CNI_BIN_DIR:-/opt/cni/bin}
export GOBIN="$PREFIX/bin"
export GOFLAGS=-buildvcs=false

log() { echo "install-deps: $*" >&2; }

need_apt=()
dpkg -s libseccomp-dev >/dev/null 2>&1 || need_apt+=(libseccomp-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# crun: the second OCI runtime the tests run pods with (a runtime handler).
command -v crun >/dev/null 2>&1 || need_apt+=(crun)
# criu: what checkpoints need (bookworm's 3.17 cannot run on Linux 6.18;
# the checkpoint RPCs then say so).
command -v criu >/dev/null 2>&1 || need_apt+=(criu)
if [ ${#need_apt[@]} -gt 0 ]; then
	log "apt-get install ${need_apt[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! "$GOBIN/runc" --version 2>/dev/null | grep -q "runc version ${RUNC_VERSION#v}"; then
	log "building runc $RUNC_VERSION"
	go install -tags seccomp "github.com/opencontainers/runc@$RUNC_VERSION"
fi

if [ ! -x "$CNI_BIN_DIR/bridge" ] || [ ! -x "$CNI_BIN_DIR/portmap" ] || [ ! -x "$CNI_BIN_DIR/host-local" ] || [ ! -x "$CNI_BIN_DIR/loopback" ]; then
	log "building CNI plugins $CNI_VERSION"
	mkdir -p "$CNI_BIN_DIR"
	for p in main/bridge main/loopback main/ptp ipam/host-local meta/portmap meta/firewall meta/tuning; do
		GOBIN="$CNI_BIN_DIR" go install "github.com/containernetworking/plugins/plugins/$p@$CNI_VERSION"
	done
fi

# Stock containerd binaries: ctr for the CLI tests and demo, the runc shim as
# the baseline our shim is measured against.
if ! "$GOBIN/ctr" --version 2>/dev/null | grep -q "${CONTAINERD_VERSION}"; then
	log "building ctr $CONTAINERD_VERSION"
	go install -ldflags "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
fi
if [ ! -x "$GOBIN/containerd-shim-runc-v2" ]; then
	log "building containerd-shim-runc-v2 $CONTAINERD_VERSION"
	go install "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
fi
if ! "$GOBIN/crictl" --version 2>/dev/null | grep -q "${CRI_TOOLS_VERSION}"; then
	log "building crictl $CRI_TOOLS_VERSION"
	go install -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION" \
		"sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION"
fi
log "ok"
