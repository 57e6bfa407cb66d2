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

.PHONY: all binaries deps test unit integration demo bench critest clean FORCE

all: binaries

binaries: bin/containerd bin/containerd-shim-mine-v2

bin/containerd: FORCE
	$(GO) build -tags "$(DAEMON_TAGS)" -ldflags "$(LDFLAGS)" -o $@ ./cmd/containerd

# The shim runs once per pod: static, stripped, no cgo, for a small
# resident set.
bin/containerd-shim-mine-v2: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS) -s -w" -o $@ ./cmd/containerd-shim-mine-v2

# Installs runc, the CNI plugins, busybox-static and the stock containerd
# tools the tests use, if they are missing.
deps:
	hack/install-deps.sh

# Unit and integration tests; ends with an "N passed, N failed" line.
test: deps binaries
	hack/test.sh ./...

unit:
	hack/test.sh $$($(GO) list ./... | grep -v /integration)

integration: deps binaries
	hack/test.sh ./integration/...

demo: deps binaries
	$(GO) run ./integration/cmd/demo -bin bin

# cri-tools' conformance suite against the daemon, with every image it
# pulls built locally. Budget: 30 minutes (critest's own timeout is 25).
critest: deps binaries
	hack/install-critest.sh
	$(GO) run ./integration/cmd/critest -bin bin

# Benchmarks, beside stock containerd v2.4.2 in the same run, as ratios.
# Budget: about two minutes, plus building stock containerd once.
bench: deps binaries
	hack/install-bench-deps.sh
	$(GO) run ./integration/cmd/bench -bin bin

clean:
	rm -rf bin

FORCE:
