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

// TestUnloggedCounts: a reason's chains, in a throwaway namespace: a burst
// past the log's rate is counted per source in the reason's unlogged set,
// so that the logged and the unlogged add up to every packet refused.
func TestUnloggedCounts(t *testing.T) {
	netnstest.Run(t, func(string) {
		if got, err := ReadUnlogged(); err != nil || len(got) != 0 {
			t.Fatalf("before the sets exist: %v, %v; want nothing, and no error", got, err)
		}
		netnstest.Sh(t, "ip", "link", "set", "lo", "up")
		netnstest.Sh(t, "ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
		set := unloggedSet(api.DenyHost)
		pipe(t, set.create(set.Name, ""), "ipset", "restore")
		var rules strings.Builder
		denyChain(&rules, api.DenyHost)
		pipe(t, "*filter\n:"+DenyChain(api.DenyHost)+" - [0:0]\n:"+logChain(api.DenyHost)+" - [0:0]\n"+
			"-A OUTPUT -s 127.0.0.2 -p udp --dport 9 -j "+DenyChain(api.DenyHost)+"\n"+rules.String()+"COMMIT\n", "iptables-restore")

		const sent = 300
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := 0; i < sent; i++ {
			c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9})
		}
		got, err := ReadUnlogged()
		if err != nil {
			t.Fatal(err)
		}
		unlogged := got[Unlogged{Reason: api.DenyHost, Src: netip.MustParseAddr("127.0.0.2")}]
		logged := firstRulePackets(t, DenyChain(api.DenyHost))
		if len(got) != 1 || unlogged == 0 || logged == 0 || logged+unlogged != sent {
			t.Errorf("%d logged and unlogged counts %v; want both, adding up to the %d refused\n%s", logged, got, sent, netnstest.Sh(t, "iptables-save", "-c"))
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

// firstRulePackets is the packet count of chain's first rule.
func firstRulePackets(t *testing.T, chain string) uint64 {
	t.Helper()
	lines := strings.Split(netnstest.Sh(t, "iptables", "-L", chain, "-v", "-x", "-n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("iptables -L %s: %q", chain, lines)
	}
	n, err := strconv.ParseUint(strings.Fields(lines[2])[0], 10, 64)
	if err != nil {
		t.Fatalf("iptables -L %s: %q: %v", chain, lines[2], err)
	}
	return n
}
