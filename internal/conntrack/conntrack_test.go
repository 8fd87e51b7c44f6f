package conntrack

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/netnstest"
	"github.com/extranetgw/extranet/internal/policy"
)

var tunnel = netip.MustParsePrefix("100.64.0.0/16")

func pol(t *testing.T, grants ...string) *policy.Policy {
	gs, err := grant.ParseAll(grants)
	if err != nil {
		t.Fatal(err)
	}
	return &policy.Policy{
		TunnelNet: tunnel,
		Orgs:      []policy.Org{{ID: 1, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []policy.Group{{ID: 1, Grants: gs}}}},
		Peers:     map[netip.Addr]policy.Peer{netip.MustParseAddr("100.64.1.5"): {Group: 1}},
	}
}

func TestDoomed(t *testing.T) {
	a := netip.MustParseAddr
	p := pol(t, "10.10.1.0/24", "10.10.2.2/32:tcp/443", "10.10.3.0/24:icmp")
	for _, tc := range []struct {
		name     string
		src, dst string
		proto    uint8
		port     uint16
		doomed   bool
	}{
		{"granted prefix", "100.64.1.5", "10.10.1.9", 6, 22, false},
		{"granted port", "100.64.1.5", "10.10.2.2", 6, 443, false},
		{"other port", "100.64.1.5", "10.10.2.2", 6, 444, true},
		{"udp on a tcp grant", "100.64.1.5", "10.10.2.2", 17, 443, true},
		{"icmp grant", "100.64.1.5", "10.10.3.1", 1, 0, false},
		{"tcp on an icmp grant", "100.64.1.5", "10.10.3.1", 6, 80, true},
		{"not granted", "100.64.1.5", "10.99.0.1", 6, 22, true},
		{"revoked peer", "100.64.1.6", "10.10.1.9", 6, 22, true},
		{"toward a partner", "10.10.1.9", "100.64.1.5", 6, 22, true},
		{"partner to partner", "100.64.1.5", "100.64.2.1", 6, 22, true},
		{"not ours", "10.10.1.9", "10.10.2.2", 6, 22, false},
	} {
		if got := Doomed(tunnel, p, a(tc.src), a(tc.dst), tc.proto, tc.port); got != tc.doomed {
			t.Errorf("%s: Doomed = %v, want %v", tc.name, got, tc.doomed)
		}
	}
}

// TestKernelSweep opens a real TCP flow from a "partner" address to an
// "internal" one inside a throwaway namespace and watches Sweep keep it
// while allowed and delete it once not.
func TestKernelSweep(t *testing.T) {
	netnstest.Run(t, func(string) {
		for _, args := range [][]string{
			{"ip", "addr", "add", "100.64.1.5/32", "dev", "lo"},
			{"ip", "addr", "add", "10.10.1.2/32", "dev", "lo"},
			// A conntrack match makes the namespace track flows.
			{"iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"},
		} {
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s", args, err, out)
			}
		}
		l, err := net.Listen("tcp4", "10.10.1.2:7777")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("100.64.1.5")}}
		c, err := d.Dial("tcp4", "10.10.1.2:7777")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if n, err := (Kernel{}).Sweep(tunnel, pol(t, "10.10.1.0/24:tcp/7777")); err != nil || n != 0 {
			t.Fatalf("allowed flow: deleted %d, %v", n, err)
		}
		n, err := (Kernel{}).Sweep(tunnel, pol(t, "10.10.1.0/24:tcp/22"))
		if err != nil || n != 1 {
			t.Fatalf("withdrawn flow: deleted %d, %v; want 1", n, err)
		}
		out, _ := exec.Command("conntrack", "-L", "-p", "tcp", "--dport", "7777").CombinedOutput()
		if strings.Contains(string(out), "100.64.1.5") {
			t.Errorf("flow still tracked:\n%s", out)
		}
	})
}

// TestForgetsOnlyOurs: a new active forgets the tunnel network's flows and
// WireGuard's own, and nothing else the host tracks.
func TestForgetsOnlyOurs(t *testing.T) {
	f := ours{tunnel: tunnel, port: 51820, local: netip.MustParseAddr("192.0.2.10")}
	for _, tc := range []struct {
		name     string
		src, dst string
		proto    uint8
		sport    uint16
		dport    uint16
		forget   bool
	}{
		{"a partner's flow", "100.64.1.5", "10.10.1.9", 6, 40000, 22, true},
		{"toward a partner", "10.10.1.9", "100.64.1.5", 6, 22, 40000, true},
		{"a partner's handshakes", "198.51.100.7", "192.0.2.10", 17, 40000, 51820, true},
		{"the gateway's handshakes", "192.0.2.10", "198.51.100.7", 17, 51820, 40000, true},
		{"another host's WireGuard through this one", "192.0.2.77", "198.51.100.7", 17, 51820, 51820, false},
		{"from the host's own address", "192.0.2.11", "198.51.100.7", 17, 51820, 40000, false},
		{"the host's DNS", "192.0.2.11", "192.0.2.53", 17, 40000, 53, false},
		{"the host's TCP on port 51820", "192.0.2.11", "198.51.100.7", 6, 40000, 51820, false},
	} {
		flow := &netlink.ConntrackFlow{}
		flow.Forward.SrcIP, flow.Forward.DstIP = net.ParseIP(tc.src), net.ParseIP(tc.dst)
		flow.Forward.Protocol, flow.Forward.SrcPort, flow.Forward.DstPort = tc.proto, tc.sport, tc.dport
		if got := f.MatchConntrackFlow(flow); got != tc.forget {
			t.Errorf("%s: forgotten %v, want %v", tc.name, got, tc.forget)
		}
	}
}
