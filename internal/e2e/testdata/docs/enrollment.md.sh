# docs/enrollment.md: a gateway that serves the enrollment page, the
# organisation and group the story invites into, and a partner on another
# network who enrolls through the link as the page would.

# The daemon runs with the document's own config file (its first yaml
# block), so a key it names that extranetd does not know fails the start.
mkdir -p /etc/extranet
awk '/^```yaml/ { on = 1; next } on && /^```/ { exit } on' "$ROOT/docs/enrollment.md" >/etc/extranet/extranetd.yaml
grep -q '^enroll-listen:' /etc/extranet/extranetd.yaml || fail "the document's config is not its first yaml block"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=vpn.example.com \
	-addext subjectAltName=DNS:vpn.example.com -keyout /etc/extranet/enroll.key -out /etc/extranet/enroll.crt 2>/dev/null ||
	fail "the page's certificate"
gateway --config /etc/extranet/extranetd.yaml

extranetctl org create acme --grant 10.20.0.0/24 --grant 10.20.5.10/32:tcp/443 >/dev/null &&
	extranetctl group create acme/support --grant 10.20.5.10/32:tcp/443 >/dev/null || fail "acme and its group support"

# The partner is on a network of its own, and comes from the address the
# document shows; vpn.example.com is the host's address on that network.
ip netns add partner &&
	ip link add extranet-inet type veth peer name inet netns partner &&
	ip addr add 203.0.113.1/24 dev extranet-inet && ip link set extranet-inet up &&
	ip -n partner addr add 203.0.113.7/24 dev inet && ip -n partner link set inet up && ip -n partner link set lo up ||
	fail "the partner's network"

# partner_api CALL JSON posts to the page's API what the page's script posts.
partner_api() {
	ip netns exec partner curl -sS --fail-with-body --max-time 10 \
		--cacert /etc/extranet/enroll.crt --resolve vpn.example.com:8443:203.0.113.1 \
		-H 'Content-Type: application/json' -d "$2" "https://vpn.example.com:8443/enroll/api/$1"
}

# partner_enrolls DEVICE opens the link the invite printed ($P) and submits
# the device with a key pair made on the partner's side, as the page does:
# only the public key leaves.
partner_enrolls() {
	local link
	link=$(grep -o 'https://[^ ]*#[A-Za-z0-9_-]*' "$P") || { echo "no link in what the invite printed"; return 1; }
	[ "${link%%#*}" = https://vpn.example.com:8443/enroll ] || { echo "the link is $link"; return 1; }
	partner_key=$(wg genkey)
	local sent
	sent=$(partner_api submit "{\"token\":\"${link#*#}\",\"device\":\"$1\",\"public_key\":\"$(echo "$partner_key" | wg pubkey)\",\"key_from\":\"browser\"}") ||
		{ echo "$sent"; return 1; }
	partner_request=$(echo "$sent" | jq -r .request)
	partner_secret=$(echo "$sent" | jq -r .secret)
	[ "$(echo "$sent" | jq -r .state)" = pending ] || { echo "$sent"; return 1; }
}

# partner_gets_config polls as the waiting page does, and builds the config
# around the private key that stayed with the partner.
partner_gets_config() {
	local st
	st=$(partner_api status "{\"request\":\"$partner_request\",\"secret\":\"$partner_secret\"}") || { echo "$st"; return 1; }
	[ "$(echo "$st" | jq -r .state)" = approved ] || { echo "$st"; return 1; }
	echo "$st" | jq -r .config | grep -q '@PRIVATE-KEY-MADE-IN-THE-PAGE@' || { echo "$st"; return 1; }
	echo "$st" | jq -r .config | sed "s|@PRIVATE-KEY-MADE-IN-THE-PAGE@|$partner_key|" >/tmp/laptop.conf
	grep -q "^Endpoint = vpn.example.com:51820$" /tmp/laptop.conf || { cat /tmp/laptop.conf; return 1; }
}
