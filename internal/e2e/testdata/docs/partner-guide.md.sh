# docs/partner-guide.md: the reader is the partner, on a machine of its own
# (the sandbox's network) on the gateway's internet side, where
# vpn.example.com is the gateway host's address, and its admin's contact has
# sent the config file.
gateway_at gw
extranetctl org create acme --grant 10.20.0.0/24 >/dev/null || fail "acme"
ip link add inet type veth peer name extranet-inet netns gw &&
	ip -n gw addr add 203.0.113.1/24 dev extranet-inet && ip -n gw link set extranet-inet up &&
	ip addr add 203.0.113.7/24 dev inet && ip link set inet up ||
	fail "the partner's network"
echo '203.0.113.1 vpn.example.com' >>/etc/hosts
mkdir /tmp/partner && cd /tmp/partner &&
	extranetctl peer issue acme/laptop --out something.conf >/dev/null 2>&1 || fail "the partner's config"
