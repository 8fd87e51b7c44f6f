#!/usr/bin/env bash
# Measures extranet at scale against the naive way and prints the table
# docs/performance.md holds. Root; everything runs in network namespaces of
# its own, removed at the end. About 11 minutes on 2 cores, of which about
# one for the cost of the gateway namespace's veth hop (figure 8).
#   sudo scripts/bench.sh                # 10,000 peers in 1,000 orgs, 5 grants each
#   sudo BENCH_ORGS=100 scripts/bench.sh # smaller
#   sudo BENCH_ROUNDS=9 scripts/bench.sh # more rounds of the compared figures (5 and 8)
#   BENCH_PPROF=/tmp/prof sudo -E scripts/bench.sh  # also save the daemon's CPU and heap profiles there
# The gateway figures are taken with userspace WireGuard and, where the
# kernel has the module, again with the kernel's: a column per mode.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "bench: run as root (it builds network namespaces)" >&2; exit 1; fi
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
scripts/install-deps.sh >/dev/null
out=$(mktemp)
kout=$(mktemp)
log=$(mktemp)
wgdir=$(mktemp -d)
trap 'rm -rf "$out" "$kout" "$log" "$wgdir"' EXIT
# The wireguard-go the gateway embeds, built as a program, for a partner
# that is not bound by Debian's older one (see figures 6 and 8).
go build -o "$wgdir/wireguard-go" golang.zx2c4.com/wireguard

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "$(go version), $(iptables --version), wireguard-go $(dpkg-query -W -f='${Version}' wireguard-go)"

echo "== store, rules, reconcile and wireguard-go alone (go test -bench)"
go test -run '^$' -bench 'Expire100k|Render1000Orgs' -benchtime 3x ./internal/service ./internal/firewall | grep -E '^Benchmark'
go test -run '^$' -bench 'ReconcileAfterChange' -benchtime 2s ./internal/reconcile | grep -E '^Benchmark'
go test -run '^$' -bench 'UserspacePeers' -benchtime 1x ./internal/wgdev | grep -E '^Benchmark'

echo "== gateway (real daemon, namespaces)"
# gateway MODE OUT runs the gateway measurements with WireGuard in MODE.
gateway() {
	if ! EXTRANET_E2E_WIREGUARD=$1 EXTRANET_BENCH=1 EXTRANET_BENCH_OUT="$2" EXTRANET_BENCH_WIREGUARD_GO="$wgdir/wireguard-go" EXTRANET_BENCH_PPROF="${BENCH_PPROF:-}" go test -count=1 -run '^TestBench$' -timeout 30m ./internal/e2e >"$log" 2>&1; then
		# The daemon's own log lines are long and many; the test's are what say why.
		grep -v '^        time=' "$log" | tail -40 >&2
		echo "bench: the gateway measurements ($1 WireGuard) failed (the test's output is above)" >&2
		exit 1
	fi
}
gateway userspace "$out"
# Kernel WireGuard where this kernel has the module: the figures that
# userspace bounds (6 and 7) are the kernel's to set.
probe=exbench$$
knote="not measured: this kernel has no WireGuard module"
if ip netns add "$probe" 2>/dev/null; then
	if ip -n "$probe" link add wgprobe type wireguard 2>/dev/null; then
		knote=""
	fi
	ip netns del "$probe"
fi
if [ -z "$knote" ]; then
	gateway kernel "$kout"
fi
# One table, a column per mode; the notes are userspace's, with the
# kernel's after them where they differ.
awk -v none="$knote" '
function cells(line, a) { sub(/^\| /, "", line); sub(/ \|$/, "", line); return split(line, a, / \| /) }
FILENAME == ARGV[1] { if (/^\| [0-9]/) { cells($0, c); kv[c[1] SUBSEP c[2]] = c[3]; kn[c[1] SUBSEP c[2]] = c[5] } next }
/^\| figure/ { print "| figure | at | userspace | kernel | naive (userspace) | note |"; next }
/^\|---/ { print "|---|---|---|---|---|---|"; next }
{
	cells($0, c); key = c[1] SUBSEP c[2]
	k = (key in kv) ? kv[key] : (none != "" ? none : "no figure")
	note = c[5]
	if ((key in kn) && kn[key] != "" && kn[key] != note) note = note (note != "" ? "; " : "") "kernel: " kn[key]
	print "| " c[1] " | " c[2] " | " c[3] " | " k " | " c[4] " | " note " |"
}' "$kout" "$out"
