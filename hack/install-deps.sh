#!/usr/bin/env bash
# Installs, idempotently, everything the tests and the demo need on a fresh
# Debian machine: runc (built with seccomp), crun, CRIU, the CNI plugins, busybox-static,
# crictl, and stock containerd v2.4.2 binaries (ctr, and the runc shim we
# compare with).
# Everything goes to $PREFIX (default /usr/local) and /opt/cni/bin.
set -euo pipefail

PREFIX=${PREFIX:-/usr/local}
RUNC_VERSION=${RUNC_VERSION:-v1.5.2}
CNI_VERSION=${CNI_VERSION:-v1.9.1}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CRI_TOOLS_VERSION=${CRI_TOOLS_VERSION:-v1.37.0}
CRIU_VERSION=${CRIU_VERSION:-4.2.1}
CRIU_SHA256=${CRIU_SHA256:-29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9}
CNI_BIN_DIR=${CNI_BIN_DIR:-/opt/cni/bin}
export GOBIN="$PREFIX/bin"
export GOFLAGS=-buildvcs=false

log() { echo "install-deps: $*" >&2; }

# has_version BINARY PATTERN: whether BINARY --version prints PATTERN. The
# output is read whole first: piped into grep -q, a tool still writing when
# grep has matched dies of SIGPIPE, pipefail fails the test, and the tool
# is built again for nothing.
has_version() {
	local out
	out=$("$1" --version 2>/dev/null) || return 1
	grep -q -- "$2" <<<"$out"
}

need_apt=()
dpkg -s libseccomp-dev >/dev/null 2>&1 || need_apt+=(libseccomp-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# crun: the second OCI runtime the tests run pods with (a runtime handler).
command -v crun >/dev/null 2>&1 || need_apt+=(crun)
# CRIU's build dependencies: checkpoints need CRIU 4.2 on Linux 6.18
# (bookworm's 3.17 fails `criu check`: "Unexpected rt vDSO area bounds",
# checkpoint-restore/criu#2532; trixie's 4.1 hangs in its dump), built
# below from Debian's own source package.
for p in libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler libnl-3-dev \
	libcap-dev libnet1-dev libbsd-dev libnftables-dev libgnutls28-dev uuid-dev; do
	dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
	log "apt-get install ${need_apt[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! has_version "$GOBIN/runc" "runc version ${RUNC_VERSION#v}"; then
	log "building runc $RUNC_VERSION"
	go install -tags seccomp "github.com/opencontainers/runc@$RUNC_VERSION"
fi

cni_plugins=(main/bridge main/loopback main/ptp ipam/host-local meta/portmap meta/firewall meta/tuning meta/bandwidth)
for p in "${cni_plugins[@]}"; do
	if [ ! -x "$CNI_BIN_DIR/${p#*/}" ]; then
		log "building CNI plugin ${p#*/} $CNI_VERSION"
		mkdir -p "$CNI_BIN_DIR"
		GOBIN="$CNI_BIN_DIR" go install "github.com/containernetworking/plugins/plugins/$p@$CNI_VERSION"
	fi
done

# Stock containerd binaries: ctr for the CLI tests and demo, the runc shim as
# the baseline our shim is measured against.
if ! has_version "$GOBIN/ctr" "${CONTAINERD_VERSION}"; then
	log "building ctr $CONTAINERD_VERSION"
	go install -ldflags "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
fi
if [ ! -x "$GOBIN/containerd-shim-runc-v2" ]; then
	log "building containerd-shim-runc-v2 $CONTAINERD_VERSION"
	go install "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
fi
if ! has_version "$GOBIN/crictl" "${CRI_TOOLS_VERSION}"; then
	log "building crictl $CRI_TOOLS_VERSION"
	go install -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION" \
		"sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION"
fi
# CRIU from the source Debian unstable ships, checked against the
# checksum its Sources index gives, into $PREFIX/sbin (ahead of /usr/sbin
# on root's PATH).
if ! has_version "$PREFIX/sbin/criu" "Version: ${CRIU_VERSION}\$"; then
	log "building CRIU $CRIU_VERSION"
	src=$(mktemp -d)
	curl -fsSL -o "$src/criu.tar.xz" "https://deb.debian.org/debian/pool/main/c/criu/criu_${CRIU_VERSION}.orig.tar.xz"
	echo "$CRIU_SHA256  $src/criu.tar.xz" | sha256sum -c --quiet
	tar -xf "$src/criu.tar.xz" -C "$src"
	make -s -C "$src/criu-$CRIU_VERSION" -j"$(nproc)" criu >/dev/null
	install -D -m 0755 "$src/criu-$CRIU_VERSION/criu/criu" "$PREFIX/sbin/criu"
	rm -rf "$src"
fi
log "ok"
