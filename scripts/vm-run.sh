#!/usr/bin/env bash
# Runs one command as root inside a throwaway VM on a stock Debian kernel,
# which has the WireGuard module that many hosts (and CI) lack. The VM sees
# the host's / read-only under a tmpfs overlay, so the host's binaries (ip,
# iptables, ipset, wg, wg-quick, conntrack, our test binaries) run inside it
# unchanged; the current directory is shared read-write at the same path.
# Prints the command's output and exits with its exit code.
#
#   scripts/vm-run.sh [--mem MiB] [--timeout SECONDS] -- COMMAND [ARG...]
#
# The kernel and an initramfs are prepared on first use, from Debian's
# packages, into $EXTRANET_VM_CACHE (default /var/cache/extranet-vm).
# Variables named EXTRANET_* and CI are passed into the VM.
#
# Why software emulation (TCG): KVM on the machines we test on is a nested
# hypervisor that stock kernels fail under (MSR and instruction emulation
# errors); TCG boots them in 8-9 s. Use the VM for correctness, never speed.
set -euo pipefail

die() { echo "vm-run: $*" >&2; exit 125; }

mem=2048
timeout=1800
while (($#)); do
	case "$1" in
	--mem) mem=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--) shift; break ;;
	-*) die "unknown option $1 (usage: vm-run.sh [--mem MiB] [--timeout SECONDS] -- COMMAND...)" ;;
	*) break ;;
	esac
done
(($#)) || die "no command given (usage: vm-run.sh [--mem MiB] [--timeout SECONDS] -- COMMAND...)"
[ "$(id -u)" = 0 ] || die "needs root (the VM shares the host's / read-only and runs the command as root)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is not installed: apt-get install qemu-system-x86 (scripts/install-deps.sh does)"
for tool in apt-get apt-cache dpkg-deb depmod modprobe xz cpio gzip flock; do
	command -v "$tool" >/dev/null || die "$tool is needed to prepare the VM's kernel"
done

cache=${EXTRANET_VM_CACHE:-/var/cache/extranet-vm}

# prepare fetches Debian's current standard kernel (the "cloud" flavour
# lacks 9p) and busybox, and lays out the initramfs but for its init, which
# each run adds from vm-init.sh, so a changed init never meets a stale
# cache. A finished cache holds a "ready" file; anything less is rebuilt.
prepare() {
	local pkg dir tmp off kver
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	if [ -z "$pkg" ]; then
		apt-get update -q >&2 || true
		pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	fi
	[ -n "$pkg" ] || die "cannot find Debian's linux-image-amd64 package (is apt configured?)"
	dir=$cache/$pkg
	mkdir -p "$cache"
	chmod 0700 "$cache"
	# Two runs at once prepare the cache once.
	exec 9>"$cache/.lock"
	flock 9
	if [ -f "$dir/ready" ]; then
		echo "$dir"
		return
	fi
	echo "vm-run: preparing $pkg in $dir (once)" >&2
	# Kernels the package no longer points at are of no more use.
	find "$cache" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
	mkdir -p "$dir"
	tmp=$(mktemp -d)
	# A failure midway must not leave a half-made cache that looks ready.
	trap 'rm -rf "$tmp"' RETURN
	(cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$pkg" busybox-static >&2) ||
		die "apt-get download $pkg busybox-static failed"
	dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/k"
	dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/bb"
	kver=$(ls "$tmp/k/lib/modules")
	# The uncompressed kernel boots about 7 s faster under emulation than
	# vmlinuz, which decompresses itself instruction by instruction.
	off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$tmp/k/boot/vmlinuz-$kver" | head -1 | cut -d: -f1)
	[ -n "$off" ] || die "no xz payload in vmlinuz-$kver"
	tail -c +$((off + 1)) "$tmp/k/boot/vmlinuz-$kver" | xz -dc --single-stream >"$dir/vmlinux" 2>/dev/null || true
	[ -s "$dir/vmlinux" ] || die "could not extract the kernel from vmlinuz-$kver"
	# Debian's package ships no module index.
	depmod -b "$tmp/k" "$kver"
	mkdir -p "$dir/modules/lib"
	mv "$tmp/k/lib/modules" "$dir/modules/lib/"

	local ird=$dir/initramfs
	mkdir -p "$ird"/{bin,dev,proc,sys,mods,lower,upper,newroot}
	cp "$tmp/bb/bin/busybox" "$ird/bin/busybox"
	# What the initramfs needs to mount the host's root: 9p over virtio,
	# and overlayfs. The host's modprobe orders their dependencies.
	local m
	: >"$ird/mods/order"
	for m in virtio_pci 9pnet_virtio 9p overlay; do
		modprobe -d "$dir/modules" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
	done | awk '!seen[$0]++' | while read -r m; do
		cp "$m" "$ird/mods/"
		basename "$m" >>"$ird/mods/order"
	done
	echo "$kver" >"$dir/kver"
	touch "$dir/ready"
	echo "$dir"
}

dir=$(prepare)
kver=$(cat "$dir/kver")

xfer=$(mktemp -d /tmp/extranet-vm-XXXXXX)
trap 'rm -rf "$xfer"' EXIT
{
	echo "export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin"
	echo "export WG_COLOR_MODE=never TERM=dumb"
	while IFS='=' read -r name _; do
		case "$name" in EXTRANET_* | CI) printf 'export %s=%q\n' "$name" "${!name}" ;; esac
	done < <(env)
	printf 'cd %q\n' "$PWD"
	printf '%q ' "$@"
	echo
} >"$xfer/cmd"
printf '%s' "$PWD" >"$xfer/workdir"
echo "$kver" >"$xfer/kver"
echo "$dir" >"$xfer/cache"
# The initramfs: the cached tree, with this checkout's init appended as a
# second cpio archive (the kernel unpacks them in turn).
{
	(cd "$dir/initramfs" && find . | cpio -o -H newc --quiet)
	init=$xfer/init.d
	mkdir -p "$init"
	install -m 0755 "$(dirname "$0")/vm-init.sh" "$init/init"
	(cd "$init" && echo init | cpio -o -H newc --quiet)
} | gzip -1 >"$xfer/initramfs.gz"

# The work tree must be reachable at the same path inside; 9p exports of
# / span several host filesystems, hence multidevs=remap.
set +e
timeout --foreground -k 10 "$timeout" qemu-system-x86_64 \
	-M q35 -accel tcg,thread=multi -cpu max -smp 2 -m "$mem" \
	-nodefaults -no-reboot -display none -serial stdio \
	-kernel "$dir/vmlinux" -initrd "$xfer/initramfs.gz" \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 oops=panic" \
	-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
	-virtfs "local,path=$PWD,mount_tag=work,security_model=none,multidevs=remap" \
	-virtfs "local,path=$xfer,mount_tag=xfer,security_model=none" </dev/null | tr -d '\r'
qrc=${PIPESTATUS[0]}
set -e
if [ ! -f "$xfer/rc" ]; then
	((qrc == 124)) && die "the VM did not finish within ${timeout}s"
	die "the VM stopped before the command finished (qemu exit $qrc)"
fi
exit "$(cat "$xfer/rc")"
