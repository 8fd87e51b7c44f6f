# docs/alerts.md: what a receiver got, in a directory of its own: the
# body and the secret the page's example checks.

# alert_received: the documented body and secret, in the working
# directory.
alert_received() {
	cd "$(mktemp -d)" || return 1
	printf '%s' '{"id":"5f0c1e2d3a4b5c6d7e8f9a0b","kind":"expiry.soon","time":"2026-12-07T12:00:00Z","gateway":"vpn.example.com:51820","org":"acme","peer":"acme/laptop","text":"peer acme/laptop expires on 2026-12-10T12:00:00Z (in 72h0m0s); to keep it: `extranetctl peer extend acme/laptop --expires DATE`","details":{"expires":"2026-12-10T12:00:00Z"}}' >body.json &&
		echo 'hunter2-but-longer-0123456789' >alert.secret && chmod 600 alert.secret
}
