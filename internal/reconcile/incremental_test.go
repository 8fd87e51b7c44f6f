package reconcile

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/policy"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// change commits fn and hands what it changed to the reconciler the way a
// request does, through Apply, then runs the reconcile a request waits for.
func (e *env) change(fn func(tx *store.Tx) error) store.Changes {
	e.t.Helper()
	ch, err := e.db.Change(fn)
	if err != nil {
		e.t.Fatal(err)
	}
	done := e.r.Apply(ch)
	w, work := e.r.takePending()
	e.r.release(w, e.r.applyPending(context.Background(), work))
	if err := <-done; err != nil {
		e.t.Fatal(err)
	}
	return ch
}

// run commits fn and reconciles it once, the partial way (the changed
// peers alone) or the full way, and returns the run's error, recorded as
// the run a request waits for records it.
func (e *env) run(partial bool, fn func(tx *store.Tx) error) error {
	e.t.Helper()
	if !partial {
		e.put(fn)
		return e.r.Once(context.Background(), false)
	}
	ch, err := e.db.Change(fn)
	if err != nil {
		e.t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, id := range ch.Peers {
		ids[id] = true
	}
	_, err = e.r.applyPeers(ids)
	e.r.observe(func() (int, error) { return 0, err })
	return err
}

// fullState is what a fresh reconciler makes of the store: the peers on the
// device and the addresses the policy allows.
func (e *env) fullState() string {
	e.t.Helper()
	fresh := newEnv(e.t)
	fresh.db, fresh.r.o.DB = e.db, e.db
	fresh.r.o.Clock = e.clk
	fresh.once(false)
	return fresh.os.String() + allowed(fresh.r.cur.set) + allowed(fresh.os.set)
}

func allowed(ps map[netip.Addr]policy.Peer) string {
	var out []string
	for a, p := range ps {
		out = append(out, fmt.Sprintf("%s in %d key %s until %s", a, p.Group, p.Holder(), p.Ends.Format(time.RFC3339)))
	}
	sort.Strings(out)
	return "allowed " + strings.Join(out, ",") + "\n"
}

func TestChangedPeersOnlyMatchAFullRun(t *testing.T) {
	e := newEnv(t)
	g, _ := grant.Parse("10.20.0.0/24")
	blocks := []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24"), netip.MustParsePrefix("100.64.2.0/24")}
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: blocks[:1], Grants: []grant.Grant{g}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}, {ID: 11, Name: "support"}}})
		return tx.PutOrg(&store.Org{ID: 2, Name: "beta", State: api.StateActive, Blocks: blocks[1:], Grants: []grant.Grant{g}, Groups: []store.Group{{ID: 2, Name: store.DefaultGroup}, {ID: 12, Name: "support"}}})
	})
	e.once(false)
	psk := key(t)
	rng := rand.New(rand.NewPCG(1, 2))
	free := map[string][]netip.Addr{}
	for i, o := range []string{"acme", "beta"} {
		for h := 1; h <= 6; h++ {
			free[o] = append(free[o], netip.AddrFrom4([4]byte{100, 64, byte(i + 1), byte(h)}))
		}
	}
	names := 0
	for step := 0; step < 300; step++ {
		org := []string{"acme", "beta"}[rng.IntN(2)]
		var desc string
		e.change(func(tx *store.Tx) error {
			var peers []*store.Peer
			tx.Peers(org, func(p *store.Peer) error {
				if p.State != api.StateRevoked {
					peers = append(peers, p)
				}
				return nil
			})
			op := rng.IntN(8)
			if len(peers) == 0 || (op == 0 && len(free[org]) > 0) {
				if len(free[org]) == 0 {
					desc = "nothing"
					return nil
				}
				names++
				// Lowest free address first, as the allocator does, so
				// addresses change hands often.
				sort.Slice(free[org], func(i, j int) bool { return free[org][i].Less(free[org][j]) })
				a := free[org][0]
				free[org] = free[org][1:]
				desc = fmt.Sprintf("issue %s/p%d at %s", org, names, a)
				return tx.PutPeer(&store.Peer{Org: org, Name: fmt.Sprint("p", names), PublicKey: key(t), PresharedKey: psk, Address: a, State: api.StateActive, Group: store.DefaultGroup})
			}
			p := peers[rng.IntN(len(peers))]
			switch op {
			case 1:
				p.State = api.StateSuspended
			case 2:
				p.State = api.StateActive
			case 3:
				p.State = api.StateRevoked
				free[org] = append(free[org], p.Address)
			case 4:
				p.PublicKey = key(t)
			case 5:
				past := e.clk.t.Add(-time.Hour)
				p.Expires = &past
			case 6, 7:
				// A move: same key and address, another group.
				if p.Group == store.DefaultGroup {
					p.Group = "support"
				} else {
					p.Group = store.DefaultGroup
				}
			default:
				p.State = api.StateRevoked
				free[org] = append(free[org], p.Address)
			}
			desc = fmt.Sprintf("op %d on %s", op, p.ID())
			return tx.PutPeer(p)
		})
		got := e.os.String() + allowed(e.r.cur.set) + allowed(e.os.set)
		if want := e.fullState(); got != want {
			t.Fatalf("step %d (%s): after applying the change alone:\n%s\na full reconcile gives:\n%s", step, desc, got, want)
		}
	}
	// Every step must have gone the partial way, or this compared a full
	// run with itself.
	if e.os.syncs != 1 {
		t.Errorf("%d full syncs over the walk, want only the first", e.os.syncs)
	}
}

// An address given up by one peer and taken by another can reach the
// reconciler in either order; the new holder must keep it.
func TestAddressChangesHandsInEitherOrder(t *testing.T) {
	for _, revokeFirst := range []bool{true, false} {
		e := newEnv(t)
		a := netip.MustParseAddr("100.64.1.1")
		e.put(func(tx *store.Tx) error {
			tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
			return tx.PutPeer(&store.Peer{Org: "acme", Name: "old", PublicKey: key(t), PresharedKey: key(t), Address: a, State: api.StateActive, Group: store.DefaultGroup})
		})
		e.once(false)
		sweeps := len(e.os.sweeps)
		revoke := func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "old")
			p.State = api.StateRevoked
			return tx.PutPeer(p)
		}
		issue := func(tx *store.Tx) error {
			return tx.PutPeer(&store.Peer{Org: "acme", Name: "new", PublicKey: key(t), PresharedKey: key(t), Address: a, State: api.StateActive, Group: store.DefaultGroup})
		}
		// Both commit before the reconciler hears of either.
		var first, second store.Changes
		if revokeFirst {
			first, _ = e.db.Change(revoke)
			second, _ = e.db.Change(issue)
		} else {
			first, _ = e.db.Change(issue)
			second, _ = e.db.Change(revoke)
		}
		for _, ch := range []store.Changes{second, first} {
			if _, err := e.r.applyPeers(map[string]bool{ch.Peers[0]: true}); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := e.os.String()+allowed(e.r.cur.set)+allowed(e.os.set), e.fullState(); got != want {
			t.Errorf("revoke first=%v:\n%s\nwant:\n%s", revokeFirst, got, want)
		}
		if len(e.os.sweeps) == sweeps {
			t.Errorf("revoke first=%v: the old peer's flows were not swept", revokeFirst)
		}
	}
}

func TestRunAppliesPeerChangesWithoutAFullRead(t *testing.T) {
	e := newEnv(t)
	e.put(func(tx *store.Tx) error {
		return tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	go e.r.Run(ctx, nil)
	ch, err := e.db.Change(func(tx *store.Tx) error {
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "a", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup})
	})
	if err != nil || len(ch.Peers) != 1 || ch.Orgs {
		t.Fatalf("changes = %+v, %v; want one peer and no orgs", ch, err)
	}
	select {
	case <-e.r.Apply(ch):
	case <-time.After(5 * time.Second):
		t.Fatal("Apply did not complete")
	}
	// The fake is shared with the Run goroutine, which is idle now.
	if len(e.os.peers) != 1 {
		t.Errorf("device holds %d peers after the change, want 1", len(e.os.peers))
	}
	if e.os.applies != 1 || e.os.syncs != 1 || e.os.updates != 1 {
		t.Errorf("after Start and one peer change: %d firewall applies, %d full syncs, %d partial updates; want 1, 1, 1",
			e.os.applies, e.os.syncs, e.os.updates)
	}
}

type brokenFirewall struct{ *fakeOS }

func (brokenFirewall) Apply(*policy.Policy) error {
	return errors.New("iptables-restore: exit status 4")
}

func TestStartLoadsEverythingAndFailsOnlyOnTheFirewall(t *testing.T) {
	e := newEnv(t)
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "a", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup})
	})
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	e.expect("org 1 acme blocks=[100.64.1.0/24] grants=[]\npeers 100.64.1.1\npeer set 100.64.1.1\n")
	if len(e.os.sweeps) != 1 {
		t.Errorf("Start swept %d times, want once: flows from before it may have lost their access", len(e.os.sweeps))
	}

	broken := newEnv(t)
	broken.r.o.Firewall = brokenFirewall{broken.os}
	if err := broken.r.Start(); err == nil || !strings.Contains(err.Error(), "apply firewall") {
		t.Errorf("Start with a failing firewall: %v, want the firewall's error", err)
	}
}

// TestFailedDeviceStillKillsFlows: when WireGuard refuses a change, the
// flows of a revoked peer die anyway, the error is reported, and the next
// run re-reads everything.
func TestFailedDeviceStillKillsFlows(t *testing.T) {
	for _, partial := range []bool{true, false} {
		e := newEnv(t)
		e.put(func(tx *store.Tx) error {
			tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
			tx.PutPeer(&store.Peer{Org: "acme", Name: "a", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup})
			return tx.PutPeer(&store.Peer{Org: "acme", Name: "b", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.2"), State: api.StateActive, Group: store.DefaultGroup})
		})
		e.once(false)
		ch, _ := e.db.Change(func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "a")
			p.State = api.StateRevoked
			return tx.PutPeer(p)
		})
		e.os.wgErr = errors.New("wireguard says no")
		sweeps := len(e.os.sweeps)
		var err error
		if partial {
			_, err = e.r.applyPeers(map[string]bool{ch.Peers[0]: true})
		} else {
			err = e.r.Once(context.Background(), false)
		}
		if err == nil || !strings.Contains(err.Error(), "wireguard says no") {
			t.Errorf("partial=%v: error %v, want WireGuard's", partial, err)
		}
		if len(e.os.sweeps) == sweeps || e.os.sweeps[len(e.os.sweeps)-1] != "100.64.1.2" {
			t.Errorf("partial=%v: the revoked peer's flows were not killed: sweeps %v", partial, e.os.sweeps[sweeps:])
		}
		if _, in := e.os.set[netip.MustParseAddr("100.64.1.1")]; in {
			t.Errorf("partial=%v: the revoked peer is still in the firewall's peer set, which WireGuard's refusal left as the only line", partial)
		}
		if partial {
			e.r.observe(func() (int, error) { return 0, err })
		}
		if !e.r.fullNeeded(pending{}) {
			t.Errorf("partial=%v: after a failure the next run is not a full one", partial)
		}
		e.os.wgErr = nil
		e.once(false)
		e.expect("org 1 acme blocks=[100.64.1.0/24] grants=[]\npeers 100.64.1.2\npeer set 100.64.1.2\n")
		if e.r.fullNeeded(pending{}) {
			t.Errorf("partial=%v: a successful full run left the state uncertain", partial)
		}
	}
}

// TestPeerSetFailureDoesNotHoldUpWireGuard: when the firewall's peer set
// cannot be written, a revoked peer still leaves WireGuard and its flows
// die; the run fails, and the next full run refills the set.
func TestPeerSetFailureDoesNotHoldUpWireGuard(t *testing.T) {
	for _, partial := range []bool{true, false} {
		e := newEnv(t)
		e.put(func(tx *store.Tx) error {
			tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
			tx.PutPeer(&store.Peer{Org: "acme", Name: "a", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup})
			return tx.PutPeer(&store.Peer{Org: "acme", Name: "b", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.2"), State: api.StateActive, Group: store.DefaultGroup})
		})
		e.once(false)
		ch, _ := e.db.Change(func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "a")
			p.State = api.StateRevoked
			return tx.PutPeer(p)
		})
		e.os.setErr = errors.New("ipset v7.17: Kernel error received")
		sweeps := len(e.os.sweeps)
		var err error
		if partial {
			_, err = e.r.applyPeers(map[string]bool{ch.Peers[0]: true})
			e.r.observe(func() (int, error) { return 0, err })
		} else {
			err = e.r.Once(context.Background(), false)
		}
		if err == nil || !strings.Contains(err.Error(), "peer set") || !strings.Contains(err.Error(), "Kernel error") {
			t.Errorf("partial=%v: error %v, want the peer set's", partial, err)
		}
		if got := e.os.String(); !strings.Contains(got, "peers 100.64.1.2\n") {
			t.Errorf("partial=%v: the revoked peer is still in WireGuard:\n%s", partial, got)
		}
		if len(e.os.sweeps) == sweeps || e.os.sweeps[len(e.os.sweeps)-1] != "100.64.1.2" {
			t.Errorf("partial=%v: the revoked peer's flows were not killed: sweeps %v", partial, e.os.sweeps[sweeps:])
		}
		if !e.r.fullNeeded(pending{}) {
			t.Errorf("partial=%v: after a failure the next run is not a full one", partial)
		}
		e.os.setErr = nil
		e.once(false)
		e.expect("org 1 acme blocks=[100.64.1.0/24] grants=[]\npeers 100.64.1.2\npeer set 100.64.1.2\n")
	}
}

// TestFailedFirewallStillWithdraws: when the rules cannot be loaded (the
// kernel may then hold the old ones), a run still withdraws through
// WireGuard and conntrack what the new state takes away: a revoked peer
// leaves, the peers of an organisation whose grants narrowed leave until
// the rules are in, nothing is added, and flows die. The next run that
// can load the rules restores the rest.
func TestFailedFirewallStillWithdraws(t *testing.T) {
	e := newEnv(t)
	wide, _ := grant.Parse("10.0.0.0/8")
	narrow, _ := grant.Parse("10.20.0.0/16")
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Grants: []grant.Grant{wide}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
		tx.PutOrg(&store.Org{ID: 2, Name: "globex", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.2.0/24")}, Grants: []grant.Grant{wide}, Groups: []store.Group{{ID: 2, Name: store.DefaultGroup}}})
		tx.PutPeer(&store.Peer{Org: "acme", Name: "a", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup})
		tx.PutPeer(&store.Peer{Org: "acme", Name: "b", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.2"), State: api.StateActive, Group: store.DefaultGroup})
		return tx.PutPeer(&store.Peer{Org: "globex", Name: "g", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.2.1"), State: api.StateActive, Group: store.DefaultGroup})
	})
	e.once(false)
	e.put(func(tx *store.Tx) error {
		p, _ := tx.Peer("acme", "a")
		p.State = api.StateRevoked
		tx.PutPeer(p)
		tx.PutPeer(&store.Peer{Org: "acme", Name: "new", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.3"), State: api.StateActive, Group: store.DefaultGroup})
		o, _ := tx.Org("globex")
		o.Grants = []grant.Grant{narrow}
		return tx.PutOrg(o)
	})
	e.os.applyErr = errors.New("ipset v7.17: Set cannot be destroyed: it is in use by a kernel component")
	sweeps := len(e.os.sweeps)
	err := e.r.Once(context.Background(), false)
	if err == nil || !strings.Contains(err.Error(), "in use by a kernel component") {
		t.Errorf("error %v, want the firewall's", err)
	}
	e.expect("org 1 acme blocks=[100.64.1.0/24] grants=[10.0.0.0/8]\norg 2 globex blocks=[100.64.2.0/24] grants=[10.0.0.0/8]\npeers 100.64.1.2\npeer set 100.64.1.2\n")
	if len(e.os.sweeps) == sweeps || e.os.sweeps[len(e.os.sweeps)-1] != "100.64.1.2" {
		t.Errorf("flows of the withdrawn peers were not killed: sweeps %v", e.os.sweeps[sweeps:])
	}
	if !e.r.fullNeeded(pending{}) {
		t.Error("after a failed firewall the next run is not a full one")
	}
	e.os.applyErr = nil
	e.once(false)
	e.expect("org 1 acme blocks=[100.64.1.0/24] grants=[10.0.0.0/8]\norg 2 globex blocks=[100.64.2.0/24] grants=[10.20.0.0/16]\npeers 100.64.1.2,100.64.1.3,100.64.2.1\npeer set 100.64.1.2,100.64.1.3,100.64.2.1\n")
}

// TestMoveSweepsWithTheNewGroup: a peer that moves keeps its key and
// address, so no flow of it is killed outright; the sweep keeps those its
// new group allows, by the new group. Whichever way the move is applied.
func TestMoveSweepsWithTheNewGroup(t *testing.T) {
	a := netip.MustParseAddr("100.64.1.1")
	for _, partial := range []bool{true, false} {
		e := newEnv(t)
		wide, _ := grant.Parse("10.20.0.0/24")
		ssh, _ := grant.Parse("10.20.0.10/32:tcp/22")
		e.put(func(tx *store.Tx) error {
			tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")},
				Grants: []grant.Grant{wide}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}, {ID: 7, Name: "support", Grants: []grant.Grant{ssh}}}})
			return tx.PutPeer(&store.Peer{Org: "acme", Name: "bob", PublicKey: key(t), PresharedKey: key(t), Address: a, State: api.StateActive, Group: store.DefaultGroup})
		})
		e.once(false)
		sweeps, updates := len(e.os.sweeps), e.os.updates
		move := func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "bob")
			p.Group = "support"
			return tx.PutPeer(p)
		}
		if partial {
			e.change(move)
			if e.os.updates == updates {
				t.Errorf("partial: the move did not go the partial way")
			}
		} else {
			e.put(move)
			e.once(false)
		}
		if len(e.os.sweeps) != sweeps+1 {
			t.Fatalf("partial=%v: a move swept %d times, want once", partial, len(e.os.sweeps)-sweeps)
		}
		if g := e.os.swept.Peers[a].Group; g != 7 {
			t.Errorf("partial=%v: the sweep saw the moved peer in group %d, want 7 (killed outright: %v)", partial, g, e.os.sweeps[sweeps] == "")
		}
		if g := e.os.set[a].Group; g != 7 {
			t.Errorf("partial=%v: the firewall's sets hold the moved peer in group %d, want 7", partial, g)
		}
	}
}

// TestGroupNarrowedSweeps: a grant a group lost, or a group gone, is
// withdrawn access like an organisation's grant, and its flows are swept.
func TestGroupNarrowedSweeps(t *testing.T) {
	e := newEnv(t)
	wide, _ := grant.Parse("10.20.0.0/24")
	ssh, _ := grant.Parse("10.20.0.10/32:tcp/22")
	web, _ := grant.Parse("10.20.0.20/32:tcp/443")
	e.put(func(tx *store.Tx) error {
		return tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")},
			Grants: []grant.Grant{wide}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}, {ID: 7, Name: "support", Grants: []grant.Grant{ssh, web}}}})
	})
	e.once(false)
	for _, step := range []struct {
		what  string
		fn    func(o *store.Org)
		sweep bool
	}{
		{"a grant added", func(o *store.Org) { o.Groups[1].Grants = []grant.Grant{ssh, web, wide} }, false},
		{"a group's grant removed", func(o *store.Org) { o.Groups[1].Grants = []grant.Grant{ssh, wide} }, true},
		{"a group added", func(o *store.Org) { o.Groups = append(o.Groups, store.Group{ID: 8, Name: "sales"}) }, false},
		{"a group removed", func(o *store.Org) { o.Groups = o.Groups[:2] }, true},
	} {
		sweeps := len(e.os.sweeps)
		e.put(func(tx *store.Tx) error {
			o, _ := tx.Org("acme")
			step.fn(o)
			return tx.PutOrg(o)
		})
		e.once(false)
		if swept := len(e.os.sweeps) > sweeps; swept != step.sweep {
			t.Errorf("%s: swept %v, want %v", step.what, swept, step.sweep)
		}
	}
}

// TestMoveWithFailedSetsStaysOff: only the member sets keep a moved peer to
// its new group (WireGuard keeps it: same key, same address). When they
// cannot be written, its address may still be in its old group's set, so
// the peer stays off the device, its flows dead, until a run writes them.
func TestMoveWithFailedSetsStaysOff(t *testing.T) {
	a := netip.MustParseAddr("100.64.1.1")
	for _, partial := range []bool{true, false} {
		e := newEnv(t)
		wide, _ := grant.Parse("10.20.0.0/24")
		ssh, _ := grant.Parse("10.20.0.10/32:tcp/22")
		e.put(func(tx *store.Tx) error {
			tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")},
				Grants: []grant.Grant{wide}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}, {ID: 7, Name: "support", Grants: []grant.Grant{ssh}}}})
			tx.PutPeer(&store.Peer{Org: "acme", Name: "ann", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.2"), State: api.StateActive, Group: store.DefaultGroup})
			return tx.PutPeer(&store.Peer{Org: "acme", Name: "bob", PublicKey: key(t), PresharedKey: key(t), Address: a, State: api.StateActive, Group: store.DefaultGroup})
		})
		e.once(false)
		move := func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "bob")
			p.Group = "support"
			return tx.PutPeer(p)
		}
		e.os.setErr = errors.New("ipset: timeout")
		sweeps := len(e.os.sweeps)
		if partial {
			ch, err := e.db.Change(move)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.r.applyPeers(map[string]bool{ch.Peers[0]: true}); err == nil {
				t.Fatal("partial: a failed set update was not reported")
			}
		} else {
			e.put(move)
			if err := e.r.Once(context.Background(), false); err == nil {
				t.Fatal("full: a failed set update was not reported")
			}
		}
		if got := e.os.String(); !strings.Contains(got, "peers 100.64.1.2\n") {
			t.Errorf("partial=%v: the moved peer is on the device while the sets are unknown:\n%s", partial, got)
		}
		if len(e.os.sweeps) == sweeps || e.os.sweeps[len(e.os.sweeps)-1] != "100.64.1.2" {
			t.Errorf("partial=%v: the moved peer's flows were not killed: %v", partial, e.os.sweeps[sweeps:])
		}
		// Once the sets can be written, it is back, in its new group.
		e.os.setErr = nil
		if err := e.r.Once(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		if got := e.os.String(); !strings.Contains(got, "peers 100.64.1.1,100.64.1.2\n") || e.os.set[a].Group != 7 {
			t.Errorf("partial=%v: after the sets were written: group %d\n%s", partial, e.os.set[a].Group, got)
		}
	}
}

// TestStaleGroupNamesAskForAFullRun: a peer change can reach the reconciler
// before the change of its organisation's groups it was made after (a
// group deleted and made again under its name). The partial run must not
// put the peer in the old group's set; it touches nothing and a full run
// applies both changes.
func TestStaleGroupNamesAskForAFullRun(t *testing.T) {
	e := newEnv(t)
	wide, _ := grant.Parse("10.20.0.0/24")
	ssh, _ := grant.Parse("10.20.0.10/32:tcp/22")
	e.put(func(tx *store.Tx) error {
		return tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")},
			Grants: []grant.Grant{wide}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}, {ID: 5, Name: "eng", Grants: []grant.Grant{wide}}}})
	})
	e.once(false)
	x := netip.MustParseAddr("100.64.1.7")
	ch, err := e.db.Change(func(tx *store.Tx) error {
		o, _ := tx.Org("acme")
		o.Groups = []store.Group{{ID: 1, Name: store.DefaultGroup}, {ID: 9, Name: "eng", Grants: []grant.Grant{ssh}}}
		tx.PutOrg(o)
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "x", PublicKey: key(t), PresharedKey: key(t), Address: x, State: api.StateActive, Group: "eng"})
	})
	if err != nil {
		t.Fatal(err)
	}
	updates := e.os.updates
	stale, err := e.r.applyPeers(map[string]bool{ch.Peers[0]: true})
	if err != nil || !stale || e.os.updates != updates {
		t.Fatalf("a peer of a group that changed since the last full run: stale %v, err %v, %d device updates", stale, err, e.os.updates-updates)
	}
	if _, in := e.os.set[x]; in {
		t.Fatalf("the peer went into group %d's set", e.os.set[x].Group)
	}
	// Through Apply, as a request does: the peers-only change ends in a
	// full run, which puts x in the new eng.
	done := e.r.Apply(store.Changes{Peers: ch.Peers})
	w, work := e.r.takePending()
	e.r.release(w, e.r.applyPending(context.Background(), work))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g := e.os.set[x].Group; g != 9 {
		t.Errorf("after the full run x is in group %d, want 9", g)
	}
}

// TestFailedSweepIsRetried: a peer given a new key keeps its address, so
// only the sweep's kill of that address ends the flows the old key opened.
// When that sweep fails, the next run kills them still, though by then the
// new key is in force and the address allowed.
func TestFailedSweepIsRetried(t *testing.T) {
	a := netip.MustParseAddr("100.64.1.1")
	for _, partial := range []bool{true, false} {
		e := newEnv(t)
		e.put(func(tx *store.Tx) error {
			tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
			return tx.PutPeer(&store.Peer{Org: "acme", Name: "a", PublicKey: key(t), PresharedKey: key(t), Address: a, State: api.StateActive, Group: store.DefaultGroup})
		})
		e.once(false)
		rekey := func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "a")
			p.PublicKey = key(t)
			return tx.PutPeer(p)
		}
		e.os.sweepErr = errors.New("conntrack: no buffer space available")
		if err := e.run(partial, rekey); err == nil || !strings.Contains(err.Error(), "no buffer space") {
			t.Fatalf("partial=%v: error %v, want the sweep's", partial, err)
		}
		e.os.sweepErr = nil
		e.once(false)
		if _, spared := e.os.swept.Peers[a]; spared {
			t.Errorf("partial=%v: the run after the failed sweep spared %s, whose flows the old key opened", partial, a)
		}
		// Once killed, the address's flows are the new key's: spared.
		e.os.swept = nil
		e.once(true)
		if e.os.swept != nil {
			if _, spared := e.os.swept.Peers[a]; !spared {
				t.Errorf("partial=%v: the address is killed again after a sweep succeeded", partial)
			}
		}
	}
}
