package firewall

import (
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
