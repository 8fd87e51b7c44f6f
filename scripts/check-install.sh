#!/usr/bin/env bash
# Proves that install is idempotent, keeps an edited config, and that
# uninstall leaves nothing behind: into a scratch prefix, with a scratch
# group, so the host's own /usr/local and /etc are not touched.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "check-install: skipped, needs root (groupadd)"; exit 0; fi
cd "$(dirname "$0")/.."
root=$(mktemp -d)
trap 'rm -rf "$root"; getent passwd "$EXPIRE_USER" >/dev/null && userdel "$EXPIRE_USER"; getent group "$GROUP" >/dev/null && groupdel "$GROUP"; true' EXIT
export PREFIX=$root/usr/local ETCDIR=$root/etc/extranet UNITDIR=$root/etc/systemd/system
export GROUP=extranet-check-$$ EXPIRE_USER=exp-check-$$
make -s build
# What a real host already has.
mkdir -p "$root/usr/local/bin" "$root/usr/local/share" "$root/etc/systemd/system"
before=$(cd "$root" && find . | sort)

scripts/install.sh install >/dev/null
scripts/install.sh install >/dev/null
for f in usr/local/bin/extranetd usr/local/bin/extranetctl etc/extranet/extranetd.yaml \
	etc/systemd/system/extranetd.service etc/systemd/system/extranetd-close.service etc/systemd/system/extranet-expire.timer; do
	[ -e "$root/$f" ] || { echo "check-install: $f missing after install" >&2; exit 1; }
done
getent group "$GROUP" >/dev/null || { echo "check-install: group not created" >&2; exit 1; }
[ "$(id -gn "$EXPIRE_USER" 2>/dev/null)" = "$GROUP" ] || { echo "check-install: the expire account was not created in the group" >&2; exit 1; }
grep -qx "User=$EXPIRE_USER" "$UNITDIR/extranet-expire.service" || { echo "check-install: the expire unit does not run as its account" >&2; exit 1; }
if command -v systemd-analyze >/dev/null; then
	complaints=$(systemd-analyze verify "$UNITDIR"/extranetd.service "$UNITDIR"/extranetd-close.service "$UNITDIR"/extranet-expire.service "$UNITDIR"/extranet-expire.timer 2>&1 || true)
	if [ -n "$complaints" ]; then
		echo "check-install: systemd-analyze verify: $complaints" >&2
		exit 1
	fi
fi

echo "# edited" >>"$ETCDIR/extranetd.yaml"
scripts/install.sh install >/dev/null
grep -q '^# edited' "$ETCDIR/extranetd.yaml" || { echo "check-install: install overwrote an edited config" >&2; exit 1; }
scripts/install.sh uninstall >/dev/null
grep -q '^# edited' "$ETCDIR/extranetd.yaml" || { echo "check-install: uninstall removed an edited config" >&2; exit 1; }
rm "$ETCDIR/extranetd.yaml"
rmdir "$ETCDIR"

after=$(cd "$root" && find . | sort)
if [ "$before" != "$after" ]; then
	echo "check-install: uninstall left files behind:" >&2
	diff <(echo "$before") <(echo "$after") >&2 || true
	exit 1
fi
getent group "$GROUP" >/dev/null && { echo "check-install: group left behind" >&2; exit 1; }
getent passwd "$EXPIRE_USER" >/dev/null && { echo "check-install: expire account left behind" >&2; exit 1; }
echo "check-install: install, reinstall and uninstall round-trip cleanly"
