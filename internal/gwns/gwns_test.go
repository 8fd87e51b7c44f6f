package gwns

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/extranetgw/extranet/internal/netnstest"
)

var sh = netnstest.Sh

func TestKernelOpenPlumbDelete(t *testing.T) {
	netnstest.Run(t, func(host string) {
		if _, _, err := Open(host); err == nil || !strings.Contains(err.Error(), "of its own") {
			t.Errorf("the caller's own namespace was taken as the gateway's: %v", err)
		}
		name := host + "g"
		ns, created, err := Open(name)
		if err != nil || !created {
			t.Fatalf("open %s: created %v, %v", name, created, err)
		}
		t.Cleanup(func() { Delete(name) })
		ns.Close()
		// A second start adopts it.
		ns, created, err = Open(name)
		if err != nil || created {
			t.Fatalf("reopen %s: created %v, %v", name, created, err)
		}
		defer ns.Close()

		link := Link{HostVeth: "extranet0", NSVeth: "uplink", Network: netip.MustParsePrefix("169.254.100.0/30"), Tunnel: netip.MustParsePrefix("100.64.0.0/16")}
		fixed, err := ns.Plumb(link)
		if err != nil || len(fixed) == 0 {
			t.Fatalf("first plumb: %v, %v", fixed, err)
		}
		if fixed, err := ns.Plumb(link); err != nil || len(fixed) != 0 {
			t.Errorf("a plumbed namespace was changed again: %v, %v", fixed, err)
		}
		in := func(args ...string) string { return sh(t, append([]string{"ip", "netns", "exec", name}, args...)...) }
		if out := sh(t, "ip", "route", "get", "100.64.3.3"); !strings.Contains(out, "via 169.254.100.2 dev extranet0") {
			t.Errorf("host route to the tunnel: %s", out)
		}
		if out := in("ip", "route", "get", "10.1.2.3"); !strings.Contains(out, "via 169.254.100.1 dev uplink") {
			t.Errorf("namespace route out: %s", out)
		}
		if out := in("ping", "-c1", "-W2", "169.254.100.1"); !strings.Contains(out, "1 received") {
			t.Errorf("the namespace cannot reach the host: %s", out)
		}
		for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.disable_ipv6"} {
			if out := strings.TrimSpace(in("sysctl", "-n", k)); out != "1" {
				t.Errorf("namespace %s = %s", k, out)
			}
		}

		// Drift of each piece is found and put back, and said.
		for _, tc := range []struct {
			breakIt []string
			want    string
		}{
			{[]string{"ip", "-n", name, "link", "set", "uplink", "down"}, "uplink was down"},
			{[]string{"ip", "route", "del", "100.64.0.0/16"}, "route 100.64.0.0/16"},
			{[]string{"ip", "-n", name, "route", "del", "default"}, "route 0.0.0.0/0"},
			{[]string{"ip", "-n", name, "addr", "flush", "dev", "uplink"}, "address 169.254.100.2/30"},
			{[]string{"ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=0"}, "namespace net/ipv4/ip_forward was 0"},
			{[]string{"ip", "link", "del", "extranet0"}, "veth pair extranet0 created"},
		} {
			sh(t, tc.breakIt...)
			// A check says what differs and changes nothing.
			for i := 0; i < 2; i++ {
				if found, err := ns.CheckPlumbing(link); err != nil || len(found) == 0 {
					t.Errorf("check %d after %v: %v, %v", i+1, tc.breakIt, found, err)
				}
			}
			fixed, err := ns.Plumb(link)
			if err != nil || !strings.Contains(strings.Join(fixed, ";"), tc.want) {
				t.Errorf("after %v: fixed %v (%v), want %q", tc.breakIt, fixed, err, tc.want)
			}
			if fixed, _ := ns.Plumb(link); len(fixed) != 0 {
				t.Errorf("after repairing %v, still: %v", tc.breakIt, fixed)
			}
		}

		if !ns.OwnsVeth("extranet0") {
			t.Error("the namespace does not own its veth")
		}
		sh(t, "ip", "link", "add", "vx0", "type", "veth", "peer", "name", "vy0")
		if ns.OwnsVeth("vx0") || ns.OwnsVeth("lo") {
			t.Error("the namespace claims a veth of someone else's")
		}
		if f, err := ns.Foreign("uplink"); err != nil || len(f) != 0 {
			t.Errorf("foreign links in a namespace of ours alone: %v, %v", f, err)
		}
		sh(t, "ip", "-n", name, "link", "add", "da0", "type", "veth", "peer", "name", "db0")
		if f, err := ns.Foreign("uplink"); err != nil || strings.Join(f, ",") != "db0,da0" && strings.Join(f, ",") != "da0,db0" {
			t.Errorf("foreign links: %v, %v", f, err)
		}

		// Unpinned by hand (ip netns del), the namespace lives on through
		// our handle; the pin is found missing and put back, the same
		// namespace with its links.
		sh(t, "ip", "netns", "del", name)
		if found, err := ns.CheckPlumbing(link); err != nil || !strings.Contains(strings.Join(found, ";"), "namespace pin") {
			t.Errorf("check after ip netns del: %v, %v", found, err)
		}
		if fixed, err := ns.Plumb(link); err != nil || !strings.Contains(strings.Join(fixed, ";"), "namespace pin") {
			t.Errorf("plumb after ip netns del: %v, %v", fixed, err)
		}
		if out := sh(t, "ip", "-n", name, "-o", "link"); !strings.Contains(out, "uplink@") {
			t.Errorf("the namespace pinned again is not ours:\n%s", out)
		}
		// A name that pins another namespace now is refused.
		sh(t, "ip", "netns", "del", name)
		sh(t, "ip", "netns", "add", name)
		if _, err := ns.Plumb(link); err == nil || !strings.Contains(err.Error(), "another network namespace") {
			t.Errorf("plumb over another namespace of the name: %v", err)
		}
		sh(t, "ip", "netns", "del", name)
		if _, err := ns.Plumb(link); err != nil {
			t.Fatal(err)
		}

		// Do runs in the namespace; the caller stays where it was.
		var links string
		if err := ns.Do(func() error {
			out, err := exec.Command("ip", "-o", "link").Output()
			links = string(out)
			return err
		}); err != nil || !strings.Contains(links, "uplink@") {
			t.Errorf("Do did not run in the namespace: %v\n%s", err, links)
		}
		if out := sh(t, "ip", "-o", "link"); strings.Contains(out, "uplink@") {
			t.Errorf("the caller left its namespace:\n%s", out)
		}

		local, err := HostLocal()
		if err != nil {
			t.Fatal(err)
		}
		if !containsPrefix(local, "169.254.100.1/32") || containsPrefix(local, "169.254.100.2/32") {
			t.Errorf("what the host receives: %v", local)
		}

		ns.Close()
		ns.Close()
		for i := 0; i < 2; i++ {
			if err := Delete(name); err != nil {
				t.Fatalf("delete %d: %v", i+1, err)
			}
		}
		if _, err := os.Stat(filepath.Join(Dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still pinned: %v", name, err)
		}
		if n, err := OpenExisting(name); n != nil || err != nil {
			t.Errorf("a deleted namespace opened: %v", err)
		}
		// A pin file left empty by a crash is not taken for a namespace.
		if err := os.WriteFile(filepath.Join(Dir, name), nil, 0o444); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenExisting(name); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
			t.Errorf("an empty pin opened: %v", err)
		}
		ns, created, err = Open(name)
		if err != nil || !created {
			t.Fatalf("open over an empty pin: created %v, %v", created, err)
		}
		ns.Close()
	})
}

func containsPrefix(ps []netip.Prefix, s string) bool {
	for _, p := range ps {
		if p.String() == s {
			return true
		}
	}
	return false
}

func TestLinkValidate(t *testing.T) {
	tunnel := netip.MustParsePrefix("100.64.0.0/16")
	for _, tc := range []struct {
		network string
		ok      bool
	}{
		{"169.254.100.0/30", true},
		{"192.0.2.4/31", true},
		{"169.254.100.0/29", false},
		{"100.64.9.0/30", false},
		{"fd00::/126", false},
	} {
		l := Link{HostVeth: "extranet0", NSVeth: "uplink", Network: netip.MustParsePrefix(tc.network), Tunnel: tunnel}
		if err := l.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.network, err)
		}
	}
	l := Link{HostVeth: "extranet0", NSVeth: "uplink", Network: netip.MustParsePrefix("192.0.2.4/31"), Tunnel: tunnel}
	if h, n, _ := l.Addrs(); h.String() != "192.0.2.4" || n.String() != "192.0.2.5" {
		t.Errorf("/31 addresses: %s %s", h, n)
	}
	for _, name := range []string{"", ".", "..", "a/b", strings.Repeat("x", 65)} {
		if ValidName(name) == nil {
			t.Errorf("namespace name %q accepted", name)
		}
	}
}
