#!/usr/bin/env bash
# Runs the end-to-end suite on kernel WireGuard: the gateway and the stock
# wg-quick partners both use the kernel module, inside scripts/vm-run.sh's VM
# (a stock Debian kernel under software emulation), for hosts whose own
# kernel has no module. The binaries are built here, on the host: nothing
# compiles inside the VM.
#
#   scripts/test-kernel.sh [-run REGEXP]
#
# EXTRANET_E2E_TIMESCALE (default 5) stretches the tests' time limits for
# the emulation, which runs them about six times slower than native.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "test-kernel: SKIP: the kernel-mode end-to-end tests need root (a VM and network namespaces); run \`sudo make test\`"
	exit 0
fi
run=.
if [ "${1:-}" = -run ]; then
	run=$2
fi

# Under the work tree: the VM shares it at the same path, while its /tmp
# is a tmpfs of its own.
out=bin/e2e-kernel
rm -rf "$out"
mkdir -p "$out"
export CGO_ENABLED=0
go build -trimpath -o "$out/" ./cmd/extranetd ./cmd/extranetctl
go test -c -o "$out/e2e.test" ./internal/e2e

export EXTRANET_E2E_WIREGUARD=kernel
export EXTRANET_E2E_BIN=$PWD/$out
export EXTRANET_E2E_TIMESCALE=${EXTRANET_E2E_TIMESCALE:-5}
start=$(date +%s)
set +e
# About 15-20 minutes on an idle 2-core machine under emulation; the limits
# leave room for a loaded one (a run beside other work took 25 minutes and
# more), within CI's 90.
scripts/vm-run.sh --mem 3072 --timeout 3000 -- sh -c "cd internal/e2e && exec ../../$out/e2e.test -test.count=1 -test.timeout=48m -test.v -test.run '$run'"
rc=$?
set -e
echo "test-kernel: the kernel-mode end-to-end run took $(($(date +%s) - start)) s (exit $rc)"
exit $rc
