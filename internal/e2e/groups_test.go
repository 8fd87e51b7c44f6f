package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestGroups: two stock wg-quick partners of one organisation, in two
// access groups, each reach exactly their group's grants; and every kind of
// withdrawal (a group ungrant, a peer move, the organisation's ceiling
// narrowed under a group, a group deleted) kills the open connection it
// withdrew within a second.
func TestGroups(t *testing.T) {
	r := standardRig(t)
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24", "--grant", "10.10.2.2/32:tcp")

	_, errOut, code := r.CTL("group", "create", "acme/support", "--grant", "10.10.3.0/24")
	if code != 2 || !strings.Contains(errOut, "outside what organisation \"acme\" may reach") {
		t.Fatalf("a group grant outside the ceiling: exit %d, %s", code, errOut)
	}
	r.MustCTL("group", "create", "acme/support", "--grant", "10.10.1.2/32:tcp/22", "--grant", "10.10.2.2/32:tcp/22")
	r.MustCTL("group", "create", "acme/sales", "--grant", "10.10.2.2/32:tcp/443", "--grant", "10.10.1.2/32:udp/5005")

	samCfg := r.Issue("acme/sam", "--group", "support")
	salCfg := r.Issue("acme/sal", "--group", "sales")
	allowed := regexp.MustCompile(`(?m)^AllowedIPs = (.*)$`)
	for cfg, want := range map[string]string{samCfg: "10.10.1.2/32, 10.10.2.2/32", salCfg: "10.10.1.2/32, 10.10.2.2/32"} {
		if m := allowed.FindStringSubmatch(cfg); m == nil || m[1] != want {
			t.Errorf("config AllowedIPs %v, want %q:\n%s", m, want, cfg)
		}
	}
	r.PartnerUp(r.PA, "pa"+r.id, samCfg)
	r.PartnerUp(r.PB, "pb"+r.id, salCfg)
	if out := r.MustCTL("peer", "list", "--org", "acme"); !regexp.MustCompile(`acme/sal\s+sales`).MatchString(out) || !regexp.MustCompile(`acme/sam\s+support`).MatchString(out) {
		t.Errorf("peer list does not show the groups:\n%s", out)
	}

	support := []probe{
		{r.PA, "tcp", hostPort(in1Addr, 22), true},
		{r.PA, "tcp", hostPort(in2Addr, 22), true},
		{r.PA, "tcp", hostPort(in1Addr, 8080), false},
		{r.PA, "tcp", hostPort(in2Addr, 443), false},
		{r.PA, "udp", hostPort(in1Addr, 5005), false},
		{r.PA, "icmp", in1Addr, false},
	}
	sales := []probe{
		{r.PB, "tcp", hostPort(in2Addr, 443), true},
		{r.PB, "udp", hostPort(in1Addr, 5005), true},
		{r.PB, "tcp", hostPort(in1Addr, 22), false},
		{r.PB, "tcp", hostPort(in2Addr, 22), false},
		{r.PB, "tcp", hostPort(in1Addr, 8080), false},
		{r.PB, "udp", hostPort(in1Addr, 6000), false},
	}
	t.Run("each group reaches its own grants", func(t *testing.T) {
		r.checkMatrix(t, append(append([]probe(nil), support...), sales...))
	})

	// cut asserts that an open connection dies within a second of the
	// withdrawal that change makes.
	cut := func(t *testing.T, ns, addr string, change ...string) {
		t.Helper()
		c := openFlow(t, ns, addr)
		r.MustCTL(change...)
		if got, err := c.Echo("after", time.Second); err == nil {
			t.Fatalf("the connection to %s survived %v: %q", addr, change, got)
		}
		if r.try(probe{ns, "tcp", addr, false}) {
			t.Fatalf("a new connection to %s is allowed after %v", addr, change)
		}
	}

	t.Run("a group ungrant kills an open connection", func(t *testing.T) {
		cut(t, r.PA, hostPort(in1Addr, 22), "group", "ungrant", "acme/support", "10.10.1.2/32:tcp/22")
		reaches(t, r.PA, hostPort(in2Addr, 22), "in2")
		r.MustCTL("group", "grant", "acme/support", "10.10.1.2/32:tcp/22")
		reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	})

	t.Run("a move kills what the new group does not allow", func(t *testing.T) {
		cut(t, r.PB, hostPort(in2Addr, 443), "peer", "move", "acme/sal", "--group", "support")
		// Same keys, same address: the partner's tunnel is up as it was.
		reaches(t, r.PB, hostPort(in2Addr, 22), "in2")
		kept := openFlow(t, r.PB, hostPort(in2Addr, 22))
		r.MustCTL("peer", "move", "acme/sal", "--group", "sales")
		if _, err := kept.Echo("after", time.Second); err == nil {
			t.Fatal("a connection sales does not allow survived the move back")
		}
		r.checkMatrix(t, sales)
	})

	t.Run("a narrowed ceiling narrows the groups under it", func(t *testing.T) {
		cut(t, r.PB, hostPort(in2Addr, 443), "org", "ungrant", "acme", "10.10.2.2/32:tcp")
		out := r.MustCTL("group", "show", "acme/sales")
		if !strings.Contains(out, "10.10.1.2/32:udp/5005") || strings.Contains(out, "10.10.2.2/32:tcp/443") {
			t.Errorf("sales after its ceiling narrowed:\n%s", out)
		}
		r.checkMatrix(t, []probe{
			{r.PB, "udp", hostPort(in1Addr, 5005), true},
			{r.PA, "tcp", hostPort(in1Addr, 22), true},
			{r.PA, "tcp", hostPort(in2Addr, 22), false},
		})
	})

	t.Run("a group delete moves its peers and kills what they lost", func(t *testing.T) {
		_, errOut, code := r.CTL("group", "delete", "acme/support", "--yes")
		if code != 4 || !strings.Contains(errOut, "--move-to") {
			t.Fatalf("deleting a group with peers: exit %d, %s", code, errOut)
		}
		cut(t, r.PA, hostPort(in1Addr, 22), "group", "delete", "acme/support", "--move-to", "sales", "--yes")
		if p := r.peerJSON("acme/sam"); p.Group != "sales" {
			t.Errorf("sam is in %q after support was deleted", p.Group)
		}
		r.checkMatrix(t, []probe{{r.PA, "udp", hostPort(in1Addr, 5005), true}})
	})

	t.Run("every change is in the audit log", func(t *testing.T) {
		out := r.MustCTL("audit", "--org", "acme")
		for _, action := range []string{"group.create", "group.grant", "group.ungrant", "group.delete", "peer.move", "org.ungrant"} {
			if !strings.Contains(out, action) {
				t.Errorf("audit lacks %s:\n%s", action, out)
			}
		}
	})
}
