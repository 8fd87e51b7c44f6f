#!/bin/sh
# Runs before extranet's files go, for both package formats:
#   deb: prerm remove | upgrade NEW-VERSION | …
#   rpm: %preun N                           (N=0 removal, N>=1 upgrade)
# On removal it stops and disables the units (their files are about to go,
# and an enablement link to a missing unit is an error at boot); the stop
# takes the WireGuard link down. Then, while the binary is still here, it
# removes what the daemon made (`extranetd cleanup`): the gateway's network
# namespace, with the interface and the rules inside, the veth pair and our
# host rules. Nobody could remove them once the binary is gone, and a
# namespace left behind would hold a gateway no one enforces or can close.
# /etc/extranet and /var/lib/extranet stay. On upgrade it does nothing:
# postinst restarts a running daemon on the new binary, and the namespace
# and the link stay up across that restart.
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

# In a chroot or a container without systemd nothing was started by the
# package, and cleanup would reach the network of whoever runs this.
if [ ! -d /run/systemd/system ]; then
	echo "extranet: systemd is not running; nothing stopped or removed (if extranetd ran here, run extranetd cleanup before removing)"
	exit 0
fi
systemctl disable --now extranet-expire.timer extranetd.service || true
if extranetd --config /etc/extranet/extranetd.yaml cleanup; then
	echo "extranet: extranetd stopped; its network namespace, interface and firewall rules removed; /etc/extranet and /var/lib/extranet kept"
else
	echo "extranet: extranetd stopped, but extranetd cleanup failed (see above): remove what is left by hand (see /usr/share/doc/extranet/operations.md)" >&2
fi
exit 0
