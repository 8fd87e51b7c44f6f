#!/usr/bin/env bash
# Installs or removes extranet on this host. Idempotent.
#   sudo scripts/install.sh install     (make install)
#   sudo scripts/install.sh uninstall   (make uninstall; keeps /etc/extranet and /var/lib/extranet)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
etc=${ETCDIR:-/etc/extranet}
unitdir=${UNITDIR:-/etc/systemd/system}
group=${GROUP:-extranet}
expire_user=${EXPIRE_USER:-extranet-expire}
units=(extranetd.service extranetd-close.service extranet-expire.service extranet-expire.timer)

have_systemd() { [ -d /run/systemd/system ]; }

install_all() {
	[ -x bin/extranetd ] && [ -x bin/extranetctl ] || { echo "run make build first" >&2; exit 1; }
	install -d -m 0755 "$prefix/bin"
	install -m 0755 bin/extranetd bin/extranetctl "$prefix/bin/"
	install -d -m 0755 "$etc"
	# Never overwrite a config the admin edited; ship the new sample beside it.
	if [ -e "$etc/extranetd.yaml" ]; then
		cmp -s configs/extranetd.yaml "$etc/extranetd.yaml" || install -m 0644 configs/extranetd.yaml "$etc/extranetd.yaml.sample"
	else
		install -m 0644 configs/extranetd.yaml "$etc/extranetd.yaml"
	fi
	install -d -m 0755 "$unitdir"
	for u in "${units[@]}"; do
		sed -e "s#/usr/local/#$prefix/#g" -e "s#^User=extranet-expire\$#User=$expire_user#" "systemd/$u" >"$unitdir/$u.tmp"
		chmod 0644 "$unitdir/$u.tmp"
		mv "$unitdir/$u.tmp" "$unitdir/$u"
	done
	getent group "$group" >/dev/null || groupadd --system "$group"
	# The expire timer's account: in the socket's group, to reach the
	# socket, and an expirer only (the daemon's first start assigns it).
	getent passwd "$expire_user" >/dev/null ||
		useradd --system --gid "$group" --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$expire_user"
	install -d -m 0755 "$prefix/share/doc/extranet"
	install -m 0644 README.md docs/*.md "$prefix/share/doc/extranet/"
	install -d -m 0755 "$prefix/share/bash-completion/completions"
	"$prefix/bin/extranetctl" completion bash >"$prefix/share/bash-completion/completions/extranetctl"
	if have_systemd; then systemctl daemon-reload; fi
	echo "installed; edit $etc/extranetd.yaml (set endpoint), then: systemctl enable --now extranetd extranet-expire.timer"
}

uninstall_all() {
	if have_systemd; then
		systemctl disable --now extranet-expire.timer extranetd.service 2>/dev/null || true
	fi
	for u in "${units[@]}"; do rm -f "$unitdir/$u"; done
	if have_systemd; then systemctl daemon-reload; fi
	rm -f "$prefix/bin/extranetd" "$prefix/bin/extranetctl" "$prefix/share/bash-completion/completions/extranetctl"
	rm -rf "$prefix/share/doc/extranet"
	rmdir "$prefix/share/doc" 2>/dev/null || true
	rm -f "$etc/extranetd.yaml.sample"
	# An untouched config goes; an edited one is the admin's and stays.
	if cmp -s configs/extranetd.yaml "$etc/extranetd.yaml"; then
		rm -f "$etc/extranetd.yaml"
		rmdir "$etc" 2>/dev/null || true
	fi
	rmdir "$prefix/share/bash-completion/completions" "$prefix/share/bash-completion" 2>/dev/null || true
	if getent passwd "$expire_user" >/dev/null; then userdel "$expire_user"; fi
	if getent group "$group" >/dev/null; then groupdel "$group"; fi
	echo "uninstalled; kept /var/lib/extranet (the state) and any edited config; run extranetd cleanup before uninstalling to remove firewall rules"
}

case "${1:-}" in
install) install_all ;;
uninstall) uninstall_all ;;
*) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
