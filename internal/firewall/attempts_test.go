package firewall

import (
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/extranetgw/extranet/internal/netnstest"
	"github.com/extranetgw/extranet/pkg/api"
)

// TestAttemptsCounts: a reason's chains, in a throwaway namespace: every
// refused packet is counted per source in the reason's attempts set, the
// logged ones and those past the log's rate alike, and those of a sweep
// wider than the rate limit's table of destinations too; and a partner's
// sweep that filled the kernel's default table leaves another partner's
// new destinations logged.
func TestAttemptsCounts(t *testing.T) {
	netnstest.Run(t, func(string) {
		if got, err := ReadAttempts(); err != nil || len(got) != 0 {
			t.Fatalf("before the sets exist: %v, %v; want nothing, and no error", got, err)
		}
		netnstest.Sh(t, "ip", "link", "set", "lo", "up")
		netnstest.Sh(t, "ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
		for _, a := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"} {
			netnstest.Sh(t, "ip", "addr", "add", a+"/8", "dev", "lo")
		}
		set := attemptsSet(api.DenyHost, netip.MustParsePrefix("100.64.0.0/16"))
		pipe(t, set.create(set.Name, ""), "ipset", "restore")
		var rules strings.Builder
		denyChain(&rules, api.DenyHost)
		pipe(t, "*filter\n:"+DenyChain(api.DenyHost)+" - [0:0]\n:"+logChain(api.DenyHost)+" - [0:0]\n"+
			"-A OUTPUT -s 127.0.0.2 -p udp -j "+DenyChain(api.DenyHost)+"\n"+
			"-A OUTPUT -s 127.0.0.4 -p udp -j "+DenyChain(api.DenyHost)+"\n"+rules.String()+"COMMIT\n", "iptables-restore")

		const sent = 300
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := 0; i < sent; i++ {
			c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9})
		}
		src := Attempts{Reason: api.DenyHost, Src: netip.MustParseAddr("127.0.0.2")}
		got, err := ReadAttempts()
		if err != nil {
			t.Fatal(err)
		}
		logged := rulePackets(t, logChain(api.DenyHost), 0)
		if len(got) != 1 || got[src] != sent || logged == 0 || logged == sent {
			t.Errorf("%d logged, attempts %v; want some logged, not all, and all %d counted\n%s", logged, got, sent, netnstest.Sh(t, "iptables-save", "-c"))
		}

		// A sweep as wide as the kernel's default table of destinations
		// for the per-destination limit (65,536): then another partner
		// tries ten destinations new to it, each of which is logged.
		sweep := func(dsts ...string) int {
			n := 0
			for _, dst := range dsts {
				for port := 1; port < 65536; port++ {
					c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.ParseIP(dst), Port: port})
					n++
				}
			}
			return n
		}
		swept := sweep("127.0.0.1", "127.0.0.3")
		other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.4")})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		before := rulePackets(t, logChain(api.DenyHost), 0)
		for port := 1; port <= 10; port++ {
			other.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: 40000 + port})
		}
		if after := rulePackets(t, logChain(api.DenyHost), 0); after-before != 10 {
			t.Errorf("after one partner's sweep of %d destinations, %d of another's 10 new destinations were logged; want all 10", swept, after-before)
		}

		// A sweep wider than the table, if the machine sends it within
		// the entries' second: the kernel drops what it cannot make an
		// entry for, unseen by the rules after the limit, and those are
		// refused attempts too.
		swept += sweep("127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8")
		if got, err = ReadAttempts(); err != nil {
			t.Fatal(err)
		}
		seen := rulePackets(t, logChain(api.DenyHost), 0) + rulePackets(t, DenyChain(api.DenyHost), 3)
		want := uint64(sent + swept + 10)
		if got[src]+got[Attempts{Reason: api.DenyHost, Src: netip.MustParseAddr("127.0.0.4")}] != want {
			t.Errorf("after a sweep of %d destinations: attempts %v; want all %d counted\n%s", swept, got, want, netnstest.Sh(t, "iptables-save", "-c"))
		}
		t.Logf("%d of %d refused packets were dropped by the full table before the rules after it", want-seen, want)
	})
}

// pipe runs name with stdin, in the test's namespace.
func pipe(t *testing.T, stdin, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", name, err, out)
	}
}

// rulePackets is the packet count of chain's rule i, from 0.
func rulePackets(t *testing.T, chain string, i int) uint64 {
	t.Helper()
	lines := strings.Split(netnstest.Sh(t, "iptables", "-L", chain, "-v", "-x", "-n"), "\n")
	if len(lines) < 3+i {
		t.Fatalf("iptables -L %s: %q", chain, lines)
	}
	n, err := strconv.ParseUint(strings.Fields(lines[2+i])[0], 10, 64)
	if err != nil {
		t.Fatalf("iptables -L %s: %q: %v", chain, lines[2], err)
	}
	return n
}

// TestAttemptsSetHoldsEveryPartner: an attempts set is filled by the
// kernel, which never grows a hash set; made for a /16 tunnel network it
// takes 20,000 sources (keyed by destination here, the same kernel path),
// where ipset's default buckets took about 12,000.
func TestAttemptsSetHoldsEveryPartner(t *testing.T) {
	netnstest.Run(t, func(string) {
		// A veth pair of the test's own namespace routes the
		// destinations; the rules see the packets, and drop them,
		// before any neighbour is looked up.
		netnstest.Sh(t, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
		netnstest.Sh(t, "ip", "addr", "add", "10.200.255.254/16", "dev", "d0")
		netnstest.Sh(t, "ip", "link", "set", "d0", "up")
		netnstest.Sh(t, "ip", "link", "set", "d1", "up")
		set := attemptsSet(api.DenyHost, netip.MustParsePrefix("100.64.0.0/16"))
		pipe(t, set.create(set.Name, ""), "ipset", "restore")
		pipe(t, "*filter\n-A OUTPUT -d 10.200.0.0/16 -p udp -j SET --add-set "+set.Name+" dst\n-A OUTPUT -d 10.200.0.0/16 -j DROP\nCOMMIT\n", "iptables-restore")
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.200.255.254")})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		const n = 20000
		for i := 0; i < n; i++ {
			c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.IPv4(10, 200, byte(i/250), byte(1+i%250)), Port: 9})
		}
		out := netnstest.Sh(t, "ipset", "list", set.Name)
		if !strings.Contains(out, "Number of entries: "+strconv.Itoa(n)+"\n") {
			i := strings.Index(out, "Number of entries")
			t.Errorf("the set holds %q; want all %d", out[i:i+30], n)
		}
	})
}
