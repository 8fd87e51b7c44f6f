# docs/firewall.md: a gateway with an organisation acme (id 1), its group
# support (id 2: the organisation's default group is 1) with a whole-prefix
# and a port grant, and a peer of that group, 100.64.1.1, for the inspection
# commands to look at.
gateway
extranetctl org create acme --grant 10.20.0.0/24 --grant 10.20.5.10/32:tcp/443 >/dev/null &&
	extranetctl group create acme/support --grant 10.20.0.128/25 --grant 10.20.5.10/32:tcp/443 >/dev/null &&
	extranetctl peer issue acme/tech --group support --out /tmp/tech.conf 2>/dev/null ||
	fail "acme, its group support and a peer"
[ "$(extranetctl group show acme/support -o json | jq .id)" = 2 ] || fail "acme/support's id is not the 2 the document names"
[ "$(extranetctl peer show acme/tech -o json | jq -r .address)" = 100.64.1.1 ] || fail "acme/tech's address is not the one the document names"

