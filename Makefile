# mine: containerd with the mine CRI plugin built in, and its shim.

GO ?= go
# The containerd release our daemon is built from; it reports this version
# so that clients see the containerd they expect.
CONTAINERD_VERSION ?= v2.4.2
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
VERSION_PKG := github.com/containerd/containerd/v2/version
LDFLAGS := -X $(VERSION_PKG).Version=$(CONTAINERD_VERSION) -X $(VERSION_PKG).Revision=mine-$(REVISION)
# no_cri leaves containerd's own CRI plugin out: ours serves the CRI.
DAEMON_TAGS := no_cri

.PHONY: all binaries failpoint-binaries deps kubelet test unit integration demo bench critest fuzz soak node-e2e node-e2e-stock install uninstall clean FORCE

all: binaries

binaries: bin/containerd bin/containerd-shim-mine-v2 bin/mine-pod-init

# The same pair with failpoints compiled in (package failpoint), for the
# failure-injection tests only; never installed.
failpoint-binaries: bin/failpoints/containerd bin/failpoints/containerd-shim-mine-v2 bin/failpoints/mine-pod-init

bin/failpoints/containerd: FORCE
	$(GO) build -tags "$(DAEMON_TAGS) failpoints" -ldflags "$(LDFLAGS)" -o $@ ./cmd/containerd

bin/failpoints/containerd-shim-mine-v2: FORCE
	CGO_ENABLED=0 $(GO) build -tags failpoints -trimpath -ldflags "$(LDFLAGS) -s -w" -o $@ ./cmd/containerd-shim-mine-v2

bin/containerd: FORCE
	$(GO) build -tags "$(DAEMON_TAGS)" -ldflags "$(LDFLAGS)" -o $@ ./cmd/containerd

# The shim runs once per pod: static, stripped, no cgo, for a small
# resident set.
bin/containerd-shim-mine-v2: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS) -s -w" -o $@ ./cmd/containerd-shim-mine-v2

# Every pod runs one pod init: on amd64 its entry point is start, a few
# system calls that never start Go's runtime (cmd/mine-pod-init).
POD_INIT_ENTRY = $(if $(filter amd64,$(shell $(GO) env GOARCH)),-E main.start)
bin/mine-pod-init bin/failpoints/mine-pod-init: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(POD_INIT_ENTRY)" -o $@ ./cmd/mine-pod-init

# Installs runc, the CNI plugins, busybox-static and the stock containerd
# tools the tests use, if they are missing.
deps:
	hack/install-deps.sh

# Builds kubelet v1.37.2 for the end-to-end tests, once.
kubelet:
	hack/install-kubelet.sh

# Unit, integration, failure-injection (bin/failpoints) and kubelet
# end-to-end tests; ends with an "N passed, N failed" line. One package at
# a time: each end-to-end package runs its own daemon, and two at once
# would share the host's cgroups and iptables. Budget: ten minutes
# (measured: six and a half), plus building the tools and kubelet once on
# a new machine (about twenty-five).
test: deps binaries failpoint-binaries kubelet
	hack/test.sh -p 1 -tags nodee2e ./...

unit:
	hack/test.sh $$($(GO) list ./... | grep -v /integration)

integration: deps binaries failpoint-binaries
	hack/test.sh ./integration/...

demo: deps binaries
	$(GO) run ./integration/cmd/demo -bin bin

# cri-tools' conformance suite against the daemon, with every image it
# pulls built locally. Budget: 30 minutes (critest's own timeout is 25).
critest: deps binaries
	hack/install-critest.sh
	$(GO) run ./integration/cmd/critest -bin bin

# The fuzz targets (CRI request -> OCI spec, the CRI log writer, the
# shim's log and stdin URIs), each for a set number of executions.
# Budget: five minutes; FUZZ_SCALE=N runs each N times as long.
fuzz:
	hack/fuzz.sh

# 1,000 pod cycles (run, create, start, exec, stop, remove) with the
# daemon's files, goroutines, threads and memory and the mounts sampled
# every 100; fails on growth beyond noise or anything left behind.
# Budget: 20 minutes (measured: about 13).
soak: deps binaries
	$(GO) run ./integration/cmd/soak -bin bin

# Benchmarks, beside stock containerd v2.4.2 in the same run, as ratios,
# medians and spreads. Budget: ten minutes (measured: seven), plus
# building stock containerd once.
bench: deps binaries kubelet
	hack/install-bench-deps.sh
	$(GO) run ./integration/cmd/bench -bin bin

# A real kubelet v1.37.2, standalone, running static pods against the
# daemon (integration/nodee2e, build tag nodee2e); ends with an
# "N passed, N failed" line. Budget: five minutes (measured: 2m20s, a
# minute of it waiting for kubelet's garbage collector to remove the
# pods), plus building kubelet once (ten to fifteen minutes).
node-e2e: deps binaries kubelet
	hack/test.sh -tags nodee2e ./integration/nodee2e/

# The same pods against stock containerd v2.4.2, for its timings table.
node-e2e-stock: deps kubelet
	hack/install-bench-deps.sh
	MINE_E2E_RUNTIME=stock hack/test.sh -tags nodee2e ./integration/nodee2e/

# Installs the daemon, the shim, the pod init, a systemd unit equivalent to containerd's,
# and, only where none exists, /etc/containerd/config.toml and
# /etc/crictl.yaml. DESTDIR stages the files for a package.
PREFIX ?= /usr/local
BINDIR := $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
install: binaries
	install -D -m 755 bin/containerd $(DESTDIR)$(BINDIR)/containerd
	install -D -m 755 bin/containerd-shim-mine-v2 $(DESTDIR)$(BINDIR)/containerd-shim-mine-v2
	install -D -m 755 bin/mine-pod-init $(DESTDIR)$(BINDIR)/mine-pod-init
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|@BINDIR@|$(BINDIR)|' packaging/containerd.service > $(DESTDIR)$(UNITDIR)/containerd.service
	chmod 644 $(DESTDIR)$(UNITDIR)/containerd.service
	[ -e $(DESTDIR)/etc/containerd/config.toml ] || install -D -m 644 packaging/config.toml $(DESTDIR)/etc/containerd/config.toml
	[ -e $(DESTDIR)/etc/crictl.yaml ] || install -D -m 644 packaging/crictl.yaml $(DESTDIR)/etc/crictl.yaml

# Removes what install put in place, but the configuration: an operator's
# config.toml and crictl.yaml are theirs once installed.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/containerd $(DESTDIR)$(BINDIR)/containerd-shim-mine-v2 $(DESTDIR)$(BINDIR)/mine-pod-init $(DESTDIR)$(UNITDIR)/containerd.service

clean:
	rm -rf bin

FORCE:
