package gwns

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/extranetgw/extranet/internal/netnstest"
)

// TestEgressLeavesOutTheHostsGuests: partner traffic toward a grant leaves
// by the interfaces that route toward it, never by a link that carries the
// host's own containers or VMs (a bridge, a tap; Open vSwitch and macvlan
// alike, by their link type),
// whatever the grant covers; named interfaces replace the whole choice.
func TestEgressLeavesOutTheHostsGuests(t *testing.T) {
	netnstest.Run(t, func(string) {
		// Links this kernel can make without modules of its own: a veth
		// stands in for a physical one.
		sh(t, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
		sh(t, "ip", "link", "add", "docker0", "type", "bridge")
		sh(t, "ip", "tuntap", "add", "vnet0", "mode", "tap")
		sh(t, "ip", "link", "add", "extranet0", "type", "veth", "peer", "name", "p0")
		for _, l := range []string{"lan0", "lan0p", "docker0", "vnet0", "extranet0", "p0"} {
			sh(t, "ip", "link", "set", l, "up")
		}
		sh(t, "ip", "addr", "add", "10.0.0.1/16", "dev", "lan0")
		sh(t, "ip", "addr", "add", "172.17.0.1/16", "dev", "docker0")
		sh(t, "ip", "route", "add", "10.9.0.0/24", "dev", "vnet0")
		sh(t, "ip", "route", "add", "10.7.0.0/24", "dev", "extranet0")
		sh(t, "ip", "route", "add", "10.6.0.0/24", "dev", "p0")
		granted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12")}
		got, err := Egress(granted, nil, "extranet0")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"lan0", "p0"}; !slices.Equal(got, want) {
			t.Errorf("egress for %v: %v, want %v", granted, got, want)
		}
		if got, _ := Egress(nil, nil, "extranet0"); len(got) != 0 {
			t.Errorf("egress without grants: %v", got)
		}
		if got, _ := Egress(granted, []string{"docker0", "lan0", "docker0"}, "extranet0"); !slices.Equal(got, []string{"docker0", "lan0"}) {
			t.Errorf("named egress: %v", got)
		}
	})
}
