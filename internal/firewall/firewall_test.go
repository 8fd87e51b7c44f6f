package firewall

import (
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/extranetgw/extranet/internal/netnstest"
)

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return string(out)
}

// state is the namespace's whole firewall, without counters and comments.
func state(t *testing.T) string {
	var b strings.Builder
	counters := regexp.MustCompile(` \[\d+:\d+\]$`)
	for _, table := range []string{"filter", "nat"} {
		for _, l := range strings.Split(sh(t, "iptables-save", "-t", table), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				b.WriteString(counters.ReplaceAllString(l, "") + "\n")
			}
		}
	}
	b.WriteString(sh(t, "ipset", "list", "-n"))
	return b.String()
}

func TestKernelApplyCheckCleanup(t *testing.T) {
	netnstest.Run(t, func(string) {
		// Someone else's rules, which we must never touch.
		sh(t, "iptables", "-A", "FORWARD", "-s", "192.0.2.1", "-j", "DROP")
		sh(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.1", "-j", "RETURN")
		before := state(t)

		f, err := New(Options{Interface: "wg-ext", Mode: "auto"})
		if err != nil {
			t.Fatal(err)
		}
		p := testPolicy(t)
		if err := f.Apply(p); err != nil {
			t.Fatal(err)
		}
		if d, err := f.Check(); err != nil || len(d) != 0 {
			t.Fatalf("drift right after apply: %v %v", d, err)
		}
		applied := state(t)
		if err := f.Apply(p); err != nil {
			t.Fatal(err)
		}
		if again := state(t); again != applied {
			t.Errorf("second apply changed the kernel:\n%s\nvs\n%s", applied, again)
		}
		fwd := sh(t, "iptables", "-S", "FORWARD")
		if !strings.HasPrefix(strings.SplitN(fwd, "\n", 3)[1], "-A FORWARD -i wg-ext -j EXTRANET-FWD") {
			t.Errorf("our jump is not first in FORWARD:\n%s", fwd)
		}

		for _, breakIt := range [][]string{
			{"iptables", "-F", "FORWARD"},
			{"iptables", "-F", "EXTRANET-O-1"},
			{"iptables", "-A", "EXTRANET-O-2", "-j", "ACCEPT"},
			{"ipset", "flush", "extranet-1-port"},
			{"iptables", "-t", "nat", "-F", "EXTRANET-POST"},
		} {
			sh(t, breakIt...)
			d, err := f.Check()
			if err != nil || len(d) == 0 {
				t.Errorf("%v: no drift found (%v)", breakIt, err)
			}
			if err := f.Apply(p); err != nil {
				t.Fatalf("repair after %v: %v", breakIt, err)
			}
			if d, _ := f.Check(); len(d) != 0 {
				t.Errorf("drift after repairing %v: %v", breakIt, d)
			}
		}
		// A rule put above ours (Docker, ufw and hand-made rules insert at
		// the top) would decide partner traffic before our chains do. It is
		// drift, and the repair puts our jumps back on top, leaving the
		// foreign rule in place below them.
		for _, chain := range []string{"FORWARD", "INPUT"} {
			sh(t, "iptables", "-I", chain, "1", "-i", "wg-ext", "-j", "ACCEPT")
			d, err := f.Check()
			if err != nil || !strings.Contains(strings.Join(d, " "), "above ours in "+chain) {
				t.Errorf("an ACCEPT above our jumps in %s: drift %v (%v)", chain, d, err)
			}
			if err := f.Apply(p); err != nil {
				t.Fatal(err)
			}
			rules := strings.Split(sh(t, "iptables", "-S", chain), "\n")
			if !strings.Contains(rules[1], "EXTRANET-") {
				t.Errorf("after the repair our jump is not first in %s:\n%s", chain, strings.Join(rules, "\n"))
			}
			if d, _ := f.Check(); len(d) != 0 {
				t.Errorf("drift after putting our jumps back on top of %s: %v", chain, d)
			}
			sh(t, "iptables", "-D", chain, "-i", "wg-ext", "-j", "ACCEPT")
		}
		// The peer set changes by single addresses, between applies, and
		// drift in it is found and repaired like any other.
		a, b, c := netip.MustParseAddr("100.64.1.2"), netip.MustParseAddr("100.64.1.3"), netip.MustParseAddr("100.64.2.7")
		if err := f.UpdatePeerSet([]netip.Addr{a, b, c}, nil); err != nil {
			t.Fatal(err)
		}
		if err := f.UpdatePeerSet([]netip.Addr{b}, []netip.Addr{b, c}); err != nil {
			t.Fatal(err)
		}
		if got := sh(t, "ipset", "list", PeerSet); !strings.Contains(got, "\n100.64.1.2\n") || !strings.Contains(got, "\n100.64.1.3\n") || strings.Contains(got, "100.64.2.7") {
			t.Errorf("peer set after add a,b,c and remove b,c re-adding b:\n%s", got)
		}
		if d, err := f.Check(); err != nil || len(d) != 0 {
			t.Errorf("drift after peer updates: %v %v", d, err)
		}
		p.Peers = map[netip.Addr]bool{a: true, b: true}
		for _, tc := range []struct {
			breakIt []string
			want    string
		}{
			{[]string{"ipset", "del", PeerSet, "100.64.1.2"}, "missing: peer 100.64.1.2"},
			{[]string{"ipset", "add", PeerSet, "100.64.9.9"}, "unexpected: peer 100.64.9.9"},
		} {
			sh(t, tc.breakIt...)
			if d, err := f.Check(); err != nil || strings.Join(d, ";") != tc.want {
				t.Errorf("%v: drift %v (%v), want %q", tc.breakIt, d, err, tc.want)
			}
			if err := f.Apply(p); err != nil {
				t.Fatalf("repair after %v: %v", tc.breakIt, err)
			}
			if d, _ := f.Check(); len(d) != 0 {
				t.Errorf("drift after repairing %v: %v", tc.breakIt, d)
			}
		}

		// A failed update leaves the set unknown, as it may have gone part
		// way (here, its first address went in by hand); Check says so,
		// and SetPeerSet refills the set from what the kernel shows.
		d := netip.MustParseAddr("100.64.1.44")
		if err := f.UpdatePeerSet([]netip.Addr{d, {}}, nil); err == nil {
			t.Fatal("an update with an invalid address succeeded")
		}
		sh(t, "ipset", "add", PeerSet, d.String(), "-exist")
		if drift, err := f.Check(); err != nil || strings.Join(drift, ";") != "peer set unknown after a failed update" {
			t.Errorf("drift after a failed update: %v %v", drift, err)
		}
		if err := f.UpdatePeerSet([]netip.Addr{c}, nil); err == nil {
			t.Error("an update built on an unknown set succeeded")
		}
		if err := f.SetPeerSet(p.Peers); err != nil {
			t.Fatal(err)
		}
		if got := sh(t, "ipset", "list", PeerSet); strings.Contains(got, "100.64.1.44") || !strings.Contains(got, "\n100.64.1.3\n") {
			t.Errorf("peer set after the refill:\n%s", got)
		}
		if drift, err := f.Check(); err != nil || len(drift) != 0 {
			t.Errorf("drift after the refill: %v %v", drift, err)
		}
		// Known again, the set changes by differences.
		if err := f.SetPeerSet(map[netip.Addr]bool{a: true, c: true}); err != nil {
			t.Fatal(err)
		}
		if got := sh(t, "ipset", "list", PeerSet); strings.Contains(got, "100.64.1.3") || !strings.Contains(got, "\n100.64.2.7\n") {
			t.Errorf("peer set after SetPeerSet(a, c):\n%s", got)
		}
		if drift, err := f.Check(); err != nil || len(drift) != 0 {
			t.Errorf("drift after SetPeerSet: %v %v", drift, err)
		}
		p.Peers = map[netip.Addr]bool{a: true, c: true}

		// The flush of FORWARD took the foreign rule; put it back as its owner would.
		sh(t, "iptables", "-A", "FORWARD", "-s", "192.0.2.1", "-j", "DROP")

		// An org that leaves takes its chain and sets along.
		p.Orgs = p.Orgs[1:]
		if err := f.Apply(p); err != nil {
			t.Fatal(err)
		}
		st := state(t)
		if strings.Contains(st, "EXTRANET-O-2") || strings.Contains(st, "extranet-2-") {
			t.Errorf("removed org left rules or sets:\n%s", st)
		}

		// A fresh process cleans up by name, twice without error.
		g, err := New(Options{Interface: "wg-ext"})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if err := g.Cleanup(); err != nil {
				t.Fatalf("cleanup %d: %v", i+1, err)
			}
		}
		if after := state(t); after != before {
			t.Errorf("after cleanup:\n%s\nbefore:\n%s", after, before)
		}
	})
}
