package vip

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/extranetgw/extranet/internal/netnstest"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		prefix, iface string
		table         int
		err           string
	}{
		{"192.0.2.10/24", "eth0", 51820, ""},
		{"192.0.2.10", "eth0", 51820, "with its network's length"},
		{"2001:db8::1/64", "eth0", 51820, "IPv4"},
		{"192.0.2.10/24", "", 51820, "--vip-interface"},
		{"192.0.2.10/24", "eth0", 254, "--vip-table 254"},
		{"192.0.2.10/24", "eth0", 0, "--vip-table 0"},
	} {
		_, err := Parse(tc.prefix, tc.iface, 51820, tc.table)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Parse(%q, %q, %d) = %v; want an error with %q", tc.prefix, tc.iface, tc.table, err, tc.err)
		}
	}
}

// TestAnnouncement: the gratuitous ARP is a request for the address from
// the address, at the interface's hardware address (RFC 5227).
func TestAnnouncement(t *testing.T) {
	hw := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	got := garp(hw, netip.MustParseAddr("192.0.2.10"))
	want := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 192, 0, 2, 10}
	if !bytes.Equal(got, want) {
		t.Errorf("garp = % x\nwant   % x", got, want)
	}
}

// TestHoldAndRelease, in a namespace of its own: holding puts the address
// on the interface and makes the packets of WireGuard's port leave from
// it, and nothing else's; releasing takes all of it back, and releasing
// twice is no error.
func TestHoldAndRelease(t *testing.T) {
	netnstest.Run(t, func(string) {
		netnstest.Sh(t, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
		netnstest.Sh(t, "ip", "link", "set", "lan1", "up")
		netnstest.Sh(t, "ip", "addr", "add", "192.0.2.11/24", "dev", "lan0")
		netnstest.Sh(t, "ip", "link", "set", "lan0", "up")
		netnstest.Sh(t, "ip", "route", "add", "default", "via", "192.0.2.1")
		a, err := Parse("192.0.2.10/24", "lan0", 51820, 51820)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Hold(); err != nil {
			t.Fatal(err)
		}
		if held, err := a.Held(); !held || err != nil {
			t.Fatalf("Held after Hold = %v, %v", held, err)
		}
		from := func(args ...string) string {
			return netnstest.Sh(t, append([]string{"ip", "route", "get"}, args...)...)
		}
		for _, dst := range []string{"198.51.100.7", "192.0.2.100"} {
			if got := from(dst, "ipproto", "udp", "sport", "51820"); !strings.Contains(got, "src 192.0.2.10 ") {
				t.Errorf("WireGuard's packets to %s: %s; want them from the shared address", dst, got)
			}
			if got := from(dst, "ipproto", "udp", "sport", "53"); !strings.Contains(got, "src 192.0.2.11 ") {
				t.Errorf("other packets to %s: %s; want them from the host's own address", dst, got)
			}
		}
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(); err != nil {
			t.Errorf("a second Release: %v", err)
		}
		if held, _ := a.Held(); held {
			t.Error("the address is still held after Release")
		}
		if got := from("198.51.100.7", "ipproto", "udp", "sport", "51820"); !strings.Contains(got, "src 192.0.2.11 ") {
			t.Errorf("WireGuard's packets after Release: %s; want the host's own address", got)
		}
		if rules := netnstest.Sh(t, "ip", "rule"); strings.Contains(rules, "51820") {
			t.Errorf("a rule is left after Release:\n%s", rules)
		}

		// A table someone else uses is not ours to fill or empty.
		netnstest.Sh(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1", "table", "51820")
		if err := a.Hold(); err == nil || !strings.Contains(err.Error(), "--vip-table") {
			t.Errorf("Hold with a foreign route in the table: %v", err)
		}
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
		if got := netnstest.Sh(t, "ip", "route", "show", "table", "51820"); !strings.Contains(got, "198.51.100.0/24") {
			t.Errorf("Release removed another's route: %q", got)
		}

		// The host's own address is not the shared one's to take.
		if foreign, err := a.Foreign(); foreign || err != nil {
			t.Errorf("Foreign with the address absent: %v, %v", foreign, err)
		}
		own, _ := Parse("192.0.2.11/24", "lan0", 51820, 51821)
		if foreign, err := own.Foreign(); !foreign || err != nil {
			t.Errorf("Foreign of the host's own address: %v, %v", foreign, err)
		}
	})
}
