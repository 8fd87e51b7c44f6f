package policy

import (
	"net/netip"
	"testing"

	"github.com/extranetgw/extranet/internal/grant"
)

// TestAllows pins the decision the conntrack sweep kills flows by: a flow
// lives only if its source is a peer in force, the peer's group in its own
// organisation holds a grant covering the destination, protocol and port,
// and nothing another group or organisation was granted leaks across.
func TestAllows(t *testing.T) {
	g := func(s string) grant.Grant {
		t.Helper()
		gr, err := grant.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return gr
	}
	a := netip.MustParseAddr
	p := &Policy{
		Interface: "wg0",
		TunnelNet: netip.MustParsePrefix("100.64.0.0/16"),
		Orgs: []Org{
			{ID: 1, Name: "acme", Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24"), netip.MustParsePrefix("100.64.9.0/24")},
				Groups: []Group{
					{ID: 11, Name: "default", Grants: []grant.Grant{g("10.20.0.0/24"), g("10.30.5.10/32:tcp/443"), g("10.40.0.0/16:udp/5000-5010"), g("10.50.0.0/16:icmp")}},
					{ID: 12, Name: "support", Grants: []grant.Grant{g("10.20.0.10/32:tcp/22")}},
				}},
			{ID: 2, Name: "globex", Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.2.0/24")},
				Groups: []Group{{ID: 21, Name: "default", Grants: []grant.Grant{g("10.99.0.0/16")}}}},
			{ID: 3, Name: "initech", Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.3.0/24")}, Groups: []Group{{ID: 31, Name: "default"}}},
		},
		Peers: map[netip.Addr]Peer{
			a("100.64.1.2"): {Group: 11}, a("100.64.9.7"): {Group: 11}, a("100.64.2.2"): {Group: 21}, a("100.64.3.2"): {Group: 31},
			a("100.64.1.3"): {Group: 12},
			// In force but in no organisation's block: a policy bug must deny.
			a("100.64.200.1"): {Group: 11},
			// In acme's block but, by a bug, in globex's group.
			a("100.64.1.4"): {Group: 21},
		},
	}
	const icmp, tcp, udp = 1, 6, 17
	tests := []struct {
		name  string
		src   string
		dst   string
		proto uint8
		port  uint16
		want  bool
	}{
		{"whole prefix, any protocol", "100.64.1.2", "10.20.0.77", tcp, 22, true},
		{"whole prefix, udp", "100.64.1.2", "10.20.0.77", udp, 53, true},
		{"the org's second block", "100.64.9.7", "10.20.0.1", icmp, 0, true},
		{"just outside the prefix", "100.64.1.2", "10.20.1.0", tcp, 22, false},
		{"the one granted port", "100.64.1.2", "10.30.5.10", tcp, 443, true},
		{"another port of that host", "100.64.1.2", "10.30.5.10", tcp, 444, false},
		{"the port, another protocol", "100.64.1.2", "10.30.5.10", udp, 443, false},
		{"the neighbour of that host", "100.64.1.2", "10.30.5.11", tcp, 443, false},
		{"bottom of a port range", "100.64.1.2", "10.40.3.3", udp, 5000, true},
		{"top of a port range", "100.64.1.2", "10.40.3.3", udp, 5010, true},
		{"past a port range", "100.64.1.2", "10.40.3.3", udp, 5011, false},
		{"icmp-only grant, ping", "100.64.1.2", "10.50.1.1", icmp, 0, true},
		{"icmp-only grant, tcp", "100.64.1.2", "10.50.1.1", tcp, 80, false},
		{"another org's grant", "100.64.1.2", "10.99.0.1", tcp, 80, false},
		{"that org itself", "100.64.2.2", "10.99.0.1", tcp, 80, true},
		{"and not the first org's", "100.64.2.2", "10.20.0.1", tcp, 80, false},
		{"an org without grants", "100.64.3.2", "10.20.0.1", tcp, 80, false},
		{"an address no peer holds", "100.64.1.9", "10.20.0.1", tcp, 80, false},
		{"a group's one port", "100.64.1.3", "10.20.0.10", tcp, 22, true},
		{"not its org's other grants", "100.64.1.3", "10.20.0.10", tcp, 80, false},
		{"nor another host of the same grant", "100.64.1.3", "10.20.0.11", tcp, 22, false},
		{"the default group keeps the org's", "100.64.1.2", "10.20.0.10", tcp, 80, true},
		{"a group of another org", "100.64.1.4", "10.99.0.1", tcp, 80, false},
		{"a peer outside every block", "100.64.200.1", "10.20.0.1", tcp, 80, false},
		{"outside the tunnel network", "192.0.2.1", "10.20.0.1", tcp, 80, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Allows(a(tt.src), a(tt.dst), tt.proto, tt.port); got != tt.want {
				t.Errorf("Allows(%s → %s proto %d port %d) = %v, want %v", tt.src, tt.dst, tt.proto, tt.port, got, tt.want)
			}
		})
	}

	// Withdrawing the peer kills its flows even though its org's grant stands.
	delete(p.Peers, a("100.64.1.2"))
	if p.Allows(a("100.64.1.2"), a("10.20.0.77"), tcp, 22) {
		t.Error("a peer no longer in force still allowed")
	}
}
