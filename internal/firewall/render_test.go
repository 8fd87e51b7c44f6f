package firewall

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/policy"
	"github.com/extranetgw/extranet/pkg/api"
)

func grants(t testing.TB, ss ...string) []grant.Grant {
	gs, err := grant.ParseAll(ss)
	if err != nil {
		t.Fatal(err)
	}
	return gs
}

func testPolicy(t testing.TB) *policy.Policy {
	return &policy.Policy{
		Interface:  "wg-ext",
		TunnelNet:  netip.MustParsePrefix("100.64.0.0/16"),
		Masquerade: true,
		Orgs: []policy.Org{
			{ID: 2, Name: "globex", Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.2.0/24")},
				Groups: []policy.Group{{ID: 20, Name: "default", Grants: grants(t, "10.10.2.0/24:tcp/8080")}}},
			{ID: 1, Name: "acme", Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24"), netip.MustParsePrefix("100.64.3.0/24")},
				Groups: []policy.Group{
					{ID: 11, Name: "support", Grants: grants(t, "10.10.2.2/32:tcp/22")},
					{ID: 10, Name: "default", Grants: grants(t, "10.10.1.0/24", "10.10.2.2/32:tcp/443", "10.10.2.2/32:udp/5000-5010", "10.10.2.0/24:icmp", "10.30.0.0/16:tcp/1000-9000", "10.40.0.0/16:udp")},
				}},
		},
	}
}

func TestRenderGolden(t *testing.T) {
	p := testPolicy(t)
	p.Peers = map[netip.Addr]policy.Peer{
		netip.MustParseAddr("100.64.3.9"): {Group: 10}, netip.MustParseAddr("100.64.1.2"): {Group: 10}, netip.MustParseAddr("100.64.1.7"): {Group: 11},
		// Without a group, and outside the tunnel network: neither is a member.
		netip.MustParseAddr("100.64.2.2"): {Group: 0}, netip.MustParseAddr("10.0.0.1"): {Group: 10},
	}
	p.Host.Local = []netip.Prefix{netip.MustParsePrefix("10.10.2.1/32"), netip.MustParsePrefix("10.10.1.1/32"), netip.MustParsePrefix("10.10.1.1/32"), netip.MustParsePrefix("10.10.9.0/24")}
	p.Host.Egress = []string{"eth0", "eth1"}
	r, err := Render(p, "uplink")
	if err != nil {
		t.Fatal(err)
	}
	wantFilter := `*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
:EXTRANET-FWD - [0:0]
:EXTRANET-IN - [0:0]
:EXTRANET-TOPEER - [0:0]
:EXTRANET-SPOOF - [0:0]
:EXTRANET-OUT - [0:0]
:EXTRANET-DENY-NOT-GRANTED - [0:0]
:EXTRANET-LOG-NOT-GRANTED - [0:0]
:EXTRANET-DENY-NO-GROUP - [0:0]
:EXTRANET-LOG-NO-GROUP - [0:0]
:EXTRANET-DENY-NO-ORG - [0:0]
:EXTRANET-LOG-NO-ORG - [0:0]
:EXTRANET-DENY-NOT-A-PEER - [0:0]
:EXTRANET-LOG-NOT-A-PEER - [0:0]
:EXTRANET-DENY-HOST - [0:0]
:EXTRANET-LOG-HOST - [0:0]
:EXTRANET-DENY-GATEWAY - [0:0]
:EXTRANET-LOG-GATEWAY - [0:0]
:EXTRANET-DENY-TUNNEL - [0:0]
:EXTRANET-LOG-TUNNEL - [0:0]
:EXTRANET-G-64400000-20 - [0:0]
:EXTRANET-O-1 - [0:0]
:EXTRANET-GRP-11 - [0:0]
:EXTRANET-GRP-10 - [0:0]
:EXTRANET-O-2 - [0:0]
:EXTRANET-GRP-20 - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -i wg-ext -j EXTRANET-IN
-A FORWARD -i wg-ext -o wg-ext -j EXTRANET-DENY-TUNNEL
-A FORWARD -i wg-ext -j EXTRANET-FWD
-A FORWARD -s 100.64.0.0/16 ! -i wg-ext -j EXTRANET-SPOOF
-A FORWARD -o wg-ext -j EXTRANET-TOPEER
-A OUTPUT -j EXTRANET-OUT
-A EXTRANET-FWD -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A EXTRANET-FWD -p icmp -m conntrack --ctstate RELATED -m bpf --bytecode "14,177 0 0 0,64 0 0 24,2 0 0 0,32 0 0 12,97 0 0 0,29 0 7 0,177 0 0 0,64 0 0 20,2 0 0 0,32 0 0 16,97 0 0 0,29 0 1 0,6 0 0 1,6 0 0 0" -j ACCEPT
-A EXTRANET-FWD -m conntrack --ctstate RELATED,INVALID -j DROP
-A EXTRANET-FWD -m set ! --match-set extranet-peers src -j EXTRANET-DENY-NOT-A-PEER
-A EXTRANET-FWD -m set --match-set extranet-local dst -j EXTRANET-DENY-HOST
-A EXTRANET-FWD ! -o uplink -j EXTRANET-DENY-HOST
-A EXTRANET-FWD -s 100.64.0.0/20 -j EXTRANET-G-64400000-20
-A EXTRANET-FWD -j EXTRANET-DENY-NO-ORG
-A EXTRANET-G-64400000-20 -s 100.64.1.0/24 -j EXTRANET-O-1
-A EXTRANET-G-64400000-20 -s 100.64.2.0/24 -j EXTRANET-O-2
-A EXTRANET-G-64400000-20 -s 100.64.3.0/24 -j EXTRANET-O-1
-A EXTRANET-O-1 -m mark --mark 0xa -j EXTRANET-GRP-10
-A EXTRANET-O-1 -m mark --mark 0xb -j EXTRANET-GRP-11
-A EXTRANET-O-1 -j EXTRANET-DENY-NO-GROUP
-A EXTRANET-GRP-10 -m set --match-set extranet-g10-net dst -j ACCEPT
-A EXTRANET-GRP-10 -m set --match-set extranet-g10-port dst,dst -j ACCEPT
-A EXTRANET-GRP-10 -d 10.10.2.0/24 -p icmp -j ACCEPT
-A EXTRANET-GRP-10 -d 10.30.0.0/16 -p tcp -m tcp --dport 1000:9000 -j ACCEPT
-A EXTRANET-GRP-10 -d 10.40.0.0/16 -p udp -j ACCEPT
-A EXTRANET-GRP-10 -j EXTRANET-DENY-NOT-GRANTED
-A EXTRANET-GRP-11 -m set --match-set extranet-g11-port dst,dst -j ACCEPT
-A EXTRANET-GRP-11 -j EXTRANET-DENY-NOT-GRANTED
-A EXTRANET-O-2 -m mark --mark 0x14 -j EXTRANET-GRP-20
-A EXTRANET-O-2 -j EXTRANET-DENY-NO-GROUP
-A EXTRANET-GRP-20 -m set --match-set extranet-g20-port dst,dst -j ACCEPT
-A EXTRANET-GRP-20 -j EXTRANET-DENY-NOT-GRANTED
-A EXTRANET-IN -j EXTRANET-DENY-GATEWAY
-A EXTRANET-TOPEER -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A EXTRANET-TOPEER -p icmp -m conntrack --ctstate RELATED -m bpf --bytecode "8,177 0 0 0,64 0 0 20,2 0 0 0,32 0 0 16,97 0 0 0,29 0 1 0,6 0 0 1,6 0 0 0" -j ACCEPT
-A EXTRANET-TOPEER -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-SPOOF -j DROP
-A EXTRANET-OUT -o lo -j ACCEPT
-A EXTRANET-OUT -o wg-ext -p icmp -m bpf --bytecode "8,177 0 0 0,64 0 0 20,2 0 0 0,32 0 0 16,97 0 0 0,29 0 1 0,6 0 0 1,6 0 0 0" -j ACCEPT
-A EXTRANET-OUT ! -o wg-ext -p icmp -j ACCEPT
-A EXTRANET-DENY-NOT-GRANTED -m set --match-set extranet-refused-not-granted src
-A EXTRANET-DENY-NOT-GRANTED -m set ! --match-set extranet-refused-not-granted src ! --update-counters -j SET --add-set extranet-refused-not-granted src
-A EXTRANET-DENY-NOT-GRANTED -m hashlimit --hashlimit-upto 2/sec --hashlimit-burst 5 --hashlimit-mode srcip,dstip,dstport --hashlimit-name extranet-dest --hashlimit-htable-size 32768 --hashlimit-htable-max 262144 --hashlimit-htable-expire 1000 -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 200 --hashlimit-mode srcip --hashlimit-name extranet-deny -j EXTRANET-LOG-NOT-GRANTED
-A EXTRANET-DENY-NOT-GRANTED -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-LOG-NOT-GRANTED -j NFLOG --nflog-group 1 --nflog-prefix not-granted --nflog-size 80
-A EXTRANET-LOG-NOT-GRANTED -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-DENY-NO-GROUP -m set --match-set extranet-refused-no-group src
-A EXTRANET-DENY-NO-GROUP -m set ! --match-set extranet-refused-no-group src ! --update-counters -j SET --add-set extranet-refused-no-group src
-A EXTRANET-DENY-NO-GROUP -m hashlimit --hashlimit-upto 2/sec --hashlimit-burst 5 --hashlimit-mode srcip,dstip,dstport --hashlimit-name extranet-dest --hashlimit-htable-size 32768 --hashlimit-htable-max 262144 --hashlimit-htable-expire 1000 -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 200 --hashlimit-mode srcip --hashlimit-name extranet-deny -j EXTRANET-LOG-NO-GROUP
-A EXTRANET-DENY-NO-GROUP -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-LOG-NO-GROUP -j NFLOG --nflog-group 1 --nflog-prefix no-group --nflog-size 80
-A EXTRANET-LOG-NO-GROUP -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-DENY-NO-ORG -m set --match-set extranet-refused-no-org src
-A EXTRANET-DENY-NO-ORG -m set ! --match-set extranet-refused-no-org src ! --update-counters -j SET --add-set extranet-refused-no-org src
-A EXTRANET-DENY-NO-ORG -m hashlimit --hashlimit-upto 2/sec --hashlimit-burst 5 --hashlimit-mode srcip,dstip,dstport --hashlimit-name extranet-dest --hashlimit-htable-size 32768 --hashlimit-htable-max 262144 --hashlimit-htable-expire 1000 -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 200 --hashlimit-mode srcip --hashlimit-name extranet-deny -j EXTRANET-LOG-NO-ORG
-A EXTRANET-DENY-NO-ORG -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-LOG-NO-ORG -j NFLOG --nflog-group 1 --nflog-prefix no-org --nflog-size 80
-A EXTRANET-LOG-NO-ORG -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-DENY-NOT-A-PEER -m set --match-set extranet-refused-not-a-peer src
-A EXTRANET-DENY-NOT-A-PEER -m set ! --match-set extranet-refused-not-a-peer src ! --update-counters -j SET --add-set extranet-refused-not-a-peer src
-A EXTRANET-DENY-NOT-A-PEER -m hashlimit --hashlimit-upto 2/sec --hashlimit-burst 5 --hashlimit-mode srcip,dstip,dstport --hashlimit-name extranet-dest --hashlimit-htable-size 32768 --hashlimit-htable-max 262144 --hashlimit-htable-expire 1000 -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 200 --hashlimit-mode srcip --hashlimit-name extranet-deny -j EXTRANET-LOG-NOT-A-PEER
-A EXTRANET-DENY-NOT-A-PEER -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-LOG-NOT-A-PEER -j NFLOG --nflog-group 1 --nflog-prefix not-a-peer --nflog-size 80
-A EXTRANET-LOG-NOT-A-PEER -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-DENY-HOST -m set --match-set extranet-refused-host src
-A EXTRANET-DENY-HOST -m set ! --match-set extranet-refused-host src ! --update-counters -j SET --add-set extranet-refused-host src
-A EXTRANET-DENY-HOST -m hashlimit --hashlimit-upto 2/sec --hashlimit-burst 5 --hashlimit-mode srcip,dstip,dstport --hashlimit-name extranet-dest --hashlimit-htable-size 32768 --hashlimit-htable-max 262144 --hashlimit-htable-expire 1000 -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 200 --hashlimit-mode srcip --hashlimit-name extranet-deny -j EXTRANET-LOG-HOST
-A EXTRANET-DENY-HOST -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-LOG-HOST -j NFLOG --nflog-group 1 --nflog-prefix host --nflog-size 80
-A EXTRANET-LOG-HOST -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-DENY-GATEWAY -m set --match-set extranet-refused-gateway src
-A EXTRANET-DENY-GATEWAY -m set ! --match-set extranet-refused-gateway src ! --update-counters -j SET --add-set extranet-refused-gateway src
-A EXTRANET-DENY-GATEWAY -m hashlimit --hashlimit-upto 2/sec --hashlimit-burst 5 --hashlimit-mode srcip,dstip,dstport --hashlimit-name extranet-dest --hashlimit-htable-size 32768 --hashlimit-htable-max 262144 --hashlimit-htable-expire 1000 -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 200 --hashlimit-mode srcip --hashlimit-name extranet-deny -j EXTRANET-LOG-GATEWAY
-A EXTRANET-DENY-GATEWAY -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-LOG-GATEWAY -j NFLOG --nflog-group 1 --nflog-prefix gateway --nflog-size 80
-A EXTRANET-LOG-GATEWAY -j REJECT --reject-with icmp-admin-prohibited
-A EXTRANET-DENY-TUNNEL -m set --match-set extranet-refused-tunnel src
-A EXTRANET-DENY-TUNNEL -m set ! --match-set extranet-refused-tunnel src ! --update-counters -j SET --add-set extranet-refused-tunnel src
-A EXTRANET-DENY-TUNNEL -m hashlimit --hashlimit-upto 2/sec --hashlimit-burst 5 --hashlimit-mode srcip,dstip,dstport --hashlimit-name extranet-dest --hashlimit-htable-size 32768 --hashlimit-htable-max 262144 --hashlimit-htable-expire 1000 -m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 200 --hashlimit-mode srcip --hashlimit-name extranet-deny -j EXTRANET-LOG-TUNNEL
-A EXTRANET-DENY-TUNNEL -j DROP
-A EXTRANET-LOG-TUNNEL -j NFLOG --nflog-group 1 --nflog-prefix tunnel --nflog-size 80
-A EXTRANET-LOG-TUNNEL -j DROP
COMMIT
`
	if r.Filter != wantFilter {
		t.Errorf("filter:\n%s\nwant:\n%s", r.Filter, wantFilter)
	}
	wantMangle := `*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:EXTRANET-MARK - [0:0]
-A PREROUTING -i wg-ext -j EXTRANET-MARK
-A EXTRANET-MARK -j MARK --set-xmark 0x0/0xffffffff
-A EXTRANET-MARK -m conntrack --ctstate NEW -j SET --map-set extranet-peers src --map-mark
COMMIT
`
	if r.Mangle != wantMangle {
		t.Errorf("mangle:\n%s\nwant:\n%s", r.Mangle, wantMangle)
	}
	wantRaw := "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -i uplink -s 100.64.0.0/16 -j DROP\nCOMMIT\n"
	if r.Raw != wantRaw {
		t.Errorf("raw:\n%s\nwant:\n%s", r.Raw, wantRaw)
	}
	h := RenderHost(p, "extranet0")
	wantHost := Host{
		Filter: "*filter\n:EXTRANET-ACCEPT - [0:0]\n-A EXTRANET-ACCEPT -i extranet0 -j ACCEPT\n-A EXTRANET-ACCEPT -o extranet0 -j ACCEPT\nCOMMIT\n",
		NAT:    "*nat\n:EXTRANET-POST - [0:0]\n-A EXTRANET-POST -s 100.64.0.0/16 ! -o extranet0 -j MASQUERADE\nCOMMIT\n",
		Mangle: "*mangle\n:EXTRANET-GUARD-IN - [0:0]\n:EXTRANET-GUARD-FWD - [0:0]\n" +
			"-A EXTRANET-GUARD-IN -i extranet0 -m conntrack --ctstate NEW -j DROP\n" +
			"-A EXTRANET-GUARD-FWD -i extranet0 -m conntrack --ctstate DNAT -j DROP\n" +
			"-A EXTRANET-GUARD-FWD -i extranet0 -o eth0 -j RETURN\n" +
			"-A EXTRANET-GUARD-FWD -i extranet0 -o eth1 -j RETURN\n" +
			"-A EXTRANET-GUARD-FWD -i extranet0 -j DROP\n" +
			"-A EXTRANET-GUARD-FWD ! -o extranet0 -j DROP\nCOMMIT\n",
		Raw: "*raw\n:EXTRANET-GUARD-RAW - [0:0]\n" +
			"-A EXTRANET-GUARD-RAW -i extranet0 -m addrtype --dst-type LOCAL -j DROP\n" +
			"-A EXTRANET-GUARD-RAW -i extranet0 -m addrtype --dst-type BROADCAST -j DROP\n" +
			"-A EXTRANET-GUARD-RAW -i extranet0 -m addrtype --dst-type MULTICAST -j DROP\nCOMMIT\n",
		Jumps: []Jump{{"filter", "FORWARD", []string{"-j", "EXTRANET-ACCEPT"}, false}, {"nat", "POSTROUTING", []string{"-j", "EXTRANET-POST"}, false},
			{"mangle", "INPUT", []string{"-j", "EXTRANET-GUARD-IN"}, false}, {"mangle", "FORWARD", []string{"-j", "EXTRANET-GUARD-FWD"}, true},
			{"raw", "PREROUTING", []string{"-j", "EXTRANET-GUARD-RAW"}, true}},
	}
	if fmt.Sprint(h) != fmt.Sprint(wantHost) {
		t.Errorf("host:\n%v\nwant:\n%v", h, wantHost)
	}
	got := fmt.Sprint(r.Sets)
	want := `[{extranet-peers hash:ip true true true false false 0 [100.64.1.2 timeout 0 comment "0000000000000000" skbmark 0xa 100.64.1.7 timeout 0 comment "0000000000000000" skbmark 0xb 100.64.3.9 timeout 0 comment "0000000000000000" skbmark 0xa]}` + " {extranet-local hash:net false false false false false 0 [10.10.1.1/32 10.10.2.1/32 10.10.9.0/24]} " +
		"{extranet-g10-net hash:net false false false false false 0 [10.10.1.0/24]} {extranet-g10-port hash:net,port false false false false false 0 [10.10.2.2/32,tcp:443 10.10.2.2/32,udp:5000-5010]} {extranet-g11-port hash:net,port false false false false false 0 [10.10.2.2/32,tcp:22]} " +
		"{extranet-g20-port hash:net,port false false false false false 0 [10.10.2.0/24,tcp:8080]}"
	for _, reason := range api.DenyReasons {
		want += " {extranet-refused-" + reason + " hash:ip false false false true true 32768 []}"
	}
	want += "]"
	if got != want {
		t.Errorf("sets:\n%s\nwant:\n%s", got, want)
	}
}

// TestRulesDoNotGrowWithPeers is the scaling promise: peers are members of
// one set, and no rule or other set depends on them.
func TestRulesDoNotGrowWithPeers(t *testing.T) {
	p := testPolicy(t)
	few, _ := Render(p, "uplink")
	p.Peers = map[netip.Addr]policy.Peer{}
	for i := 0; i < 5000; i++ {
		p.Peers[netip.AddrFrom4([4]byte{100, 64, byte(1 + i/250), byte(1 + i%250)})] = policy.Peer{Group: uint32(10 + i%2)}
	}
	many, _ := Render(p, "uplink")
	if few.Filter != many.Filter || fmt.Sprint(fixedSets(few.Sets)) != fmt.Sprint(fixedSets(many.Sets)) {
		t.Error("rendered rules depend on the number of peers")
	}
	if len(few.Sets) != len(many.Sets) {
		t.Errorf("%d sets with 5,000 peers, %d with none", len(many.Sets), len(few.Sets))
	}
	for _, set := range many.Sets {
		if set.Name == PeerSet && len(set.Members) != 5000 {
			t.Errorf("peer set: %d members with 5,000 peers", len(set.Members))
		}
	}
}

// fixedSets are the sets whose members do not depend on peers.
func fixedSets(sets []Set) []Set {
	var out []Set
	for _, s := range sets {
		if s.Name != PeerSet {
			out = append(out, s)
		}
	}
	return out
}

// TestRenderRefusesSharedGroups: a group ID in two organisations would
// give one's peers, by their membership, the other's access.
func TestRenderRefusesSharedGroups(t *testing.T) {
	p := testPolicy(t)
	p.Orgs[0].Groups[0].ID = 11
	if _, err := Render(p, "uplink"); err == nil {
		t.Error("a group ID in two organisations was rendered")
	}
	p = testPolicy(t)
	p.Orgs[0].Groups[0].ID = 0
	if _, err := Render(p, "uplink"); err == nil {
		t.Error("a group without an ID was rendered")
	}
}

func TestRenderRefusesInjection(t *testing.T) {
	for _, iface := range []string{"wg ext", "wg\n-A FORWARD -j ACCEPT", `wg"`, "", "a-very-long-interface-name", "wg;rm"} {
		p := testPolicy(t)
		p.Interface = iface
		if _, err := Render(p, "uplink"); err == nil {
			t.Errorf("interface %q rendered", iface)
		}
	}
	p := testPolicy(t)
	p.Orgs[0].Blocks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if _, err := Render(p, "uplink"); err == nil {
		t.Error("a block outside the tunnel network rendered")
	}
	// Overlapping blocks would put one org's peers under another org's
	// rules; the address plan prevents them, and the renderer refuses them.
	p = testPolicy(t)
	if len(p.Orgs) < 2 {
		t.Fatal("testPolicy needs two orgs")
	}
	p.Orgs[1].Blocks = append(p.Orgs[1].Blocks, netip.PrefixFrom(p.Orgs[0].Blocks[0].Addr(), p.Orgs[0].Blocks[0].Bits()-1).Masked())
	if _, err := Render(p, "uplink"); err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Errorf("overlapping org blocks rendered: %v", err)
	}
}

func TestDiff(t *testing.T) {
	want := []string{"a", "b", "c"}
	if d := diff(want, []string{"a", "b", "c"}); len(d) != 0 {
		t.Errorf("equal: %v", d)
	}
	if d := diff(want, []string{"a", "c", "x"}); strings.Join(d, ";") != "missing: b;unexpected: x" {
		t.Errorf("diff = %v", d)
	}
	if d := diff(want, []string{"b", "a", "c"}); len(d) != 1 || d[0] != "rules reordered" {
		t.Errorf("reorder = %v", d)
	}
}

func BenchmarkRender1000Orgs(b *testing.B) {
	p := &policy.Policy{Interface: "wg-ext", TunnelNet: netip.MustParsePrefix("100.64.0.0/10")}
	for i := 1; i <= 1000; i++ {
		p.Orgs = append(p.Orgs, policy.Org{
			ID:     uint32(i),
			Blocks: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + i/256), byte(i % 256), 0}), 24)},
			Groups: []policy.Group{{ID: uint32(i), Grants: grants(b, "10.1.0.0/16", "10.2.3.4/32:tcp/443", "10.3.0.0/24:udp/5000-5010", "10.4.0.0/16:icmp", "10.5.0.0/16:tcp/1000-9000")}},
		})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Render(p, "uplink"); err != nil {
			b.Fatal(err)
		}
	}
}

type rule struct {
	src    netip.Prefix
	target string
	// notPeer matches a source that is not in PeerSet.
	notPeer bool
	// other matches what the walked flow is not: a destination of the
	// host's own, or a way out other than the uplink.
	other bool
}

// parseChains reads the source matches and targets of rendered rules.
func parseChains(filter string) map[string][]rule {
	chains := map[string][]rule{}
	for _, l := range strings.Split(filter, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || f[0] != "-A" {
			continue
		}
		var r rule
		for i := 2; i+1 < len(f); i++ {
			switch f[i] {
			case "-s":
				r.src = netip.MustParsePrefix(f[i+1])
			case "!":
				r.notPeer = i+2 < len(f) && f[i+1] == "--match-set" && f[i+2] == PeerSet
				r.other = r.other || f[i+1] == "-o"
			case "--match-set":
				r.other = r.other || f[i+1] == LocalSet
			case "-j":
				r.target = f[i+1]
			}
		}
		chains[f[1]] = append(chains[f[1]], r)
	}
	return chains
}

// walk follows a new flow from addr, a peer in force or not, through
// EXTRANET-FWD and the group chains, as the kernel would, and returns the
// organisation chain it reaches and how many rules it met on the way.
func walk(chains map[string][]rule, addr netip.Addr, peer bool) (string, int) {
	chain, met := "EXTRANET-FWD", 0
	for steps := 0; steps < 10 && !strings.HasPrefix(chain, "EXTRANET-O-"); steps++ {
		next := ""
		for _, r := range chains[chain] {
			met++
			// A new flow is neither RELATED, ESTABLISHED nor INVALID, so
			// only the peer check, source matches and the final reject
			// decide.
			if r.notPeer {
				if !peer {
					return "REJECT", met
				}
				continue
			}
			if r.other {
				continue
			}
			if r.src.IsValid() && r.src.Contains(addr) || !r.src.IsValid() && r.target == "REJECT" {
				next = r.target
				break
			}
		}
		if next == "" || next == "REJECT" {
			return "REJECT", met
		}
		chain = next
	}
	return chain, met
}

// TestTreeBoundsTheWalk: with thousands of organisations, a new flow from
// any of them meets a few dozen rules on its way to its organisation's
// chain, not thousands.
func TestTreeBoundsTheWalk(t *testing.T) {
	for _, n := range []int{1, 17, 1000, 4095} {
		p := &policy.Policy{Interface: "wg-ext", TunnelNet: netip.MustParsePrefix("100.64.0.0/12")}
		for i := 1; i <= n; i++ {
			p.Orgs = append(p.Orgs, policy.Org{ID: uint32(i), Blocks: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + i/256), byte(i % 256), 0}), 24)}, Groups: []policy.Group{{ID: uint32(i), Grants: grants(t, "10.1.0.0/16")}}})
		}
		r, err := Render(p, "uplink")
		if err != nil {
			t.Fatal(err)
		}
		chains := parseChains(r.Filter)
		worst := 0
		for _, o := range p.Orgs {
			chain, met := walk(chains, o.Blocks[0].Addr().Next(), true)
			if chain != OrgChain(o.ID) {
				t.Fatalf("%d orgs: a flow from %s reached %s, want %s", n, o.Blocks[0], chain, OrgChain(o.ID))
			}
			worst = max(worst, met)
		}
		// Three conntrack rules, the peer, host and uplink checks, then at
		// most 16 jumps on each of 3 levels.
		if worst > 6+3*16 {
			t.Errorf("%d orgs: a new flow may meet %d rules", n, worst)
		}
		if chain, _ := walk(chains, netip.MustParseAddr("100.79.255.250"), true); n < 4095 && chain != "REJECT" {
			t.Errorf("%d orgs: a flow from outside every block reached %s", n, chain)
		}
		if chain, _ := walk(chains, p.Orgs[0].Blocks[0].Addr().Next(), false); chain != "REJECT" {
			t.Errorf("%d orgs: a flow from an address no peer holds reached %s", n, chain)
		}
		t.Logf("%d orgs: worst walk %d rules", n, worst)
	}
}

// TestSharedAddressTranslation: where gateways take turns, partner traffic
// that leaves by the shared address's interface leaves from that address,
// which moves with the active, so an internal host sees one end of an open
// connection whichever gateway carries it; by any other interface it is
// masqueraded as before, and without masquerade nothing is translated.
func TestSharedAddressTranslation(t *testing.T) {
	p := &policy.Policy{Interface: "wg-ext", TunnelNet: netip.MustParsePrefix("100.64.0.0/16"), Masquerade: true,
		Host: policy.Host{Shared: &policy.SharedAddress{Addr: netip.MustParseAddr("203.0.113.10"), Interface: "eth0"}}}
	want := "*nat\n:EXTRANET-POST - [0:0]\n" +
		"-A EXTRANET-POST -s 100.64.0.0/16 -o eth0 -j SNAT --to-source 203.0.113.10\n" +
		"-A EXTRANET-POST -s 100.64.0.0/16 ! -o extranet0 -j MASQUERADE\nCOMMIT\n"
	if got := RenderHost(p, "extranet0").NAT; got != want {
		t.Errorf("nat:\n%s\nwant:\n%s", got, want)
	}
	// A stray packet of a connection another gateway carried is dropped,
	// not reset.
	stray := "-A EXTRANET-GUARD-IN -d 203.0.113.10 -p tcp ! --syn -m conntrack --ctstate NEW -j DROP\n"
	if got := RenderHost(p, "extranet0").Mangle; !strings.Contains(got, stray) {
		t.Errorf("mangle has no %q:\n%s", stray, got)
	}
	p.Masquerade = false
	if got := RenderHost(p, "extranet0").Mangle; strings.Contains(got, stray) {
		t.Errorf("without masquerade, mangle still has %q", stray)
	}
	if got := RenderHost(p, "extranet0").NAT; got != "*nat\n:EXTRANET-POST - [0:0]\nCOMMIT\n" {
		t.Errorf("nat without masquerade:\n%s", got)
	}
}
