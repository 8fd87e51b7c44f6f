#!/usr/bin/env bash
# Installs the .deb into a throwaway Debian (bookworm, minbase) in a chroot
# and checks what the package promises (docs/operations.md, "Install from a
# package"): files and modes, the extranet group, extranetctl --help and its
# man pages, an edited conffile kept across an upgrade, remove keeping the
# config and the state, purge removing /etc/extranet but not
# /var/lib/extranet. The host is not touched: nothing is installed on it, and
# the chroot runs no services (policy-rc.d says no, and without systemd
# running the maintainer scripts skip systemctl).
#   sudo scripts/test-packages.sh        (make test-packages)
# The debootstrapped tree is cached as a tarball in $CACHE
# (/var/cache/extranet-pkgtest), with the .debs apt fetched; delete it to
# start cold.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "test-packages: skipped, needs root (chroot)"; exit 0; fi
cd "$(dirname "$0")/.."
start=$SECONDS
cache=${CACHE:-/var/cache/extranet-pkgtest}
# The host's own Debian mirror, the one its apt already uses (the first
# archive that is not the security one), unless MIRROR names another.
host_mirror() {
	{ cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } |
		awk '/^[[:space:]]*#/ { next }
			$1 == "URIs:" || $1 == "deb" { u = $2; if (u ~ /^\[/) u = $3; if (u !~ /security/) { print u; exit } }'
}
mirror=${MIRROR:-$(host_mirror)}
[ -n "$mirror" ] || { echo "test-packages: no Debian mirror in the host's apt sources; set MIRROR" >&2; exit 1; }
suite=bookworm
tarball=$cache/$suite-minbase.tar
work=$(mktemp -d /tmp/extranet-pkgtest.XXXXXX)
root=$work/root

mounted() { awk -v r="$root" '$2 == r || index($2, r "/") == 1 { found = 1 } END { exit !found }' /proc/mounts; }
cleanup() {
	if [ -d "$root/proc/self" ]; then umount "$root/proc" || umount -l "$root/proc" || true; fi
	# Never rm -rf a tree with something mounted in it: it would reach
	# through the mount into the host.
	if mounted; then
		echo "test-packages: something is still mounted under $root; left $work in place" >&2
	else
		rm -rf "$work"
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
	echo
	echo "test-packages: $((SECONDS - start)) s"
	printf '  %s\n' "${results[@]}"
	if ((failed)); then
		echo "test-packages: FAIL (log: $work/log, kept)"
		trap - EXIT
		umount "$root/proc" 2>/dev/null || true
		exit 1
	fi
	echo "test-packages: PASS"
}
fatal() { fail "$1"; tail -n 30 "$work/log" >&2; summary; }

# In the chroot, with a clean environment; output goes to the log and to
# stdout for the caller to inspect.
in_root() {
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@" </dev/null 2>&1 | tee -a "$work/log"
	return "${PIPESTATUS[0]}"
}

# Makes the tree usable by apt: names resolve, /proc is there (unmounted by
# cleanup, also on failure), and no service starts, whatever a maintainer
# script asks (policy-rc.d; there is no systemd in a chroot either, so
# /run/systemd/system is absent and our scripts skip systemctl).
enter() {
	cp /etc/resolv.conf "$root/etc/resolv.conf"
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 0755 "$root/usr/sbin/policy-rc.d"
	[ ! -e "$root/run/systemd/system" ] || fatal "no systemd marker in the chroot"
	mount -t proc proc "$root/proc"
}

# Two packages: this tree's version, and a newer one to upgrade to.
v1=$(scripts/version.sh)
v2=$v1+newer
echo "test-packages: building $v1 and $v2"
DIST=$work/dist VERSION=$v1 scripts/package.sh deb >>"$work/log" 2>&1 || fatal "build $v1"
DIST=$work/dist VERSION=$v2 scripts/package.sh deb >>"$work/log" 2>&1 || fatal "build $v2"
deb1=$(basename "$work"/dist/extranet_"$v1"-1_*.deb)
deb2=$(basename "$work"/dist/extranet_"$v2"-1_*.deb)
# Warnings are explained in docs/operations.md; an error fails.
check "lintian: no errors" sh -c "lintian '$work/dist/$deb1' | tee -a '$work/lintian' && ! grep -q '^E:' '$work/lintian'"

# The base system: debootstrap once (a few minutes), then unpack the cached
# tree (seconds). Refreshed after 30 days, when its package lists age.
mkdir -p "$cache" "$root"
if [ -n "$(find "$tarball" -mtime +30 2>/dev/null)" ]; then rm -f "$tarball"; fi
if [ ! -s "$tarball" ]; then
	echo "test-packages: debootstrap $suite (cold, cached in $cache)"
	command -v debootstrap >/dev/null || fatal "debootstrap installed (apt-get install debootstrap)"
	debootstrap --variant=minbase "$suite" "$root" "$mirror" >>"$work/log" 2>&1 || fatal "debootstrap $suite"
	enter
	# man-db is the test's tool (man -w), not the package's dependency.
	in_root apt-get update -q >/dev/null || fatal "apt-get update in the chroot"
	in_root apt-get install -y -q --no-install-recommends man-db >/dev/null || fatal "install man-db in the chroot"
	in_root apt-get clean >/dev/null
	umount "$root/proc"
	rm "$root/usr/sbin/policy-rc.d"
	tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
else
	echo "test-packages: unpacking cached $suite"
	tar -C "$root" -xf "$tarball"
fi
enter
# apt's downloads (iptables, ipset, conntrack…) are kept between runs too.
mkdir -p "$cache/archives"
cp "$cache"/archives/*.deb "$root/var/cache/apt/archives/" 2>/dev/null || true
cp "$work/dist/$deb1" "$work/dist/$deb2" "$root/tmp/"

echo "test-packages: installing $deb1"
in_root apt-get update -q >/dev/null || fatal "apt-get update in the chroot"
# No recommends: wireguard-tools would pull a kernel module package.
out=$(in_root apt-get install -y -q --no-install-recommends "./tmp/$deb1") || fatal "apt-get install ./$deb1"
cp "$root"/var/cache/apt/archives/*.deb "$cache/archives/" 2>/dev/null || true
pass "apt-get install ./$deb1 (dependencies from $mirror)"
check "postinst says the daemon is not started" grep -q "not started; set endpoint" <<<"$out"
check "depends on iptables, ipset, conntrack; recommends wireguard-tools" \
	sh -c "chroot '$root' dpkg-query -W -f='\${Depends}|\${Recommends}' extranet | grep -qx 'iptables, ipset, conntrack|wireguard-tools'"

modes=$(in_root stat -c '%a %U:%G %n' /usr/bin/extranetd /usr/bin/extranetctl /etc/extranet/extranetd.yaml \
	/usr/lib/systemd/system/extranetd.service /usr/lib/systemd/system/extranetd-close.service \
	/usr/lib/systemd/system/extranet-expire.service \
	/usr/lib/systemd/system/extranet-expire.timer /usr/share/man/man1/extranetctl.1.gz \
	/usr/share/man/man1/extranetctl-peer-issue.1.gz /usr/share/man/man8/extranetd.8.gz \
	/usr/share/bash-completion/completions/extranetctl /usr/share/zsh/vendor-completions/_extranetctl \
	/usr/share/fish/vendor_completions.d/extranetctl.fish /usr/share/doc/extranet/copyright \
	/usr/share/doc/extranet/operations.md) || true
want="755 root:root /usr/bin/extranetd
755 root:root /usr/bin/extranetctl
644 root:root /etc/extranet/extranetd.yaml
644 root:root /usr/lib/systemd/system/extranetd.service
644 root:root /usr/lib/systemd/system/extranetd-close.service
644 root:root /usr/lib/systemd/system/extranet-expire.service
644 root:root /usr/lib/systemd/system/extranet-expire.timer
644 root:root /usr/share/man/man1/extranetctl.1.gz
644 root:root /usr/share/man/man1/extranetctl-peer-issue.1.gz
644 root:root /usr/share/man/man8/extranetd.8.gz
644 root:root /usr/share/bash-completion/completions/extranetctl
644 root:root /usr/share/zsh/vendor-completions/_extranetctl
644 root:root /usr/share/fish/vendor_completions.d/extranetctl.fish
644 root:root /usr/share/doc/extranet/copyright
644 root:root /usr/share/doc/extranet/operations.md"
check "files in place, modes and owners" diff <(echo "$want") <(echo "$modes")
check "conffile registered" grep -qx /etc/extranet/extranetd.yaml "$root/var/lib/dpkg/info/extranet.conffiles"
check "units run /usr/bin, nothing of /usr/local" sh -c "grep -q '^ExecStart=/usr/bin/extranetd ' '$root/usr/lib/systemd/system/extranetd.service' &&
	grep -q '^ExecStart=/usr/bin/extranetd .* stop-hook ' '$root/usr/lib/systemd/system/extranetd-close.service' &&
	grep -q '^ExecStart=/usr/bin/extranetctl expire' '$root/usr/lib/systemd/system/extranet-expire.service' &&
	! grep -rq /usr/local '$root/usr/lib/systemd/system/'extranet*"
check "the units' Documentation= files exist" sh -c "n=0; for d in \$(sed -n 's#^Documentation=file://##p' '$root'/usr/lib/systemd/system/extranet*); do test -s '$root'\$d || exit 1; n=\$((n + 1)); done; test \$n = 3"
check "no unit enabled" sh -c "! ls '$root'/etc/systemd/system/*/extranet* 2>/dev/null | grep -q ."
gid=$(in_root getent group extranet | cut -d: -f3) || true
check "group extranet created, a system group (gid $gid)" test -n "$gid" -a "${gid:-1000}" -lt 1000
check "account extranet-expire created, in group extranet" sh -c "chroot '$root' getent passwd extranet-expire | cut -d: -f4 | grep -qx '$gid'"
check "the expire unit runs as extranet-expire" grep -qx 'User=extranet-expire' "$root/usr/lib/systemd/system/extranet-expire.service"
check "extranetctl --help" sh -c "chroot '$root' extranetctl --help | grep -q 'peer'"
check "extranetd --help" sh -c "chroot '$root' extranetd --help | grep -q -- '--endpoint'"
check "extranetctl version says $v1" sh -c "chroot '$root' extranetctl version | grep -qF 'extranetctl $v1'"
check "man -w extranetctl" sh -c "chroot '$root' man -w extranetctl | grep -qx /usr/share/man/man1/extranetctl.1.gz"
check "man -w extranetctl-peer-issue" sh -c "chroot '$root' man -w extranetctl-peer-issue | grep -qx /usr/share/man/man1/extranetctl-peer-issue.1.gz"
check "man -w 8 extranetd" sh -c "chroot '$root' man -w 8 extranetd | grep -qx /usr/share/man/man8/extranetd.8.gz"
check "man renders extranetctl-peer-issue(1)" sh -c "chroot '$root' env MANPAGER=cat man extranetctl-peer-issue 2>/dev/null | grep -q -- '--public-key'"

echo "test-packages: upgrading to $deb2 with an edited config"
echo "endpoint: vpn.test.example:51820 # edited by test-packages" >>"$root/etc/extranet/extranetd.yaml"
# What the daemon would have left: the state it must never lose.
install -d -m 0700 "$root/var/lib/extranet"
echo state >"$root/var/lib/extranet/extranet.db"
if out=$(in_root apt-get install -y -q --no-install-recommends "./tmp/$deb2"); then
	pass "apt-get install ./$deb2 (upgrade)"
else
	fail "apt-get install ./$deb2 (upgrade)"
fi
check "upgraded to $v2" sh -c "chroot '$root' extranetctl version | grep -qF 'extranetctl $v2'"
check "edited conffile kept across the upgrade" grep -q "edited by test-packages" "$root/etc/extranet/extranetd.yaml"
check "no new-config copy beside it (the shipped one did not change)" test ! -e "$root/etc/extranet/extranetd.yaml.dpkg-dist"
check "upgrade does not print the first-install hint" sh -c "! grep -q 'not started' <<'X'
$out
X"

echo "test-packages: remove"
out=$(in_root apt-get remove -y -q extranet) || fail "apt-get remove extranet"
check "remove without systemd running touches nothing, and says how to clean up" grep -q "nothing stopped or removed.*extranetd cleanup" <<<"$out"
check "remove: binaries and units gone" sh -c "test ! -e '$root/usr/bin/extranetd' -a ! -e '$root/usr/bin/extranetctl' -a ! -e '$root/usr/lib/systemd/system/extranetd.service'"
check "remove: edited config kept" grep -q "edited by test-packages" "$root/etc/extranet/extranetd.yaml"
check "remove: /var/lib/extranet kept" test -s "$root/var/lib/extranet/extranet.db"

echo "test-packages: purge"
# dpkg purges the conffile itself; the script must take the rest of the
# directory (an admin's file here) with it.
echo "admin's note" >"$root/etc/extranet/notes"
out=$(in_root apt-get purge -y -q extranet) || fail "apt-get purge extranet"
check "purge: /etc/extranet removed, with a file dpkg does not own" test ! -e "$root/etc/extranet"
check "purge: /var/lib/extranet kept" test -s "$root/var/lib/extranet/extranet.db"
check "purge says /var/lib/extranet is kept" grep -q "kept /var/lib/extranet" <<<"$out"
check "purge: package gone from dpkg" sh -c "! chroot '$root' dpkg-query -W -f='\${Status}' extranet 2>/dev/null | grep -q installed"
summary
