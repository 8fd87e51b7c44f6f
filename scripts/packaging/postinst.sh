#!/bin/sh
# Runs after extranet's files are in place, for both package formats:
#   deb: postinst configure [OLD-VERSION]   (no OLD-VERSION: first install)
#   rpm: %post N                            (N=1 first install, N>=2 upgrade)
# It does the least: the group, a systemd reload, and on upgrade a restart of
# a daemon that was running. It never starts or enables extranetd: the admin
# must set `endpoint` first.
set -e

# Members may use extranetctl (the socket's group, socket-group in the config).
if ! getent group extranet >/dev/null; then
	groupadd --system extranet
fi
# The expire timer's account: in the socket's group, to reach the socket,
# and an expirer only (the daemon's first start assigns that role).
if ! getent passwd extranet-expire >/dev/null; then
	useradd --system --gid extranet --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin extranet-expire
fi

# In a chroot or a container without systemd there is nothing to reload or
# restart.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi

case "$1" in
configure) [ -n "$2" ] && action=upgrade || action=install ;;
1) action=install ;;
[0-9]*) action=upgrade ;;
*) action= ;; # abort-upgrade, abort-remove…: nothing to do.
esac

case "$action" in
install)
	echo "extranet: not started; set endpoint in /etc/extranet/extranetd.yaml, then: systemctl enable --now extranetd extranet-expire.timer"
	;;
upgrade)
	# try-restart: a stopped daemon stays stopped (the admin may be restoring).
	if [ -d /run/systemd/system ]; then
		systemctl try-restart extranetd.service || true
	fi
	;;
esac
exit 0
