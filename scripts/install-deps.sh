#!/usr/bin/env bash
# Installs the packages extranet needs to run and to be tested on a fresh
# Debian or Ubuntu host. Safe to run again. --check only says what is
# missing (exit 1 if anything is).
set -euo pipefail

# nftables: tests flush the host's nftables ruleset the way a firewall
# reload does. qemu-system-x86, cpio and xz-utils: scripts/vm-run.sh's VM, where the
# end-to-end tests run on kernel WireGuard. debootstrap and lintian:
# scripts/test-packages.sh's chroot and the .deb's lint. (To lint the .rpm
# by hand: apt-get install rpmlint rpm.) systemd-container: systemd-nspawn,
# in which scripts/test-systemd.sh boots the package under systemd.
# chromium and zbar-tools: the
# enrollment page is tested in a real browser, and its QR code decoded.
# openssl and jq: the demo's certificate and its partner's enrollment.
# rsyslog: the receiver of the activity log's syslog output, run by the
# end-to-end suite as docs/activity.md configures it (installing it does
# not start it where systemd is not running).
pkgs=(iptables ipset wireguard-tools wireguard-go iproute2 conntrack iputils-ping socat iperf3 kmod procps curl nftables
	qemu-system-x86 cpio xz-utils debootstrap lintian systemd-container chromium zbar-tools openssl jq rsyslog)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${1:-}" = --check ]; then
	# Says what a run would install, and installs nothing.
	if ((${#missing[@]})); then echo "missing: ${missing[*]}"; exit 1; fi
	exit 0
fi
if ((${#missing[@]})); then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
	echo "go is at /usr/local/go/bin; add it to PATH" >&2
fi
