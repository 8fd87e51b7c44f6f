#!/bin/sh
# Runs after extranet's files are gone, for both package formats:
#   deb: postrm remove | purge | upgrade NEW-VERSION | …
#   rpm: %postun N                          (N=0 removal, N>=1 upgrade)
# purge (deb only: rpm has no purge and keeps an edited config as .rpmsave)
# removes /etc/extranet. Never /var/lib/extranet: it holds the peers, the
# audit log and the gateway's private key, which partners' configs trust.
set -e

case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
	;;
purge)
	rm -rf /etc/extranet
	echo "extranet: removed /etc/extranet; kept /var/lib/extranet (state and gateway key): delete it yourself if you mean to"
	;;
esac
exit 0
