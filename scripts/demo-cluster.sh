#!/usr/bin/env bash
# Two extranet gateways taking turns at one address, in network namespaces,
# in one command:
#   sudo scripts/demo-cluster.sh
# It builds a LAN (a bridge) with two gateways, etcd, a stock wg-quick
# partner and an internal server; makes one gateway's state the cluster's;
# starts both with the same --vip; then kills the active with kill -9 and
# later hands over on purpose, printing each time how long the partner's
# pings through the tunnel went unanswered. Everything is removed on exit or
# Ctrl-C; the host's own firewall, routes and interfaces are never touched.
# etcd is the one the tests embed (internal/tools/demoetcd): a demo needs no
# etcd package.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "demo-cluster: run as root (it creates network namespaces): sudo $0" >&2
	exit 1
fi
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
export PATH="$PATH:/usr/local/go/bin"
make -s build
CGO_ENABLED=0 go build -trimpath -o bin/demoetcd ./internal/tools/demoetcd

id=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
lan=excl${id}ln pa=excl${id}pa srv=excl${id}sv
dir=$(mktemp -d /tmp/extranet-demo-cluster.XXXXXX)
chmod 700 "$dir"
vip=192.168.60.10 server=192.168.60.200
pids=() daemons=()

cleanup() {
	set +e
	[ -f "$dir/pa.conf" ] && ip netns exec "$pa" wg-quick down "$dir/pa.conf" >/dev/null 2>&1
	for g in a b; do
		pid=$(cat "$dir/$g.pid" 2>/dev/null) && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
		gwd "$g" cleanup --interface "wgcl$id$g" --netns "excl$id${g}x" >/dev/null 2>&1
		rm -f "/var/run/wireguard/wgcl$id$g.sock"
	done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	for ns in $lan $pa $srv excl${id}a excl${id}b excl${id}ax excl${id}bx; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "$dir"
	echo "demo-cluster: removed the sandbox"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nsx() { ip netns exec "$@"; }
# extranetd of gateway $1 (a or b) in its host namespace; see scripts/demo.sh
# for why nsenter. With exec first, the shell becomes it: `(gwd exec a) &`
# leaves the daemon's own pid in $!.
gwd() {
	local run=
	if [ "$1" = exec ]; then
		run=exec
		shift
	fi
	local g=$1
	shift
	$run nsenter --net="/run/netns/excl$id$g" -- bin/extranetd --state-dir "$dir/$g" --netns "excl$id${g}x" \
		--interface "wgcl$id$g" --socket "$dir/$g.sock" --socket-group "" --endpoint "$vip:51820" \
		--stats-interval 2s "$@"
}
ctl() { # gateway, then extranetctl's arguments
	local g=$1
	shift
	echo "\$ extranetctl $* (on gw-$g)"
	EXTRANET_SOCKET=$dir/$g.sock bin/extranetctl "$@"
}
start() { # gateway, then extranetd's flags
	local g=$1
	shift
	(gwd exec "$g" "$@" >>"$dir/$g.log" 2>&1) &
	echo $! >"$dir/$g.pid"
	for _ in $(seq 75); do EXTRANET_SOCKET=$dir/$g.sock bin/extranetctl status >/dev/null 2>&1 && return; sleep 0.2; done
	echo "demo-cluster: gw-$g did not start:" >&2
	tail -20 "$dir/$g.log" >&2
	exit 1
}

echo "demo-cluster: building the LAN"
for ns in $lan $pa $srv excl${id}a excl${id}b; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$lan" link add br0 type bridge
ip -n "$lan" addr add 192.168.60.1/24 dev br0
ip -n "$lan" link set br0 up
port() { # ns addr: a port on the bridge, lan0 in ns
	ip -n "$lan" link add "p$1" type veth peer name lan0 netns "$1"
	ip -n "$lan" link set "p$1" master br0 up
	ip -n "$1" addr add "$2/24" dev lan0
	ip -n "$1" link set lan0 up
}
port excl${id}a 192.168.60.11
port excl${id}b 192.168.60.12
port "$pa" 192.168.60.100
port "$srv" "$server"
nsx "$srv" socat -T2 "TCP-LISTEN:22,fork,reuseaddr" SYSTEM:'echo hello' >/dev/null 2>&1 &
pids+=($!)

echo "demo-cluster: starting etcd"
mkfifo "$dir/etcd.url"
nsx "$lan" bin/demoetcd "$dir/etcd" 192.168.60.1 >"$dir/etcd.url" 2>"$dir/etcd.log" &
pids+=($!)
read -r etcd <"$dir/etcd.url"

echo "demo-cluster: gw-a's state becomes the cluster's"
start a
ctl a org create acme --display-name "ACME Corp" --grant "$server/32"
pid=$(cat "$dir/a.pid")
kill "$pid"
wait "$pid" || true
gwd a cluster init --etcd-endpoints "$etcd"
mkdir -m 700 "$dir/b"
install -m 600 "$dir/a/gateway.key" "$dir/b/gateway.key"

ha() { # gateway: its cluster flags; it answers the failsafe on its LAN address
	local n=11
	[ "$1" = b ] && n=12
	echo --etcd-endpoints "$etcd" --cluster-name "gw-$1" --vip "$vip/24" --vip-interface lan0 --cluster-listen "192.168.60.$n:51821"
}
start a $(ha a)
start b $(ha b)
active=
for _ in $(seq 50); do
	active=$(EXTRANET_SOCKET=$dir/a.sock bin/extranetctl cluster status -o json | jq -r '.active // empty')
	[ -n "$active" ] && break
	sleep 0.2
done
ctl a cluster status

ctl "${active#gw-}" peer issue acme/laptop --out "$dir/pa.conf"
WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go nsx "$pa" wg-quick up "$dir/pa.conf" >/dev/null 2>&1
echo "The partner's config names the shared address, whichever gateway answers:"
grep Endpoint "$dir/pa.conf"
# Pings through the tunnel every 50 ms, with their times, to see the gaps.
nsx "$pa" ping -D -n -i 0.05 -W 1 "$server" >"$dir/ping.log" 2>&1 &
pids+=($!)
sleep 3

# gap prints the longest the partner's pings went unanswered since line $1
# of the ping log.
gap() {
	tail -n +"$1" "$dir/ping.log" | sed -n 's/^\[\([0-9.]*\)\].*bytes from.*/\1/p' |
		awk 'NR > 1 && $1 - last > longest { longest = $1 - last } { last = $1 } END { printf "%.2f s\n", longest }'
}
whoisactive() { EXTRANET_SOCKET=$dir/$1.sock bin/extranetctl cluster status -o json | jq -r '.active // empty'; }

g=${active#gw-}
other=$([ "$g" = a ] && echo b || echo a)
# A gateway takes the role only once it reached etcd for twice the longest
# lease (docs/cluster.md): a kill before the standby is ready leaves the
# partner waiting for that, up to 4 s after the standby started.
ready() { [ "$(EXTRANET_SOCKET=$dir/$1.sock bin/extranetctl cluster status -o json | jq -r '.ready // false')" = true ]; }
for _ in $(seq 100); do ready "$other" && break; sleep 0.1; done
echo
echo "== kill -9 of the active, $active (systemd would run the stop hook after it)"
from=$(wc -l <"$dir/ping.log")
pid=$(cat "$dir/$g.pid")
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
gwd "$g" $(ha "$g") stop-hook >/dev/null 2>&1
for _ in $(seq 100); do [ "$(whoisactive "$other")" = "gw-$other" ] && break; sleep 0.1; done
sleep 2
echo "gw-$other took over; the partner went $(gap "$from") without an answer"
start "$g" $(ha "$g")
ctl "$other" cluster status

echo
echo "== a switchover back, for patching say"
for _ in $(seq 100); do ready "$g" && break; sleep 0.1; done
from=$(wc -l <"$dir/ping.log")
ctl "$g" cluster switchover
sleep 2
echo "the partner went $(gap "$from") without an answer"
ctl "$g" cluster status
echo
if [ -t 0 ] && [ -z "${CI:-}" ]; then
	read -r -p "demo-cluster: press Enter to remove the sandbox " _
fi
