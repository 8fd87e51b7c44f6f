# docs/lifecycle.md: a gateway with the organisation acme and its peer
# acme/laptop, whose audit trail the document's commands read.
gateway
extranetctl org create acme --grant 10.20.0.0/24 >/dev/null &&
	extranetctl peer issue acme/laptop --out /tmp/laptop.conf >/dev/null 2>&1 ||
	fail "acme and its peer laptop"
