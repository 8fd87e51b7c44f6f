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
// wider than the rate limit's table of destinations too.
func TestAttemptsCounts(t *testing.T) {
	netnstest.Run(t, func(string) {
		if got, err := ReadAttempts(); err != nil || len(got) != 0 {
			t.Fatalf("before the sets exist: %v, %v; want nothing, and no error", got, err)
		}
		netnstest.Sh(t, "ip", "link", "set", "lo", "up")
		netnstest.Sh(t, "ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
		netnstest.Sh(t, "ip", "addr", "add", "127.0.0.3/8", "dev", "lo")
		set := attemptsSet(api.DenyHost)
		pipe(t, set.create(set.Name, ""), "ipset", "restore")
		var rules strings.Builder
		denyChain(&rules, api.DenyHost)
		pipe(t, "*filter\n:"+DenyChain(api.DenyHost)+" - [0:0]\n:"+logChain(api.DenyHost)+" - [0:0]\n"+
			"-A OUTPUT -s 127.0.0.2 -p udp -j "+DenyChain(api.DenyHost)+"\n"+rules.String()+"COMMIT\n", "iptables-restore")

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

		// A sweep of more destinations than the log's table of them
		// holds (65,536 by default): the kernel drops what it cannot
		// make an entry for, and those are refused attempts too.
		swept := 0
		for _, dst := range []string{"127.0.0.1", "127.0.0.3"} {
			for port := 1; port < 65536; port++ {
				c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.ParseIP(dst), Port: port})
				swept++
			}
		}
		if got, err = ReadAttempts(); err != nil {
			t.Fatal(err)
		}
		seen := rulePackets(t, logChain(api.DenyHost), 0) + rulePackets(t, DenyChain(api.DenyHost), 3)
		if want := uint64(sent + swept); got[src] != want || seen == want {
			t.Errorf("after a sweep of %d destinations: attempts %v; want all %d counted, and some dropped by the rate limit unseen by the rules after it\n%s",
				swept, got, want, netnstest.Sh(t, "iptables-save", "-c"))
		}
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
