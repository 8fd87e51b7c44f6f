#!/bin/busybox sh
# The init of scripts/vm-run.sh's VM. Stage 1 runs from the busybox
# initramfs: it mounts the host's / (9p, read-only) under a tmpfs overlay and
# switches to it. Stage 2 runs on the host's own /bin/sh inside that root: it
# mounts the shares, runs the command from the runner and powers off. The
# exit code goes back through the "xfer" share; a missing one tells the
# runner that the VM died.

off() {
	sync
	echo 1 >/proc/sys/kernel/printk
	echo o >/proc/sysrq-trigger
	# Wait for the power-off with the shell alone: init must not exit (the
	# kernel would panic), and while the machine goes down a new program
	# may no longer start.
	while :; do :; done
}

if [ "$1" != stage2 ]; then
	/bin/busybox --install -s /bin
	export PATH=/bin
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	for m in $(cat /mods/order); do
		insmod "/mods/$m" || { echo "vm-init: insmod $m failed"; off; }
	done
	p9=trans=virtio,version=9p2000.L,msize=512000
	mount -t 9p -o "$p9,ro" hostroot /lower || { echo "vm-init: cannot mount the host's root"; off; }
	mount -t tmpfs -o mode=0755 tmpfs /upper
	mkdir /upper/u /upper/w
	mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /newroot ||
		{ echo "vm-init: cannot mount the overlay"; off; }
	cp /init /newroot/extranet-vm-init
	for d in proc sys dev; do mount --move "/$d" "/newroot/$d"; done
	exec switch_root /newroot /bin/sh /extranet-vm-init stage2
fi

# Stage 2: the host's tools from here on.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
p9=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
# wg-quick reads its config through /dev/fd.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /run/extranet-vm
mount -t 9p -o "$p9" xfer /run/extranet-vm || { echo "vm-init: cannot mount the xfer share"; off; }
x=/run/extranet-vm
kver=$(cat "$x/kver")
mkdir -p "/lib/modules/$kver"
mount --bind "$(cat "$x/cache")/modules/lib/modules/$kver" "/lib/modules/$kver"
work=$(cat "$x/workdir")
mkdir -p "$work"
mount -t 9p -o "$p9" work "$work" || { echo "vm-init: cannot mount the work share at $work"; off; }
hostname extranet-vm
echo /sbin/modprobe >/proc/sys/kernel/modprobe
/bin/sh "$x/cmd" </dev/null
echo $? >"$x/rc"
cd /
umount "$work" "$x"
off
