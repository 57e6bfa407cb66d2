#!/usr/bin/env bash
# Builds critest, cri-tools' conformance suite, from the Go module proxy:
# it is a test binary, made with `go test -c ./cmd/critest` in the module.
set -euo pipefail
PREFIX=${PREFIX:-/usr/local}
CRI_TOOLS_VERSION=${CRI_TOOLS_VERSION:-v1.37.0}
# Debian's dynamically linked busybox, whose shell execs commands it finds
# on PATH (busybox-static's runs its applets in process, as upstream's
# e2e busybox image does not): critest's default image is built from it.
BUSYBOX_DIR=${BUSYBOX_DIR:-$PREFIX/lib/mine-critest/busybox}
if [ ! -x "$BUSYBOX_DIR/bin/busybox" ]; then
	echo "install-critest: fetching Debian's busybox (dynamic)" >&2
	deb=$(mktemp -d)
	(cd "$deb" && apt-get download -qq busybox 2>/dev/null)
	mkdir -p "$BUSYBOX_DIR"
	dpkg-deb -x "$deb"/busybox_*.deb "$BUSYBOX_DIR"
	rm -rf "$deb"
fi
if [ -x "$PREFIX/bin/critest" ] && [ "$(cat "$PREFIX/bin/.critest-version" 2>/dev/null)" = "$CRI_TOOLS_VERSION" ]; then
	exit 0
fi
echo "install-critest: building critest $CRI_TOOLS_VERSION" >&2
src=$(go mod download -json "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src/." "$work"
chmod -R u+w "$work"
(cd "$work" && GOFLAGS=-buildvcs=false go test -c -o "$PREFIX/bin/critest" ./cmd/critest)
echo "$CRI_TOOLS_VERSION" > "$PREFIX/bin/.critest-version"
