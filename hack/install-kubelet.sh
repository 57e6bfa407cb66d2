#!/usr/bin/env bash
# Builds kubelet for `make node-e2e` from the Go module proxy, once.
# k8s.io/kubernetes is not meant to be used as a module: its go.mod points
# every k8s.io/X at ./staging/src/k8s.io/X, which the module zip leaves out.
# Pointing those replaces at the published k8s.io/X v0.N.x makes it build.
# Ten to fifteen minutes on two cores the first time (fifteen with nothing
# in the module cache).
set -euo pipefail
PREFIX=${PREFIX:-/usr/local}
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
STAGING_VERSION=v0.${KUBE_VERSION#v1.}
dest="$PREFIX/lib/mine-node-e2e/kubelet-$KUBE_VERSION"
if [ -x "$dest/kubelet" ]; then
	exit 0
fi
echo "install-kubelet: building kubelet $KUBE_VERSION (ten to fifteen minutes)" >&2
export GOFLAGS=-buildvcs=false
src=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src/." "$work"
chmod -R u+w "$work"
cd "$work"
# The module ships a go.work that uses those staging copies (workspace
# mode, which refuses -mod=mod) and a vendor/ stub: neither applies here.
rm -rf vendor go.work go.work.sum
export GOWORK=off
sed -i -E "s#^(\s*)(k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+\$#\1\2 => \2 $STAGING_VERSION#" go.mod
if grep -q '=> ./staging' go.mod; then
	echo "install-kubelet: go.mod still points into staging:" >&2
	grep '=> ./staging' go.mod >&2
	exit 1
fi
mkdir -p "$dest"
# The version kubelet reports (--version, its node status), which the
# module zip leaves as v0.0.0-master.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
vpkg=k8s.io/component-base/version
go build -mod=mod -trimpath -o "$dest/kubelet.tmp" \
	-ldflags "-X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean" \
	./cmd/kubelet
mv "$dest/kubelet.tmp" "$dest/kubelet"
echo "install-kubelet: $dest/kubelet" >&2
