#!/usr/bin/env bash
# Times failovers between two cluster gateways with a stock wg-quick partner
# (e2e TestBenchFailover) and prints the table docs/performance.md holds:
# for each way the active fails, how long the partner went without an
# answer through the tunnel, over ROUNDS rounds. Root; everything runs in
# network namespaces of its own, removed at the end. About 25 s a round.
#   sudo scripts/bench-failover.sh            # 20 rounds, userspace WireGuard
#   sudo ROUNDS=5 scripts/bench-failover.sh
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "bench-failover: run as root (it builds network namespaces)" >&2; exit 1; fi
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
scripts/install-deps.sh >/dev/null
rounds=${ROUNDS:-20}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== machine"
echo "$(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), wireguard-go $(dpkg-query -W -f='${Version}' wireguard-go)"
echo "== failovers: $rounds rounds, userspace WireGuard at both ends, etcd of one member, role-ttl 2s"
if ! EXTRANET_E2E_WIREGUARD=userspace EXTRANET_BENCH_FAILOVER=$rounds go test -v -count=1 -run '^TestBenchFailover$' -timeout 60m ./internal/e2e >"$log" 2>&1; then
	tail -50 "$log" >&2
	exit 1
fi
grep -E '^\||^peer issue' "$log"
