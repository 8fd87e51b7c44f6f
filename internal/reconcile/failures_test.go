package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/wgdev"
	"github.com/extranetgw/extranet/pkg/api"
)

// markedForAnother lists the device's peers whose address the peer set
// marks with a group other than the peer's own: only that mark keeps a
// peer to its group.
func markedForAnother(e *env, own map[wgtypes.Key]uint32) []string {
	var out []string
	for k, p := range e.os.peers {
		if m, ok := e.os.set[p.Address]; ok && m.Group != own[k] {
			out = append(out, p.Address.String())
		}
	}
	return out
}

// twoGroups stores acme, whose default group reaches def and whose group
// named other (ID 7) reaches second, with one peer in the default group at
// a, puts them in force, and returns the peer's public key.
func (e *env) twoGroups(def, other, second, peer string, a netip.Addr) string {
	e.t.Helper()
	d, err := grant.Parse(def)
	if err != nil {
		e.t.Fatal(err)
	}
	o, err := grant.Parse(second)
	if err != nil {
		e.t.Fatal(err)
	}
	pub := key(e.t)
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")},
			Grants: []grant.Grant{d}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}, {ID: 7, Name: other, Grants: []grant.Grant{o}}}})
		return tx.PutPeer(&store.Peer{Org: "acme", Name: peer, PublicKey: pub, PresharedKey: key(e.t), Address: a, State: api.StateActive, Group: store.DefaultGroup})
	})
	e.once(false)
	return pub
}

// TestSecondPeerSetFailureKeepsMovedPeerOff: a move whose peer set
// write fails holds the peer back; the record of the set then says the new
// group, so when the next run's write fails too the peer goes back on the
// device while the kernel may still mark it with the old group.
func TestSecondPeerSetFailureKeepsMovedPeerOff(t *testing.T) {
	a := netip.MustParseAddr("100.64.1.1")
	for _, partial := range []bool{true, false} {
		e := newEnv(t)
		bob := e.twoGroups("10.20.0.0/24", "support", "10.20.0.10/32:tcp/22", "bob", a)
		move := func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "bob")
			p.Group = "support"
			return tx.PutPeer(p)
		}
		e.os.setErr = errors.New("ipset: timeout")
		e.run(partial, move)
		if len(e.os.peers) != 0 {
			t.Fatalf("partial=%v: the moved peer is on the device after the first failure", partial)
		}
		if err := e.r.Once(context.Background(), false); err == nil {
			t.Fatalf("partial=%v: the second failed write was not reported", partial)
		}
		pk, _ := wgtypes.ParseKey(bob)
		if bad := markedForAnother(e, map[wgtypes.Key]uint32{pk: 7}); len(bad) > 0 {
			t.Errorf("partial=%v: after a second failed peer set write, %v is on the device with group %d's mark, want it held back",
				partial, bad, e.os.set[a].Group)
		}
	}
}

// TestWithdrawingRunReloadsRules: a load of the rules that failed
// may have left some of the new ones (the sets load first), so the next run
// must load its rules even when they are those of the last good load.
func TestWithdrawingRunReloadsRules(t *testing.T) {
	e := newEnv(t)
	narrow, _ := grant.Parse("10.20.0.0/24")
	wide, _ := grant.Parse("10.0.0.0/8")
	setGrants := func(g grant.Grant) {
		e.put(func(tx *store.Tx) error {
			return tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")},
				Grants: []grant.Grant{g}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
		})
	}
	setGrants(narrow)
	e.once(false)
	setGrants(wide)
	e.os.applyErr = errors.New("iptables-restore: exit status 4")
	if err := e.r.Once(context.Background(), false); err == nil {
		t.Fatal("the failed load was not reported")
	}
	e.os.applyErr = nil
	setGrants(narrow)
	applies := e.os.applies
	e.once(false)
	if e.os.applies == applies {
		t.Error("after a failed load, a run back to the last good rules did not load them: what the failed load left stays until a periodic check")
	}
}

// TestWithdrawBeforeAnyRules: a full run whose rules fail before any
// load succeeded leaves no rules on record; the next run must not use them.
func TestWithdrawBeforeAnyRules(t *testing.T) {
	e := newEnv(t)
	e.put(func(tx *store.Tx) error {
		return tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
	})
	e.os.applyErr = errors.New("iptables-restore: exit status 4")
	e.r.Once(context.Background(), false)
	e.os.applyErr = nil
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("the run after a failed first load panicked: %v", p)
		}
	}()
	e.once(false)
}

// TestHandOverWithFailedDevice: an address handed from a peer in one
// group to a peer in another while WireGuard refuses the change. The set
// already marks the address with the new holder's group, and the old
// holder, which the device may still hold, would use that mark.
func TestHandOverWithFailedDevice(t *testing.T) {
	a := netip.MustParseAddr("100.64.1.1")
	for _, partial := range []bool{true, false} {
		e := newEnv(t)
		oldKey := e.twoGroups("10.20.0.10/32:tcp/22", "eng", "10.20.0.0/24", "old", a)
		handOver := func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "old")
			p.State = api.StateRevoked
			tx.PutPeer(p)
			return tx.PutPeer(&store.Peer{Org: "acme", Name: "new", PublicKey: key(t), PresharedKey: key(t), Address: a, State: api.StateActive, Group: "eng"})
		}
		e.os.wgErr = errors.New("wireguard says no")
		e.run(partial, handOver)
		pk, _ := wgtypes.ParseKey(oldKey)
		if bad := markedForAnother(e, map[wgtypes.Key]uint32{pk: 1}); len(bad) > 0 {
			t.Errorf("partial=%v: the revoked holder of %v, still on the device, is marked with group %d", partial, bad, e.os.set[a].Group)
		}
	}
}

// countingDevice counts reads of the device's statistics.
type countingDevice struct {
	Device
	stats int
}

func (d *countingDevice) Stats() ([]wgdev.PeerStats, error) {
	d.stats++
	return d.Device.Stats()
}

// TestPartialRevokeStaysCheap pins what a revoke costs on the
// partial path: one device update, no full sync, no statistics read, one
// sweep.
func TestPartialRevokeStaysCheap(t *testing.T) {
	e := newEnv(t)
	dev := &countingDevice{Device: e.os}
	e.r.o.Device = dev
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
		tx.PutPeer(&store.Peer{Org: "acme", Name: "a", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup})
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "b", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.2"), State: api.StateActive, Group: store.DefaultGroup})
	})
	e.once(false)
	syncs, updates, sweeps, applies := e.os.syncs, e.os.updates, len(e.os.sweeps), e.os.applies
	e.change(func(tx *store.Tx) error {
		p, _ := tx.Peer("acme", "a")
		p.State = api.StateRevoked
		return tx.PutPeer(p)
	})
	if e.os.syncs != syncs || e.os.updates != updates+1 || len(e.os.sweeps) != sweeps+1 || e.os.applies != applies || dev.stats != 0 {
		t.Errorf("a revoke: %d full syncs, %d updates, %d sweeps, %d rule loads, %d stats reads; want 0, 1, 1, 0, 0",
			e.os.syncs-syncs, e.os.updates-updates, len(e.os.sweeps)-sweeps, e.os.applies-applies, dev.stats)
	}
}

// TestStartDeviceThenRulesFailure pins the start whose peers fail to
// load, followed by a run whose rules fail: the link may come up (the rules
// loaded), and the withdrawing run adds no peer the start's rules did not
// carry and keeps every revoked one off.
func TestStartDeviceThenRulesFailure(t *testing.T) {
	e := newEnv(t)
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "a", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup})
	})
	e.os.wgErr = errors.New("wireguard says no")
	if err := e.r.Start(); err != nil {
		t.Fatalf("a device failure at the start is fatal: %v", err)
	}
	if !e.r.fullNeeded(pending{}) {
		t.Fatal("after a failed start the next run is not a full one")
	}
	e.os.wgErr = nil
	e.put(func(tx *store.Tx) error {
		p, _ := tx.Peer("acme", "a")
		p.State = api.StateRevoked
		tx.PutPeer(p)
		g, _ := grant.Parse("10.0.0.0/8")
		o, _ := tx.Org("acme")
		o.Grants = []grant.Grant{g}
		tx.PutOrg(o)
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "n", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.2"), State: api.StateActive, Group: store.DefaultGroup})
	})
	e.os.applyErr = errors.New("iptables-restore: exit status 4")
	if err := e.r.Once(context.Background(), false); err == nil {
		t.Fatal("the failed rules were not reported")
	}
	if len(e.os.peers) != 0 {
		t.Errorf("the withdrawing run left %d peers on the device, want none", len(e.os.peers))
	}
	if _, in := e.os.set[netip.MustParseAddr("100.64.1.1")]; in {
		t.Error("the revoked peer is still in the peer set")
	}
}
