# docs/activity.md: a gateway (this machine), a partner of acme on the
# internet side running the stock wg-quick, and an internal network with
# the ERP host 10.20.0.10, which answers on TCP 22 and 443.
gateway
ip netns add lan &&
	ip link add extranet-lan type veth peer name eth0 netns lan &&
	ip addr add 10.20.0.1/24 dev extranet-lan && ip link set extranet-lan up &&
	ip -n lan addr add 10.20.0.10/24 dev eth0 && ip -n lan link set eth0 up && ip -n lan link set lo up &&
	ip -n lan route add default via 10.20.0.1 || fail "the internal network"
for port in 22 443; do
	ip netns exec lan socat TCP-LISTEN:$port,fork,reuseaddr EXEC:cat >/dev/null 2>&1 &
done
ip netns add partner &&
	ip link add extranet-inet type veth peer name inet netns partner &&
	ip addr add 203.0.113.1/24 dev extranet-inet && ip link set extranet-inet up &&
	ip -n partner addr add 203.0.113.7/24 dev inet && ip -n partner link set inet up && ip -n partner link set lo up ||
	fail "the partner's network"
echo '203.0.113.1 vpn.example.com' >>/etc/hosts
extranetctl org create acme --grant 10.20.0.10/32:tcp/22 --grant 10.20.0.10/32:tcp/443 >/dev/null &&
	extranetctl peer issue acme/laptop --out /tmp/acme.conf >/dev/null 2>&1 &&
	ip netns exec partner wg-quick up /tmp/acme.conf >/dev/null 2>&1 || fail "acme/laptop's tunnel"
wait_for 10 ip netns exec partner socat -T2 - TCP:10.20.0.10:22,connect-timeout=1 </dev/null || fail "the partner reaches the ERP host"

# partner_works: the partner opens an SSH-like session that moves some
# data and stays open, and a web request that is closed.
partner_works() {
	head -c 20000 /dev/zero | ip netns exec partner socat -T1 - TCP:10.20.0.10:443 >/dev/null || return 1
	(head -c 5000 /dev/zero; sleep 300) | ip netns exec partner socat - TCP:10.20.0.10:22 >/dev/null 2>&1 &
	wait_for 5 sh -c "ip netns exec extranet conntrack -L -p tcp --dport 22 2>/dev/null | grep -q ESTABLISHED"
}

# partner_probes: the partner tries the remote desktop port, three times.
partner_probes() {
	for i in 1 2 3; do
		ip netns exec partner socat -T1 - TCP:10.20.0.10:3389,connect-timeout=1 </dev/null >/dev/null 2>&1 && return 1
	done
	return 0
}

# refusals_recorded: the refusals are in the log (at the next read).
refusals_recorded() {
	wait_for 20 sh -c "extranetctl activity --denied -o json | grep -q 3389"
}
