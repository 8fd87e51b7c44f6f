#!/bin/sh
# Runs before extranet's files go, for both package formats:
#   deb: prerm remove | upgrade NEW-VERSION | …
#   rpm: %preun N                           (N=0 removal, N>=1 upgrade)
# On removal it stops and disables the units (their files are about to go,
# and an enablement link to a missing unit is an error at boot). It leaves
# the firewall rules, the interface and /var/lib/extranet alone: stopping is
# fail closed, and `extranetd cleanup` is the admin's choice. On upgrade it
# does nothing: postinst restarts a running daemon on the new binary.
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl disable --now extranet-expire.timer extranetd.service || true
fi
echo "extranet: extranetd stopped; firewall rules, interface and /var/lib/extranet kept (run extranetd cleanup before removing to drop the rules)"
exit 0
