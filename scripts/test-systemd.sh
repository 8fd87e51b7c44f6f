#!/usr/bin/env bash
# Boots the .deb under systemd as a new user runs it: a Debian 12 tree with
# systemd 252 as PID 1 in systemd-nspawn, where the documents' systemd
# examples run as written (README's Install, operations.md's install and
# lifecycle.md's timer: `make packages` here on the host, then `sudo apt
# install ./dist/extranet_*.deb`, `sudoedit` to set `endpoint`, `sudo
# systemctl enable --now extranetd extranet-expire.timer` … in the
# container; see internal/tools/docexamples). Checks that the service is
# active on the namespace the host sees (`ip netns exec extranet iptables
# -S` shows its rules), a member of the `extranet` group (alice, whom the
# examples add) uses extranetctl and a non-member is refused, a stock
# wg-quick partner reaches exactly its grant, a restart and a kill -9 keep
# the namespace, the expire timer's job runs, a stop (and a crash loop
# systemd gives up on, and a stop during an automatic restart) takes the
# WireGuard link down while the rules stay, and removing the package
# removes the namespace.
#   sudo scripts/test-systemd.sh        (part of make test)
# The container's network is a namespace built here, joined by veth pairs
# to a partner namespace and an internal host namespace (10.77.1.10:8080
# granted; 10.77.1.10:8081 and 10.77.1.20 not); the host's own interfaces,
# routes and firewall are not touched. Without the kernel module the
# daemon runs wireguard-go, whose interface ends with the process: the link
# checks use a stand-in interface in the gateway namespace while the daemon
# cannot start (operations.md says what this proves and what not).
# The Debian tree is scripts/test-packages.sh's (cached in
# /var/cache/extranet-pkgtest), with systemd, sudo and the package's
# dependencies added once and cached beside it. About 60 s after the cache.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "test-systemd: skipped, needs root (systemd-nspawn)"; exit 0; fi
cd "$(dirname "$0")/.."
start=$SECONDS
GO=${GO:-go}
cache=${CACHE:-/var/cache/extranet-pkgtest}
base=$cache/bookworm-minbase.tar
tarball=$cache/bookworm-systemd.tar
# What the tree adds to the base: systemd, iproute2 (an admin's ip netns
# exec), sudo (the examples' commands), the package's dependencies and
# wireguard-tools, which it recommends (without wireguard-tools' own
# Recommends, a kernel: the container runs on the host's), so that the
# examples' apt install needs no network and asks nothing. A change remakes
# it.
added="systemd iproute2 sudo iptables ipset conntrack wireguard-tools"
work=$(mktemp -d /tmp/extranet-systemdtest.XXXXXX)
root=$work/root
id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
box=xsd${id}box pt=xsd${id}pt in=xsd${id}in
conf=$work/xsdwg.conf
npid= leader= partner_up=
servers=()

mounted() { awk -v r="$root" '$2 == r || index($2, r "/") == 1 { found = 1 } END { exit !found }' /proc/mounts; }
stop_container() {
	[ -n "$npid" ] || return 0
	# nspawn shuts the container down on SIGTERM; its namespaces (and the
	# gateway namespace pinned in its /run) go with it.
	kill -TERM "$npid" 2>/dev/null || true
	for _ in $(seq 60); do kill -0 "$npid" 2>/dev/null || break; sleep 0.25; done
	kill -KILL "$npid" 2>/dev/null || true
	wait "$npid" 2>/dev/null || true
	npid=
}
cleanup() {
	local rc=$?
	if [ -n "$partner_up" ]; then ip netns exec "$pt" wg-quick down "$conf" >/dev/null 2>&1 || true; fi
	for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; done
	stop_container
	for ns in "$box" "$pt" "$in"; do ip netns del "$ns" 2>/dev/null || true; done
	if [ -d "$root/proc/self" ]; then umount "$root/proc" || umount -l "$root/proc" || true; fi
	# Never rm -rf a tree with something mounted in it: it would reach
	# through the mount into the host.
	if mounted; then
		echo "test-systemd: something is still mounted under $root; left $work in place" >&2
	elif [ -z "${keep:-}" ] && [ "$rc" = 0 ]; then
		rm -rf "$work"
	else
		echo "test-systemd: log in $work/log"
	fi
}
trap cleanup EXIT

results=()
failed=0
pass() { results+=("PASS  $1"); }
fail() { results+=("FAIL  $1"); failed=1; }
check() { # check DESCRIPTION COMMAND...: PASS when the command succeeds.
	local what=$1
	shift
	if "$@" >>"$work/log" 2>&1; then pass "$what"; else fail "$what"; fi
}
summary() {
	if ((failed)) && [ -n "$leader" ]; then
		in_box journalctl -u extranetd -u extranetd-close --no-pager -n 60 >/dev/null 2>&1 || true
	fi
	echo
	echo "test-systemd: $((SECONDS - start)) s"
	printf '  %s\n' "${results[@]}"
	if ((failed)); then
		keep=1
		echo "test-systemd: FAIL (log: $work/log, kept)"
		exit 1
	fi
	echo "test-systemd: PASS"
}
fatal() { fail "$1"; tail -n 30 "$work/log" >&2; summary; }

# A command in the chroot (before boot), with a clean environment.
in_root() {
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@" </dev/null 2>&1 | tee -a "$work/log"
	return "${PIPESTATUS[0]}"
}
# A command in the booted container, as from a root shell there.
in_box() {
	nsenter -t "$leader" -m -u -i -n -p -C -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@" </dev/null 2>&1 | tee -a "$work/log"
	return "${PIPESTATUS[0]}"
}
# poll SECONDS COMMAND...: until the command succeeds, at most that long.
poll() {
	local until=$((SECONDS + $1))
	shift
	while ! "$@" >>"$work/log" 2>&1; do
		((SECONDS < until)) || return 1
		sleep 0.5
	done
}
enter_root() {
	cp /etc/resolv.conf "$root/etc/resolv.conf"
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 0755 "$root/usr/sbin/policy-rc.d"
	mount -t proc proc "$root/proc"
}
leave_root() {
	umount "$root/proc"
	rm "$root/usr/sbin/policy-rc.d"
}

for tool in systemd-nspawn nsenter wg-quick wireguard-go socat; do
	command -v "$tool" >/dev/null || fatal "$tool installed (scripts/install-deps.sh)"
done

# The examples' first command, `make packages`, is the build: run here, in
# the checkout, as the reader does. The rest runs in the container.
v=$(scripts/version.sh)
echo "test-systemd: make packages ($v)"
GO=$GO make packages >>"$work/log" 2>&1 || fatal "make packages"
deb=$(cd dist && ls extranet_"$v"-1_*.deb) || fatal "make packages made dist/extranet_$v-1_*.deb"
$GO run ./internal/tools/docexamples -host 'make packages' README.md docs/*.md \
	>"$work/examples.sh" 2>>"$work/log" || fatal "the systemd examples of the docs (internal/tools/docexamples)"

mkdir -p "$root" "$cache/archives"
if [ ! -s "$base" ]; then
	echo "test-systemd: no cached Debian tree; scripts/test-packages.sh makes it"
	GO=$GO scripts/test-packages.sh >>"$work/log" 2>&1 || fatal "scripts/test-packages.sh (the cached Debian tree)"
fi
if [ ! -s "$tarball" ] || [ "$base" -nt "$tarball" ] || [ "$(cat "$tarball.added" 2>/dev/null)" != "$added" ]; then
	echo "test-systemd: adding $added to the cached tree (cold, cached in $tarball)"
	tar -C "$root" -xf "$base"
	enter_root
	cp "$cache"/archives/*.deb "$root/var/cache/apt/archives/" 2>/dev/null || true
	in_root apt-get update -q >/dev/null || fatal "apt-get update in the tree"
	# shellcheck disable=SC2086 # a list of names
	in_root apt-get install -y -q --no-install-recommends $added >/dev/null || fatal "install $added in the tree"
	cp "$root"/var/cache/apt/archives/*.deb "$cache/archives/" 2>/dev/null || true
	in_root apt-get clean >/dev/null
	leave_root
	tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball" && echo "$added" >"$tarball.added"
else
	echo "test-systemd: unpacking cached tree"
	tar -C "$root" -xf "$tarball"
fi

# What the examples find: their working directory, a checkout with only the
# dist/ make packages filled (one .deb, so that the glob names one);
# sudoedit's editor, which makes the edit the comment describes with the
# address the partner dials here; alice, the admin the examples add to the
# extranet group, and bob, who stays out of it.
enter_root
mkdir -p "$root/root/extranet/dist"
cp "dist/$deb" "$root/root/extranet/dist/"
cp "$work/examples.sh" "$root/root/examples.sh"
cat >"$root/root/set-endpoint" <<'EDITOR'
#!/bin/sh
sed -i 's/^#* *endpoint:.*/endpoint: 192.0.2.1:51820/' "$1" && grep -qx 'endpoint: 192.0.2.1:51820' "$1"
EDITOR
chmod 0755 "$root/root/set-endpoint"
# The line a Debian install writes, without which sudo warns it cannot
# resolve the host's name.
echo "127.0.1.1	$(cat "$root/etc/hostname")" >>"$root/etc/hosts"
in_root useradd --create-home alice >/dev/null || fatal "useradd alice"
in_root useradd --create-home bob >/dev/null || fatal "useradd bob"
leave_root

# The container's network: a namespace of its own, a partner on one side,
# an internal host on the other.
for ns in "$box" "$pt" "$in"; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done
ip -n "$box" link add ext0 type veth peer name up0 netns "$pt"
ip -n "$box" link add int0 type veth peer name eth0 netns "$in"
ip -n "$box" addr add 192.0.2.1/24 dev ext0
ip -n "$box" addr add 10.77.1.1/24 dev int0
ip -n "$pt" addr add 192.0.2.2/24 dev up0
ip -n "$in" addr add 10.77.1.10/24 dev eth0
ip -n "$in" addr add 10.77.1.20/24 dev eth0
for l in "$box ext0" "$box int0" "$pt up0" "$in eth0"; do
	read -r ns dev <<<"$l"
	ip -n "$ns" link set "$dev" up
done
ip -n "$in" route add default via 10.77.1.1
for a in 10.77.1.10:8080 10.77.1.10:8081 10.77.1.20:8080; do
	ip netns exec "$in" socat "TCP-LISTEN:${a#*:},bind=${a%:*},fork,reuseaddr" "SYSTEM:echo reached" >>"$work/log" 2>&1 &
	servers+=($!)
done

echo "test-systemd: booting"
systemd-nspawn -q -D "$root" --machine="xsd$id" --boot --network-namespace-path="/run/netns/$box" \
	--capability=all --register=no --keep-unit --bind=/dev/net/tun --console=passive \
	>"$work/nspawn.log" 2>&1 </dev/null &
npid=$!
find_leader() {
	local p
	for p in $(pgrep -P "$npid"); do
		if grep -q '^NSpid:.*[[:space:]]1$' "/proc/$p/status" 2>/dev/null; then leader=$p; fi
	done
	[ -n "$leader" ]
}
poll 15 find_leader || fatal "systemd-nspawn started the container (log: $work/nspawn.log)"
booted() { [[ "$(in_box systemctl is-system-running)" =~ ^(running|degraded)$ ]]; }
poll 30 booted || fatal "the container booted"
pass "booted systemd $(in_box systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p') as PID 1"

cursor() { in_box journalctl -n0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'; }
# logged CURSOR REGEXP: the hooks logged a line matching since CURSOR.
logged() { grep -qE "$2" <<<"$(in_box journalctl --after-cursor="$1" -u extranetd -u extranetd-close -o cat --no-pager)"; }
active() { [ "$(in_box systemctl is-active extranetd)" = active ]; }
nsid() { in_box stat -L -c %i /run/netns/extranet; }
rules() {
	local out
	out=$(in_box ip netns exec extranet iptables -S) && grep -q -- '-P FORWARD DROP' <<<"$out" && grep -q -- '-N EXTRANET-FWD' <<<"$out"
}
reach() { grep -q reached <<<"$(ip netns exec "$pt" socat -T2 - "TCP:$1,connect-timeout=2" </dev/null 2>>"$work/log")"; }
refused() { ! reach "$1"; }
link_up() { grep -qE '[<,]UP[,>]' <<<"$(in_box ip -n extranet -o link show wg-ext)"; }
link_down() { in_box ip -n extranet -o link show wg-ext && ! link_up; }

# Checks that need the container's mount or network namespace only.
modes() { [ "$(nsenter -t "$leader" -m stat -c '%a %U:%G' /run/extranet /run/extranet/extranetd.sock /var/lib/extranet | tr '\n' ' ')" = '750 root:extranet 660 root:extranet 700 root:root ' ]; }
no_tcp() {
	local out
	out=$(in_box ss -Hltnp) && ! grep -q extranetd <<<"$out"
}
bob_refused() {
	local out
	! out=$(in_box runuser -u bob -- extranetctl status) && grep -q 'permission denied' <<<"$out"
}
same_ns() { active && [ -n "$before" ] && [ "$(nsid)" = "$before" ]; }
expire_runs() { in_box timeout 60 systemctl start extranet-expire.service && [ "$(in_box systemctl show -p Result --value extranet-expire.service)" = success ]; }
ns_gone() {
	local out
	out=$(in_box ip netns list) && ! grep -q extranet <<<"$out" && ! in_box ip link show extranet0
}
no_rules() {
	local out
	out=$(in_box iptables -S) && ! grep -qi extranet <<<"$out"
}
no_failed() {
	local out
	out=$(in_box systemctl --failed --no-legend) && ! grep -q extranet <<<"$out"
}

echo "test-systemd: the docs' systemd examples, as written"
rc=0
out=$(in_box env -C /root/extranet SUDO_EDITOR=/root/set-endpoint timeout 300 bash /root/examples.sh) || rc=$?
# A PASS for each command the script announced (its comment aside), but
# the last if it failed.
mapfile -t ran < <(sed -n 's/^+ //p' <<<"$out")
for i in "${!ran[@]}"; do
	if ((rc && i == ${#ran[@]} - 1)); then fail "${ran[i]%%  *#*}"; else pass "${ran[i]%%  *#*}"; fi
done
((rc == 0)) || fatal "the docs' systemd examples ran (failed line: $(tail -n1 <<<"$out"))"
check "extranetd is active" active
check "its rules are in the namespace the host sees (ip netns exec extranet iptables -S)" rules
check "its interface is there too (ip -n extranet link show wg-ext)" in_box ip -n extranet link show wg-ext
check "socket root:extranet 0660 in /run/extranet root:extranet 0750; state 0700" modes
check "no TCP listener" no_tcp
check "a member of extranet uses extranetctl" in_box runuser -u alice -- extranetctl status
check "a user outside it is refused" bob_refused
# The unit's sandbox lets it turn on conntrack accounting in the gateway
# namespace (ReadWritePaths=/proc/sys/net), which the activity log needs.
activity_on() { out=$(in_box extranetctl status) && grep -q '^Activity: .*flows recorded' <<<"$out"; }
check "the activity log records (status: Activity … flows recorded)" activity_on
if in_box runuser -u alice -- extranetctl org create acme --grant 10.77.1.10/32:tcp/8080 >/dev/null; then
	# The config as issued (stdout alone), routed wider than the grant, as
	# a partner may edit it: the gateway decides.
	nsenter -t "$leader" -m -u -i -n -p -C -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
		runuser -u alice -- extranetctl peer issue acme/laptop 2>>"$work/log" </dev/null |
		sed 's#^AllowedIPs = .*#AllowedIPs = 10.77.1.0/24#' >"$conf" || true
	chmod 0600 "$conf"
	if ip netns exec "$pt" env WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
		wg-quick up "$conf" >>"$work/log" 2>&1; then
		partner_up=1
	fi
fi
check "a stock wg-quick partner reaches its grant (10.77.1.10:8080)" poll 15 reach 10.77.1.10:8080
check "  and not another port (10.77.1.10:8081)" refused 10.77.1.10:8081
check "  nor another address (10.77.1.20:8080)" refused 10.77.1.20:8080
# The unit's sandbox lets it read the firewall's refusals (NFLOG, a netlink
# socket in the gateway namespace).
refusal_recorded() { out=$(in_box extranetctl activity --denied -o json) && grep -q '"port":8081,.*"reason":"not-granted"' <<<"$out"; }
check "  the refusals are recorded (extranetctl activity --denied)" poll 25 refusal_recorded

echo "test-systemd: restart, kill -9, expire"
before=$(nsid) || true
c=$(cursor)
check "systemctl restart extranetd" in_box timeout 60 systemctl restart extranetd
check "restart: active, on the same namespace" same_ns
check "restart: the stop hook keeps the link (job restart)" logged "$c" 'link left as it is: systemd starts the daemon again \(job restart\)'
check "restart: the partner reaches its grant again" poll 15 reach 10.77.1.10:8080
main=$(in_box systemctl show -p MainPID --value extranetd) || true
c=$(cursor)
in_box systemctl kill -s KILL --kill-who=main extranetd >/dev/null || true
# Active again under another process: right after a kill, systemd can say
# "active" with MainPID 0 for a moment, before it has noticed.
restarted() {
	local pid
	active && pid=$(in_box systemctl show -p MainPID --value extranetd) && [ "$pid" != 0 ] && [ "$pid" != "$main" ]
}
check "kill -9: systemd restarts it" poll 20 restarted
check "kill -9: on the same namespace" poll 10 same_ns
check "kill -9: the stop hook keeps the link (result signal)" logged "$c" 'link left as it is: the daemon ended with signal'
# A hung daemon (stopped: it feeds the watchdog no more) is restarted by
# systemd's watchdog, shortened here, and keeps the namespace and the link.
in_box mkdir -p /run/systemd/system/extranetd.service.d >/dev/null || true
in_box sh -c 'printf "[Service]\nWatchdogSec=6s\nTimeoutAbortSec=2s\n" >/run/systemd/system/extranetd.service.d/watchdog.conf' >/dev/null || true
in_box systemctl daemon-reload >/dev/null || true
check "watchdog: a restart under a 6 s watchdog" in_box timeout 60 systemctl restart extranetd
main=$(in_box systemctl show -p MainPID --value extranetd) || true
check "watchdog: fed while the daemon runs (alive after 9 s)" sh -c 'sleep 9'
check "  the same process" test "$(in_box systemctl show -p MainPID --value extranetd)" = "$main"
c=$(cursor)
in_box systemctl kill -s STOP --kill-who=main extranetd >/dev/null || true
check "watchdog: a hung daemon is restarted" poll 40 restarted
check "watchdog: on the same namespace" poll 10 same_ns
check "watchdog: the stop hook keeps the link" logged "$c" 'link left as it is'
check "watchdog: the partner reaches its grant again" poll 15 reach 10.77.1.10:8080
in_box rm -f /run/systemd/system/extranetd.service.d/watchdog.conf >/dev/null || true
in_box systemctl daemon-reload >/dev/null || true
check "the expire timer is active" in_box systemctl is-active extranet-expire.timer
check "the expire job runs and succeeds" expire_runs

echo "test-systemd: stop, crash loop"
c=$(cursor)
check "systemctl stop extranetd" in_box timeout 60 systemctl stop extranetd
check "stop: the stop hook closes the link" logged "$c" 'link closed: the unit is being stopped'
check "stop: the rules stay (fail closed)" rules
check "stop: the partner reaches nothing" refused 10.77.1.10:8080
# A daemon that cannot start (a bad log level) leaves whatever interface
# an earlier run left up: a veth pair stands in for a kernel one.
stand_in() { in_box ip -n extranet link add wg-ext type veth peer name wg-ext-peer && in_box ip -n extranet link set wg-ext up; }
in_box sed -i 's/^log-level: .*/log-level: broken/' /etc/extranet/extranetd.yaml >/dev/null || true
in_box systemctl reset-failed extranetd >/dev/null 2>&1 || true
stand_in >/dev/null || fail "a stand-in interface in the gateway namespace"
c=$(cursor)
in_box timeout 60 systemctl start extranetd >/dev/null 2>&1 || true
check "crash loop: the link stays up while systemd restarts" link_up
gave_up() { [ "$(in_box systemctl is-failed extranetd)" = failed ] && link_down; }
check "crash loop: systemd gives up (StartLimitBurst) and the link goes down" poll 40 gave_up
check "crash loop: extranetd-close.service closed it" logged "$c" 'link closed: the unit is failed'
in_box systemctl reset-failed extranetd >/dev/null 2>&1 || true
in_box ip -n extranet link set wg-ext up >/dev/null || true
in_box timeout 60 systemctl start extranetd >/dev/null 2>&1 || true
c=$(cursor)
check "stop during an automatic restart" in_box timeout 60 systemctl stop extranetd
check "  takes the link down too (OnSuccess)" poll 10 link_down
check "  extranetd-close.service closed it" logged "$c" 'link closed: the unit is inactive'
in_box ip -n extranet link del wg-ext >/dev/null || true
in_box sed -i 's/^log-level: broken/log-level: info/' /etc/extranet/extranetd.yaml >/dev/null || true
in_box systemctl reset-failed extranetd >/dev/null 2>&1 || true
check "a start after all that" in_box timeout 60 systemctl start extranetd
check "  and the partner reaches its grant again" poll 20 reach 10.77.1.10:8080

# Without the pin ExecStartPre makes, the sandboxed daemon must not make
# a namespace only it would see, nor leave the host an empty pin.
dropin=/run/systemd/system/extranetd.service.d
unpinned() { ! in_box test -e /run/netns/extranet; }
in_box timeout 60 systemctl stop extranetd >/dev/null || true
in_box ip netns del extranet >/dev/null || true
in_box mkdir -p "$dropin" >/dev/null && in_box sh -c "printf '[Service]\nExecStartPre=\n' >$dropin/no-pin.conf" >/dev/null || true
in_box systemctl daemon-reload >/dev/null || true
c=$(cursor)
check "sandboxed start without the host's pin fails" sh -c "! nsenter -t $leader -m -u -i -n -p -C -- timeout 60 systemctl start extranetd"
in_box timeout 60 systemctl stop extranetd >/dev/null 2>&1 || true
check "  saying how to pin it" logged "$c" 'Pin the namespace in the host.s mount namespace first'
check "  and pins nothing" unpinned
in_box rm -r "$dropin" >/dev/null || true
in_box systemctl daemon-reload >/dev/null || true
in_box systemctl reset-failed extranetd >/dev/null 2>&1 || true
check "the unit pins it again and starts" in_box timeout 60 systemctl start extranetd
check "  on a namespace the host sees" rules

echo "test-systemd: remove"
check "apt-get remove extranet" in_box apt-get remove -y -q extranet
check "remove: the namespace and the veth are gone" ns_gone
check "remove: no extranet rule left in the container's own firewall" no_rules
check "remove: no extranet unit failed" no_failed
summary
