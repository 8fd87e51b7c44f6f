# The one way to build and test extranet. `make test` is what CI runs.
GO       ?= go
# 1.2.0, 1.2.0+3.gabc1234 or 0.0.0~dev+gabc1234: also a valid .deb and .rpm version.
VERSION  ?= $(shell scripts/version.sh)
LDFLAGS  := -s -w -X github.com/extranetgw/extranet/internal/version.Version=$(VERSION)
BIN      := bin
PREFIX   ?= /usr/local

.PHONY: all build test unit e2e e2e-kernel fuzz lint fmt deps clean demo demo-cluster install uninstall packages test-packages

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/extranetd ./cmd/extranetctl

# Unit and end-to-end tests. The end-to-end tests need root (they build their
# own network namespaces) and skip with a message without it. They run twice:
# natively on userspace WireGuard, then inside a VM on the kernel module
# (about 7 minutes under emulation; see scripts/test-kernel.sh).
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...
	scripts/fuzz.sh
	scripts/check-install.sh
	GO=$(GO) scripts/test-packages.sh
	GO=$(GO) scripts/test-systemd.sh
	scripts/test-kernel.sh

# Every fuzz target for longer (FUZZTIME=10m make fuzz for a soak).
fuzz:
	FUZZTIME=$${FUZZTIME:-2m} scripts/fuzz.sh

unit:
	$(GO) test -count=1 -short ./...

e2e:
	$(GO) test -count=1 -timeout 15m -v ./internal/e2e/...

# The end-to-end tests on kernel WireGuard, in a VM (RUN=REGEXP for some).
e2e-kernel:
	scripts/test-kernel.sh $(if $(RUN),-run '$(RUN)')

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	staticcheck ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# Installs what a fresh Debian or Ubuntu host lacks to build and test.
deps:
	scripts/install-deps.sh

clean:
	rm -rf $(BIN) dist

# The whole product in network namespaces, in one command (needs root).
demo:
	scripts/demo.sh

# Two gateways taking turns at one address: a failover and a switchover,
# live, with a stock partner (docs/cluster.md).
demo-cluster:
	scripts/demo-cluster.sh

# Binaries to $(PREFIX)/bin, config to /etc/extranet (an edited one is kept),
# units to /etc/systemd/system, and the extranet group. Idempotent.
install: build
	PREFIX=$(PREFIX) scripts/install.sh install

uninstall:
	PREFIX=$(PREFIX) scripts/install.sh uninstall

# extranet_VERSION-1_ARCH.deb and extranet-VERSION-1.ARCH.rpm in dist/, built
# reproducibly (same commit, same bytes) with nfpm, a Go tool pinned in
# go.mod. See scripts/package.sh and scripts/packaging/.
packages:
	VERSION=$(VERSION) GO=$(GO) scripts/package.sh

# The .deb installed, upgraded, removed and purged in a debootstrapped Debian
# chroot; the host is not touched. About 50 s the first time (debootstrap,
# cached in /var/cache/extranet-pkgtest), 20 s after. Part of `make test`.
test-packages:
	GO=$(GO) scripts/test-packages.sh
