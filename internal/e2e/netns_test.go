package e2e

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The gateway namespace: whatever happens to the host's firewall, a
// partner reaches its grants and nothing more, at every moment. The tests
// run with the periodic reconcile slowed to an hour, so no repair can hide
// a moment of open access; SIGHUP repairs where a test wants it.

// routesEverything turns a partner config into one that sends all IPv4
// through the tunnel, as a partner's "full tunnel" setting would.
func routesEverything(cfg string) string {
	return regexp.MustCompile(`(?m)^AllowedIPs = .*$`).ReplaceAllString(cfg, "AllowedIPs = 0.0.0.0/0")
}

// hostRig is a rig where acme (in PA, full tunnel) is granted in1's whole
// network, which holds an address of the gateway host too, and globex (in
// PB) in2's web port. The host serves on every address of its own.
func hostRig(t *testing.T) (r *Rig, acmeIP, globexIP string) {
	r = standardRig(t, "--reconcile-interval", "1h")
	r.Serve(r.GW, "0.0.0.0", "gw", []int{2222, 8081}, []int{2223})
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	r.MustCTL("org", "create", "globex", "--grant", "10.10.2.0/24:tcp/8080")
	r.PartnerUp(r.PA, "pa"+r.id, routesEverything(r.Issue("acme/laptop")))
	r.PartnerUp(r.PB, "pb"+r.id, r.Issue("globex/server"))
	r.Serve(r.PB, "0.0.0.0", "pb", []int{9999}, nil)
	return r, r.peerJSON("acme/laptop").Address, r.peerJSON("globex/server").Address
}

// beyond is everything acme must never reach from hostRig: the other
// internal network, the host's services on each of its addresses (the one
// inside acme's grant too), another partner, and a port the host
// publishes toward in2 the way Docker does. (The host's public address is
// left out: the rig's partners reach it over their own network, outside
// the tunnel, as anyone on the Internet can.)
func beyond(r *Rig, globexIP string) []probe {
	return []probe{
		{r.PA, "tcp", hostPort(in2Addr, 22), false},
		{r.PA, "tcp", hostPort(in2Addr, 8080), false},
		{r.PA, "icmp", in2Addr, false},
		{r.PA, "tcp", hostPort(gwIn1, 2222), false},
		{r.PA, "udp", hostPort(gwIn1, 2223), false},
		{r.PA, "icmp", gwIn1, false},
		{r.PA, "tcp", hostPort("10.10.2.1", 2222), false},
		{r.PA, "tcp", hostPort(gwIn1, 8081), false},
		{r.PA, "tcp", hostPort("169.254.100.1", 2222), false},
		{r.PA, "tcp", hostPort(globexIP, 9999), false},
	}
}

// noneReached asserts that no probe gets through, trying them all at once:
// a refused probe may have to wait out its timeout.
func (r *Rig) noneReached(t *testing.T, when string, probes []probe) {
	t.Helper()
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.try(p) {
				t.Errorf("%s: %s, but it did", when, p)
			}
		}()
	}
	wg.Wait()
}

// TestHostFirewallCannotWiden: what Docker, ufw, firewalld and admins do to
// the host's firewall (insert accepts at the top, publish ports, flush
// everything, flush nftables whole) never lets a partner reach more than
// its grants, not even before the next reconcile.
func TestHostFirewallCannotWiden(t *testing.T) {
	r, _, globexIP := hostRig(t)
	allowed := []probe{{r.PA, "tcp", hostPort(in1Addr, 22), true}, {r.PA, "icmp", in1Addr, true}, {r.PB, "tcp", hostPort(in2Addr, 8080), true}}
	r.checkMatrix(t, append(allowed, beyond(r, globexIP)...))

	for _, step := range []struct {
		what string
		cmds [][]string
	}{
		{"an accept inserted at the top of the host's FORWARD and INPUT", [][]string{
			{"iptables", "-I", "FORWARD", "1", "-j", "ACCEPT"},
			{"iptables", "-I", "INPUT", "1", "-j", "ACCEPT"},
		}},
		{"a port published the way Docker does", [][]string{
			{"iptables", "-t", "nat", "-I", "PREROUTING", "1", "-p", "tcp", "--dport", "8081", "-j", "DNAT", "--to-destination", in2Addr + ":22"},
			{"iptables", "-I", "FORWARD", "1", "-d", in2Addr, "-p", "tcp", "--dport", "22", "-j", "ACCEPT"},
		}},
		{"the host's iptables flushed whole", [][]string{
			{"iptables", "-F"}, {"iptables", "-X"}, {"iptables", "-t", "nat", "-F"}, {"iptables", "-t", "nat", "-X"},
			{"iptables", "-P", "FORWARD", "ACCEPT"}, {"iptables", "-P", "INPUT", "ACCEPT"},
		}},
		{"nft flush ruleset on the host", [][]string{{"nft", "flush", "ruleset"}}},
	} {
		for _, cmd := range step.cmds {
			r.Must(r.GW, cmd...)
		}
		r.noneReached(t, step.what, beyond(r, globexIP))
		// Acme's grant still works: the host's rules were never what
		// decided it.
		r.checkMatrix(t, allowed[:1])
	}
	// The status says the host pieces are gone; SIGHUP puts them back.
	broken := time.Now()
	r.HUP()
	Eventually(t, 5*time.Second, "repair of the host's pieces", func() error {
		if st := r.status(); st.LastRepair == nil || !st.LastRepair.After(broken) || !strings.Contains(st.Firewall, "host") {
			return fmt.Errorf("not repaired: %s", st.Firewall)
		}
		return nil
	})
	r.checkMatrix(t, allowed)
	r.noneReached(t, "after the repair", beyond(r, globexIP))
}

// TestNamespaceFlushClosesEverything: rules flushed inside the gateway
// namespace leave its DROP policies, so partners reach nothing at all until
// the repair, then exactly their grants again.
func TestNamespaceFlushClosesEverything(t *testing.T) {
	r, _, globexIP := hostRig(t)
	allowed := []probe{{r.PA, "tcp", hostPort(in1Addr, 22), true}, {r.PB, "tcp", hostPort(in2Addr, 8080), true}}
	r.checkMatrix(t, allowed)
	if st := r.status(); st.NetNS != r.NS || st.HostVeth != "extranet0" {
		t.Errorf("status names namespace %q and veth %q, want %s and extranet0", st.NetNS, st.HostVeth, r.NS)
	}
	if out := r.MustCTL("status"); !strings.Contains(out, "ip netns exec "+r.NS+" iptables -S") {
		t.Errorf("status does not say how to inspect the namespace:\n%s", out)
	}
	// The daemon itself stays in the host namespace: tools that look at
	// /proc/PID/ns/net (nsenter -t, ip netns identify) must find it there,
	// though its threads enter the gateway namespace all the time.
	r.mu.Lock()
	pid := r.daemon.Process.Pid
	r.mu.Unlock()
	if got, want := nsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid)), nsInode(t, "/run/netns/"+r.GW); got != want {
		t.Errorf("/proc/%d/ns/net is namespace %d, not the host's (%s, %d)", pid, got, r.GW, want)
	}
	r.Must(r.NS, "iptables", "-F")
	closed := append(beyond(r, globexIP), probe{r.PA, "tcp", hostPort(in1Addr, 22), false}, probe{r.PB, "tcp", hostPort(in2Addr, 8080), false})
	r.noneReached(t, "with the namespace's rules flushed", closed)
	broken := time.Now()
	r.HUP()
	Eventually(t, 5*time.Second, "repair of the namespace's rules", func() error {
		if st := r.status(); st.LastRepair == nil || !st.LastRepair.After(broken) {
			return fmt.Errorf("not repaired: %s", st.Firewall)
		}
		return nil
	})
	r.checkMatrix(t, allowed)
	r.noneReached(t, "after the repair", beyond(r, globexIP))
}

// TestDaemonStoppedHostFlushed: with the daemon stopped, a firewall reload
// on the host (here a flush of everything) opens nothing. With kernel
// WireGuard the interface stays up, guarded by the namespace's rules, and
// partners keep exactly their grants; with userspace WireGuard the
// interface went with the process.
func TestDaemonStoppedHostFlushed(t *testing.T) {
	r, _, globexIP := hostRig(t)
	r.checkMatrix(t, []probe{{r.PA, "tcp", hostPort(in1Addr, 22), true}})
	r.StopDaemon()
	for _, cmd := range [][]string{
		{"iptables", "-F"}, {"iptables", "-X"}, {"iptables", "-t", "nat", "-F"},
		{"iptables", "-P", "FORWARD", "ACCEPT"}, {"nft", "flush", "ruleset"},
	} {
		r.Must(r.GW, cmd...)
	}
	r.noneReached(t, "daemon stopped, host flushed", beyond(r, globexIP))
	if wgMode == "kernel" {
		reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	} else if r.try(probe{r.PA, "tcp", hostPort(in1Addr, 22), false}) {
		t.Error("a partner got through a userspace gateway whose daemon is stopped")
	}
	r.StartDaemon("--reconcile-interval", "1h")
	r.checkMatrix(t, []probe{{r.PA, "tcp", hostPort(in1Addr, 22), true}})
	r.noneReached(t, "after the restart", beyond(r, globexIP))
}

// TestHostAddressesFollowed: an address the host gains while running, here
// inside acme's grant, is refused to partners as soon as it exists, without
// waiting for the periodic reconcile.
func TestHostAddressesFollowed(t *testing.T) {
	r, _, _ := hostRig(t)
	r.checkMatrix(t, []probe{{r.PA, "tcp", hostPort(in1Addr, 22), true}})
	const added = "10.10.1.77"
	r.Must(r.GW, "ip", "addr", "add", added+"/24", "dev", "to-in1")
	Eventually(t, 5*time.Second, "the new host address in the namespace's local set", func() error {
		if out := r.Must(r.NS, "ipset", "list", "extranet-local"); !strings.Contains(out, "\n"+added+"\n") {
			return errors.New("not yet")
		}
		return nil
	})
	r.noneReached(t, "after the host gained "+added, []probe{
		{r.PA, "tcp", hostPort(added, 2222), false},
		{r.PA, "icmp", added, false},
	})
	r.Must(r.GW, "ip", "addr", "del", added+"/24", "dev", "to-in1")
	Eventually(t, 5*time.Second, "the address gone from the local set", func() error {
		if out := r.Must(r.NS, "ipset", "list", "extranet-local"); strings.Contains(out, "\n"+added+"\n") {
			return errors.New("still there")
		}
		return nil
	})
}

// nsInode is the inode of a namespace file, which names the namespace.
func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
