#!/usr/bin/env bash
# A whole extranet gateway in network namespaces, in one command:
#   sudo scripts/demo.sh
# It installs what is missing, builds, creates a sandbox (a gateway, two
# partner organisations, two internal hosts), runs the real extranetd,
# issues configs with the real extranetctl, brings the partners up with the
# stock wg-quick, prints who reaches what, and removes everything on exit or
# Ctrl-C. The host's own firewall, routes and interfaces are never touched.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "demo: run as root (it creates network namespaces): sudo $0" >&2
	exit 1
fi
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
export PATH="$PATH:/usr/local/go/bin"
make -s build

id=$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
gw=exdemo${id}gw gwns=exdemo${id}xg pa=exdemo${id}pa pb=exdemo${id}pb i1=exdemo${id}i1 i2=exdemo${id}i2
ifname=wgdemo$id
dir=$(mktemp -d /tmp/extranet-demo.XXXXXX)
chmod 700 "$dir"
export EXTRANET_SOCKET=$dir/extranetd.sock
daemon_pid= pids=()

cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for ns in $pa $pb; do
		[ -f "$dir/$ns.conf" ] && ip netns exec "$ns" wg-quick down "$dir/$ns.conf" >/dev/null 2>&1
	done
	if [ -n "$daemon_pid" ]; then
		kill "$daemon_pid" 2>/dev/null
		wait "$daemon_pid" 2>/dev/null
		"${gwd[@]}" cleanup --interface "$ifname" --netns "$gwns" >/dev/null 2>&1
	fi
	for ns in $gw $gwns $pa $pb $i1 $i2; do ip netns del "$ns" 2>/dev/null; done
	rm -f "/var/run/wireguard/$ifname.sock"
	rm -rf "$dir"
	echo "demo: removed the sandbox"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nsx() { ip netns exec "$@"; }
# extranetd in the sandbox's host namespace, $gw. nsenter, not ip netns exec:
# the gateway namespace it pins under /run/netns must be seen from outside,
# and ip netns exec would give it a mount namespace of its own.
# An array, not a function: run in the background, a function would be a
# subshell, and $! its pid rather than the daemon's.
gwd=(nsenter --net="/run/netns/$gw" -- bin/extranetd)
link() { # ns1 if1 addr1 ns2 if2 addr2
	ip -n "$1" link add "$2" type veth peer name "$5" netns "$4"
	ip -n "$1" addr add "$3" dev "$2"; ip -n "$4" addr add "$6" dev "$5"
	ip -n "$1" link set "$2" up; ip -n "$4" link set "$5" up
}

echo "demo: building the sandbox"
for ns in $gw $pa $pb $i1 $i2; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$gw" addr add 198.18.0.1/32 dev lo
link "$gw" to-pa 198.18.1.1/24 "$pa" up0 198.18.1.2/24
link "$gw" to-pb 198.18.2.1/24 "$pb" up0 198.18.2.2/24
link "$gw" to-i1 10.10.1.1/24 "$i1" eth0 10.10.1.2/24
link "$gw" to-i2 10.10.2.1/24 "$i2" eth0 10.10.2.2/24
ip -n "$pa" route add 198.18.0.1/32 via 198.18.1.1
ip -n "$pb" route add 198.18.0.1/32 via 198.18.2.1
ip -n "$i1" route add default via 10.10.1.1
ip -n "$i2" route add default via 10.10.2.1

# Internal services: a "web" port 443 and an "ssh" port 22 on each host.
for ns in $i1 $i2; do
	for port in 22 443; do
		ip netns exec "$ns" socat -T2 "TCP-LISTEN:$port,fork,reuseaddr" SYSTEM:'echo hello' >/dev/null 2>&1 &
		pids+=($!)
	done
done

# The gateway host's own ssh, inside acme's grant: partners never reach it.
ip netns exec "$gw" socat -T2 "TCP-LISTEN:22,fork,reuseaddr" SYSTEM:'echo hello' >/dev/null 2>&1 &
pids+=($!)

# The enrollment page's certificate; a real gateway has one for its name.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
	-addext subjectAltName=DNS:localhost -keyout "$dir/enroll.key" -out "$dir/enroll.crt" 2>/dev/null

echo "demo: starting extranetd"
"${gwd[@]}" --state-dir "$dir/state" --socket "$EXTRANET_SOCKET" --socket-group "" --netns "$gwns" \
	--interface "$ifname" --endpoint 198.18.0.1:51820 --reconcile-interval 2s \
	--enroll-listen 127.0.0.1:8443 --enroll-tls-cert "$dir/enroll.crt" --enroll-tls-key "$dir/enroll.key" \
	--enroll-url https://localhost:8443 >"$dir/extranetd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 50); do bin/extranetctl status >/dev/null 2>&1 && break; sleep 0.2; done
bin/extranetctl status

ctl() { echo "\$ extranetctl $*"; bin/extranetctl "$@"; }
ctl org create acme --display-name "ACME Corp" --grant 10.10.1.0/24 --grant 10.10.2.2/32:tcp/443
ctl org create globex --display-name "Globex" --grant 10.10.2.0/24:tcp/22
ctl peer issue acme/laptop --out "$dir/$pa.conf"
ctl peer issue globex/server --out "$dir/$pb.conf"
for ns in $pa $pb; do
	WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go nsx "$ns" wg-quick up "$dir/$ns.conf" >/dev/null 2>&1
done
ctl org list
ctl peer list

probe() { # ns host port -> allowed|denied
	if nsx "$1" socat -T2 - "TCP:$2:$3,connect-timeout=2" </dev/null 2>/dev/null | grep -q hello; then
		echo allowed
	else
		echo denied
	fi
}
acme_ip=$(bin/extranetctl peer show acme/laptop -o json | sed -n 's/.*"address": "\(.*\)".*/\1/p')
echo
echo "Access matrix (a TCP connection from each partner, through the gateway):"
printf '%-16s %-22s %s\n' PARTNER TARGET RESULT
for row in "acme $pa" "globex $pb"; do
	set -- $row
	for target in 10.10.1.2:22 10.10.1.2:443 10.10.2.2:22 10.10.2.2:443 100.64.0.1:22; do
		printf '%-16s %-22s %s\n' "$1" "$target" "$(probe "$2" "${target%:*}" "${target#*:}")"
	done
done
printf '%-16s %-22s %s\n' globex "$acme_ip:22 (acme)" "$(probe "$pb" "$acme_ip" 22)"
printf '%-16s %-22s %s\n' acme "10.10.1.1:22 (gateway)" "$(probe "$pa" 10.10.1.1 22)"
echo
echo "The rules that decided, in the gateway's own namespace:"
echo "\$ ip netns exec $gwns iptables -S EXTRANET-FWD"
ip netns exec "$gwns" iptables -S EXTRANET-FWD
echo
ctl peer revoke acme/laptop --yes >/dev/null
printf '%-16s %-22s %s\n' "acme (revoked)" 10.10.1.2:22 "$(probe "$pa" 10.10.1.2 22)"
nsx "$pa" wg-quick down "$dir/$pa.conf" >/dev/null 2>&1

echo
echo "Access groups and self-enrollment: acme's support staff get ssh to one host, and"
echo "a partner enrolls a device from an invite link; a sponsor approves it."
ctl group create acme/support --grant 10.10.1.2/32:tcp/22
echo "\$ extranetctl invite create acme --group support --contact anna@acme.example"
link=$(bin/extranetctl invite create acme --group support --contact anna@acme.example 2>/dev/null)
echo "$link"
# What the partner's browser does on the page (docs/enrollment.md), here with
# curl and a key pair made on the "device": only the public key is sent.
priv=$(wg genkey)
pub=$(echo "$priv" | wg pubkey)
api() { # path json
	nsx "$gw" curl -sS --cacert "$dir/enroll.crt" --resolve localhost:8443:127.0.0.1 \
		-H 'Content-Type: application/json' -d "$2" "https://localhost:8443/enroll/api/$1"
}
sent=$(api submit "{\"token\":\"${link#*#}\",\"device\":\"tablet\",\"public_key\":\"$pub\",\"key_from\":\"pasted\"}")
request=$(echo "$sent" | jq -r .request)
secret=$(echo "$sent" | jq -r .secret)
ctl request list --org acme
ctl request approve "$request"
api status "{\"request\":\"$request\",\"secret\":\"$secret\"}" | jq -r .config |
	sed "s|PASTE-THE-PRIVATE-KEY-OF-THIS-DEVICE-HERE|$priv|" >"$dir/$pa.conf"
chmod 600 "$dir/$pa.conf"
WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go nsx "$pa" wg-quick up "$dir/$pa.conf" >/dev/null 2>&1
ctl group list acme
for target in 10.10.1.2:22 10.10.1.2:443; do
	printf '%-16s %-22s %s\n' "acme/tablet" "$target" "$(probe "$pa" "${target%:*}" "${target#*:}")"
done
echo
ctl audit
echo
# What the partners did: the connections the probes made, as the gateway
# forgot them (the revoke ended acme/laptop's at once; the others come when
# their TIME_WAIT is over, two minutes after they closed).
ctl activity
echo
if [ -t 0 ] && [ -z "${CI:-}" ]; then
	read -r -p "demo: press Enter to remove the sandbox " _
fi
