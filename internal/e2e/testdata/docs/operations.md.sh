# docs/operations.md: a running gateway with an organisation and a peer,
# whose state the backup takes and the rebuilt host gets back. The admin
# works in a directory of their own, where the key and the backup are
# kept and the import's CSV is.

# The backups land in the sandbox, not in the host's /var/backups.
mount -t tmpfs -o mode=755 tmpfs /var/backups || fail "a private /var/backups"
mkdir /tmp/admin && cd /tmp/admin || fail "the admin's directory"
gateway
extranetctl org create globex --grant 10.30.0.0/16:udp/5000-5010 >/dev/null &&
	extranetctl peer issue globex/phone --out phone.conf >/dev/null 2>&1 ||
	fail "globex and its peer phone"
