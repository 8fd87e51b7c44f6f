package firewall

import (
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/gwns"
	"github.com/extranetgw/extranet/internal/netnstest"
	"github.com/extranetgw/extranet/internal/policy"
)

var sh = netnstest.Sh

// state is a namespace's whole firewall, without counters and comments.
func state(t *testing.T, ns string) string {
	var b strings.Builder
	counters := regexp.MustCompile(` \[\d+:\d+\]$`)
	in := func(args ...string) string {
		if ns == "" {
			return sh(t, args...)
		}
		return sh(t, append([]string{"ip", "netns", "exec", ns}, args...)...)
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		for _, table := range []string{"filter", "nat", "mangle", "raw"} {
			for _, l := range strings.Split(in(save, "-t", table), "\n") {
				if l != "" && !strings.HasPrefix(l, "#") {
					b.WriteString(counters.ReplaceAllString(l, "") + "\n")
				}
			}
		}
	}
	b.WriteString(in("ipset", "list", "-n"))
	return b.String()
}

// groups makes peers of addresses and their groups, each with a key of its
// own.
func groups(m map[netip.Addr]uint32) map[netip.Addr]policy.Peer {
	out := make(map[netip.Addr]policy.Peer, len(m))
	for a, g := range m {
		var k [32]byte
		copy(k[:], a.AsSlice())
		out[a] = policy.Peer{Group: g, Key: k}
	}
	return out
}

// gatewayNS opens a gateway namespace of the test's own, removed at the end.
func gatewayNS(t *testing.T, host string) *gwns.NS {
	t.Helper()
	name := host + "gw"
	ns, created, err := gwns.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatalf("namespace %s existed already", name)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := gwns.Delete(name); err != nil {
			t.Error(err)
		}
	})
	return ns
}

func TestKernelApplyCheckCleanup(t *testing.T) {
	netnstest.Run(t, func(host string) {
		// Someone else's rules on the host, which we must never touch.
		sh(t, "iptables", "-A", "FORWARD", "-s", "192.0.2.1", "-j", "DROP")
		sh(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.1", "-j", "RETURN")
		before := state(t, "")
		// What a release that enforced on the host left there: its
		// anti-spoofing rule would drop every partner packet leaving the
		// veth. The first apply removes it all, and only that.
		sh(t, "ipset", "create", PeerSet, "hash:ip")
		sh(t, "iptables", "-N", "EXTRANET-FWD")
		sh(t, "iptables", "-A", "EXTRANET-FWD", "-m", "set", "!", "--match-set", PeerSet, "src", "-j", "REJECT")
		sh(t, "iptables", "-I", "FORWARD", "1", "-i", "wg-ext", "-j", "EXTRANET-FWD")
		sh(t, "iptables", "-N", "EXTRANET-SPOOF")
		sh(t, "iptables", "-A", "EXTRANET-SPOOF", "-j", "DROP")
		sh(t, "iptables", "-I", "FORWARD", "2", "-s", "100.64.0.0/16", "!", "-i", "wg-ext", "-j", "EXTRANET-SPOOF")
		ns := gatewayNS(t, host)
		gw := ns.Name()
		in := func(args ...string) string { return sh(t, append([]string{"ip", "netns", "exec", gw}, args...)...) }

		f, err := New(Options{Interface: "wg-ext", Uplink: "uplink", HostVeth: "extranet0", NS: ns, Mode: "auto"})
		if err != nil {
			t.Fatal(err)
		}
		p := testPolicy(t)
		p.Host.Local = []netip.Prefix{netip.MustParsePrefix("10.10.1.1/32")}
		// While the interface those rules guard is still on the host, they
		// stay, and the apply says why.
		sh(t, "ip", "link", "add", "wg-ext", "type", "veth", "peer", "name", "wg-ext-p")
		if err := f.Apply(p); err == nil || !strings.Contains(err.Error(), "interface wg-ext is still in the host namespace") {
			t.Fatalf("apply with the old interface on the host: %v", err)
		}
		sh(t, "ip", "link", "del", "wg-ext")
		if err := f.Apply(p); err != nil {
			t.Fatal(err)
		}
		if d, err := f.Check(); err != nil || len(d) != 0 {
			t.Fatalf("drift right after apply: %v %v", d, err)
		}
		applied, appliedHost := state(t, gw), state(t, "")
		for _, old := range []string{"EXTRANET-FWD", "EXTRANET-SPOOF", PeerSet} {
			if strings.Contains(appliedHost, old) {
				t.Errorf("the host still holds %s of the old layout:\n%s", old, appliedHost)
			}
		}
		if err := f.Apply(p); err != nil {
			t.Fatal(err)
		}
		if again := state(t, gw); again != applied {
			t.Errorf("second apply changed the namespace:\n%s\nvs\n%s", applied, again)
		}
		if again := state(t, ""); again != appliedHost {
			t.Errorf("second apply changed the host:\n%s\nvs\n%s", appliedHost, again)
		}
		// The namespace is closed by default, IPv4 and IPv6 alike; the
		// host got only its accept and masquerade chains, after its own
		// rules.
		for _, want := range []string{":INPUT DROP", ":FORWARD DROP", ":OUTPUT DROP", "-A FORWARD -i wg-ext -j EXTRANET-FWD"} {
			if !strings.Contains(applied, want) {
				t.Errorf("the namespace lacks %q:\n%s", want, applied)
			}
		}
		if got := strings.Count(applied, ":FORWARD DROP"); got != 2 {
			t.Errorf("FORWARD DROP in %d of the IPv4 and IPv6 tables, want both:\n%s", got, applied)
		}
		fwd := sh(t, "iptables", "-S", "FORWARD")
		if !strings.HasSuffix(strings.TrimSpace(fwd), "-A FORWARD -j EXTRANET-ACCEPT") || !strings.Contains(fwd, "-s 192.0.2.1/32 -j DROP") {
			t.Errorf("host FORWARD:\n%s", fwd)
		}
		if strings.Contains(appliedHost, "extranet-") {
			t.Errorf("sets on the host:\n%s", appliedHost)
		}
		if got := in("ipset", "list", LocalSet); !strings.Contains(got, "\n10.10.1.1\n") {
			t.Errorf("host set:\n%s", got)
		}

		for _, breakIt := range [][]string{
			{"ip", "netns", "exec", gw, "iptables", "-F", "FORWARD"},
			{"ip", "netns", "exec", gw, "iptables", "-P", "FORWARD", "ACCEPT"},
			{"ip", "netns", "exec", gw, "ip6tables", "-P", "INPUT", "ACCEPT"},
			{"ip", "netns", "exec", gw, "iptables", "-F", "EXTRANET-O-1"},
			{"ip", "netns", "exec", gw, "iptables", "-A", "EXTRANET-O-2", "-j", "ACCEPT"},
			{"ip", "netns", "exec", gw, "iptables", "-I", "FORWARD", "1", "-j", "ACCEPT"},
			{"ip", "netns", "exec", gw, "ipset", "flush", "extranet-g10-port"},
			{"ip", "netns", "exec", gw, "ipset", "del", LocalSet, "10.10.1.1"},
			{"iptables", "-t", "nat", "-F", "EXTRANET-POST"},
			{"iptables", "-D", "FORWARD", "-j", "EXTRANET-ACCEPT"},
			{"iptables", "-t", "mangle", "-F", "EXTRANET-GUARD-FWD"},
			{"ip", "netns", "exec", gw, "iptables", "-t", "raw", "-F", "PREROUTING"},
			// The host's raw guard is first, or an accept before it
			// would skip it.
			{"iptables", "-t", "raw", "-I", "PREROUTING", "1", "-j", "ACCEPT"},
			{"iptables", "-t", "mangle", "-I", "FORWARD", "1", "-j", "ACCEPT"},
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
			if got := state(t, gw); got != applied {
				t.Errorf("after repairing %v the namespace differs:\n%s\nwant:\n%s", breakIt, got, applied)
			}
		}
		// The accepts the test put before the guards are its own.
		sh(t, "iptables", "-t", "raw", "-D", "PREROUTING", "-j", "ACCEPT")
		sh(t, "iptables", "-t", "mangle", "-D", "FORWARD", "-j", "ACCEPT")
		// The peer set changes by single addresses and marks, between
		// applies, and drift in it is found and repaired like any other.
		a, b, c := netip.MustParseAddr("100.64.1.2"), netip.MustParseAddr("100.64.1.3"), netip.MustParseAddr("100.64.2.7")
		members := func() string {
			var out []string
			for _, l := range strings.Split(in("ipset", "save", PeerSet), "\n") {
				if f := strings.Fields(l); len(f) > 3 && f[0] == "add" {
					out = append(out, f[2]+"="+f[len(f)-1])
				}
			}
			sort.Strings(out)
			return strings.Join(out, " ")
		}
		if err := f.UpdatePeerSet(groups(map[netip.Addr]uint32{a: 10, b: 10, c: 20}), nil); err != nil {
			t.Fatal(err)
		}
		// b moves to group 11 by a removal and an add; a moves to 11 and
		// back by adds alone.
		if err := f.UpdatePeerSet(groups(map[netip.Addr]uint32{b: 11, a: 11}), []netip.Addr{b, c}); err != nil {
			t.Fatal(err)
		}
		if err := f.UpdatePeerSet(groups(map[netip.Addr]uint32{a: 10}), nil); err != nil {
			t.Fatal(err)
		}
		// A group the rules do not have is refused before anything runs,
		// so the set stays known.
		if err := f.UpdatePeerSet(groups(map[netip.Addr]uint32{netip.MustParseAddr("100.64.1.9"): 99}), nil); err == nil || !strings.Contains(err.Error(), "group 99") {
			t.Errorf("an add to an unknown group: %v", err)
		}
		if got := members(); got != "100.64.1.2=0xa 100.64.1.3=0xb" {
			t.Errorf("the peer set after the updates holds %q", got)
		}
		if d, err := f.Check(); err != nil || len(d) != 0 {
			t.Errorf("drift after peer updates: %v %v", d, err)
		}
		p.Peers = groups(map[netip.Addr]uint32{a: 10, b: 11})
		for _, tc := range []struct {
			breakIt []string
			want    string
		}{
			{[]string{"ip", "netns", "exec", gw, "ipset", "del", PeerSet, "100.64.1.2"}, "missing: peer 100.64.1.2"},
			{[]string{"ip", "netns", "exec", gw, "ipset", "add", PeerSet, "100.64.9.9"}, "unexpected: peer 100.64.9.9"},
			{[]string{"ip", "netns", "exec", gw, "ipset", "add", PeerSet, "100.64.1.2", "skbmark", "0xb", "-exist"}, "wrong entry: peer 100.64.1.2"},
			{[]string{"ip", "netns", "exec", gw, "iptables", "-t", "mangle", "-F", chainMark}, "missing: ip"},
		} {
			sh(t, tc.breakIt...)
			if d, err := f.Check(); err != nil || !strings.HasPrefix(strings.Join(d, ";"), tc.want) {
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
		if err := f.UpdatePeerSet(groups(map[netip.Addr]uint32{d: 10, {}: 10}), nil); err == nil {
			t.Fatal("an update with an invalid address succeeded")
		}
		in("ipset", "add", PeerSet, d.String(), "-exist")
		if drift, err := f.Check(); err != nil || strings.Join(drift, ";") != "peer set unknown after a failed update" {
			t.Errorf("drift after a failed update: %v %v", drift, err)
		}
		if err := f.UpdatePeerSet(groups(map[netip.Addr]uint32{c: 20}), nil); err == nil {
			t.Error("an update built on an unknown set succeeded")
		}
		if err := f.SetPeerSet(p.Peers); err != nil {
			t.Fatal(err)
		}
		if got := members(); got != "100.64.1.2=0xa 100.64.1.3=0xb" {
			t.Errorf("the peer set after the refill: %s", got)
		}
		if drift, err := f.Check(); err != nil || len(drift) != 0 {
			t.Errorf("drift after the refill: %v %v", drift, err)
		}
		// Known again, the set changes by differences.
		if err := f.SetPeerSet(groups(map[netip.Addr]uint32{a: 11, c: 20})); err != nil {
			t.Fatal(err)
		}
		if got := members(); got != "100.64.1.2=0xb 100.64.2.7=0x14" {
			t.Errorf("the peer set after SetPeerSet(a in 11, c): %s", got)
		}
		if drift, err := f.Check(); err != nil || len(drift) != 0 {
			t.Errorf("drift after SetPeerSet: %v %v", drift, err)
		}
		p.Peers = groups(map[netip.Addr]uint32{a: 11, c: 20})

		// A peer's entry carries its key's fingerprint, which a start
		// reads back, and a new key rewrites it.
		held, err := f.PeerHolders()
		if err != nil || held[a] != p.Peers[a].Holder() {
			t.Errorf("holders %v (%v), want %s for %s", held, err, p.Peers[a].Holder(), a)
		}
		rekeyed := p.Peers[a]
		rekeyed.Key[0] ^= 0xff
		if err := f.SetPeerSet(map[netip.Addr]policy.Peer{a: rekeyed, c: p.Peers[c]}); err != nil {
			t.Fatal(err)
		}
		if held, _ := f.PeerHolders(); held[a] != rekeyed.Holder() {
			t.Errorf("after a new key the set holds %s for %s, want %s", held[a], a, rekeyed.Holder())
		}
		// A peer's date ends its entry in the kernel, daemon or not; the
		// entry gone on its date is no drift.
		clock := time.Now()
		f.opts.Now = func() time.Time { return clock }
		ending := p.Peers[c]
		ending.Ends = clock.Add(time.Second)
		if err := f.SetPeerSet(map[netip.Addr]policy.Peer{a: rekeyed, c: ending}); err != nil {
			t.Fatal(err)
		}
		if out := in("ipset", "save", PeerSet); !strings.Contains(out, "add "+PeerSet+" "+c.String()+" timeout 1 ") {
			t.Errorf("%s was not given its one second:\n%s", c, out)
		}
		for deadline := time.Now().Add(10 * time.Second); strings.Contains(in("ipset", "save", PeerSet), " "+c.String()+" "); {
			if time.Now().After(deadline) {
				t.Fatalf("%s still in the set 10 s after its date", c)
			}
			time.Sleep(100 * time.Millisecond)
		}
		clock = clock.Add(2 * time.Second)
		if d, err := f.Check(); err != nil || len(d) != 0 {
			t.Errorf("an entry ended on its date is taken for drift: %v %v", d, err)
		}
		f.opts.Now = time.Now
		if err := f.SetPeerSet(p.Peers); err != nil {
			t.Fatal(err)
		}

		// An org that leaves takes its chain and sets along.
		p.Orgs = p.Orgs[1:]
		if err := f.Apply(p); err != nil {
			t.Fatal(err)
		}
		st := state(t, gw)
		if strings.Contains(st, "EXTRANET-O-2") || strings.Contains(st, "extranet-g20-") {
			t.Errorf("removed org left rules or sets:\n%s", st)
		}

		// Cleanup of the host works by name, twice without error, and
		// leaves the host as it was.
		for i := 0; i < 2; i++ {
			if err := CleanupHost("auto"); err != nil {
				t.Fatalf("cleanup %d: %v", i+1, err)
			}
		}
		if after := state(t, ""); after != before {
			t.Errorf("after cleanup:\n%s\nbefore:\n%s", after, before)
		}
	})
}
