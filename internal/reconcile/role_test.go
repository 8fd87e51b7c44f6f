package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/wgdev"
	"github.com/extranetgw/extranet/pkg/api"
)

// fakeRole records, in one order, what the role did to the link, the shared
// address and conntrack.
type fakeRole struct {
	calls   []string
	kicked  []wgdev.Peer
	holdErr error
}

func (f *fakeRole) Up() error   { f.calls = append(f.calls, "up"); return nil }
func (f *fakeRole) Down() error { f.calls = append(f.calls, "down"); return nil }
func (f *fakeRole) Kick(p []wgdev.Peer) error {
	f.calls = append(f.calls, "kick")
	f.kicked = append(f.kicked, p...)
	return nil
}
func (f *fakeRole) Hold() error {
	if f.holdErr != nil {
		return f.holdErr
	}
	f.calls = append(f.calls, "hold")
	return nil
}
func (f *fakeRole) Release() error { f.calls = append(f.calls, "release"); return nil }
func (f *fakeRole) forget() error  { f.calls = append(f.calls, "forget"); return nil }

func (f *fakeRole) said() string { return strings.Join(f.calls, " ") }

// roleEnv is an env whose reconciler takes turns, with one partner seen a
// minute ago at 192.0.2.1:4000 and one never seen.
func roleEnv(t *testing.T) (*env, *fakeRole, wgtypes.Key) {
	e := newEnv(t)
	f := &fakeRole{}
	e.r.o.Roles = &Roles{Link: f, Address: f, Forget: f.forget}
	pub := key(t)
	k, _ := wgtypes.ParseKey(pub)
	seen := e.clk.t.Add(-time.Minute)
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
		p := &store.Peer{Org: "acme", Name: "a", PublicKey: pub, PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup, LastHandshake: &seen, Endpoint: "192.0.2.1:4000"}
		tx.ClaimKey(pub, p.ID())
		tx.PutPeer(p)
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "b", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.2"), State: api.StateActive, Group: store.DefaultGroup})
	})
	return e, f, k
}

// promote promotes and waits for the run it asks for.
func (e *env) promote(epoch int64) error {
	e.t.Helper()
	e.r.Promote(epoch)
	w, work := e.r.takePending()
	err := e.r.applyPending(context.Background(), work)
	e.r.release(w, err)
	return err
}

// TestPromotionOpensLast: a standby's data plane is warm (rules, peers)
// with its link down; a promotion opens it only after a run found the
// rules in force, forgetting the flows of an earlier turn first, then
// taking the address, then the link, then starting the handshake with the
// partner seen lately. A demotion closes the link before it lets the
// address go, and no run opens it again.
func TestPromotionOpensLast(t *testing.T) {
	e, f, k := roleEnv(t)
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	if len(e.os.peers) != 2 || f.said() != "" {
		t.Fatalf("a standby's start: %d peers, role calls %q; want both peers and nothing opened", len(e.os.peers), f.said())
	}
	if on, _ := e.r.Serving(); on {
		t.Fatal("a standby serves before any promotion")
	}

	if err := e.promote(7); err != nil {
		t.Fatal(err)
	}
	if got := f.said(); got != "forget hold up kick" {
		t.Errorf("promotion: %q; want forget hold up kick", got)
	}
	if len(f.kicked) != 1 || f.kicked[0].PublicKey != k || f.kicked[0].Endpoint != netip.MustParseAddrPort("192.0.2.1:4000") {
		t.Errorf("kicked %+v; want the partner seen lately, at its endpoint", f.kicked)
	}
	if on, epoch := e.r.Serving(); !on || epoch != 7 {
		t.Errorf("Serving = %v, %d; want true under epoch 7", on, epoch)
	}

	f.calls = nil
	if err := e.r.Demote(); err != nil {
		t.Fatal(err)
	}
	e.once(true)
	if got := f.said(); got != "down release" {
		t.Errorf("demotion and a run after it: %q; want down release", got)
	}
	if on, epoch := e.r.Serving(); on || epoch != 0 {
		t.Errorf("Serving after Demote = %v, %d", on, epoch)
	}
}

// TestPromotionWaitsForTheRules: a promotion whose run cannot load the
// rules does not open the data plane; the next run that loads them does.
// One that cannot take the address does not open the link.
func TestPromotionWaitsForTheRules(t *testing.T) {
	e, f, _ := roleEnv(t)
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	e.os.applyErr = errors.New("iptables-restore: resource busy")
	e.put(func(tx *store.Tx) error {
		o, _ := tx.Org("acme")
		o.Blocks = append(o.Blocks, netip.MustParsePrefix("100.64.2.0/24"))
		return tx.PutOrg(o)
	})
	if err := e.promote(3); err == nil {
		t.Fatal("a run whose rules failed succeeded")
	}
	if f.said() != "" {
		t.Fatalf("the data plane opened without its rules: %q", f.said())
	}
	e.os.applyErr = nil
	f.holdErr = errors.New("address in use")
	if err := e.r.Once(context.Background(), false); err == nil || !strings.Contains(err.Error(), "address in use") {
		t.Errorf("a run that could not take the address: %v", err)
	}
	if got := f.said(); got != "forget release" {
		t.Errorf("without the address: %q; want nothing opened, and what Hold may have done undone", got)
	}
	f.holdErr, f.calls = nil, nil
	e.once(false)
	if got := f.said(); got != "forget hold up kick" {
		t.Errorf("the run after: %q; want forget hold up kick", got)
	}
}

// TestStandbyRecordsNothing: a standby's device holds what it saw in its
// last turn; neither poll writes it over what the active records.
func TestStandbyRecordsNothing(t *testing.T) {
	e, _, k := roleEnv(t)
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	e.os.stats = []wgdev.PeerStats{{PublicKey: k, LastHandshake: e.clk.t, Endpoint: "198.51.100.9:5000", RxBytes: 100}}
	if err := e.r.PollStats(); err != nil {
		t.Fatal(err)
	}
	if err := e.r.PollEndpoints(); err != nil {
		t.Fatal(err)
	}
	endpoint := func() string {
		var ep string
		e.db.View(func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "a")
			ep = p.Endpoint
			return nil
		})
		return ep
	}
	if got := endpoint(); got != "192.0.2.1:4000" {
		t.Fatalf("a standby recorded endpoint %s", got)
	}
	if err := e.promote(5); err != nil {
		t.Fatal(err)
	}
	if err := e.r.PollEndpoints(); err != nil {
		t.Fatal(err)
	}
	if got := endpoint(); got != "198.51.100.9:5000" {
		t.Errorf("the active recorded endpoint %s; want where its device saw the partner", got)
	}
}

// TestTurnsDoNotCountTrafficTwice: the store keeps one device counter per
// peer, written by whichever gateway answered it last. A gateway whose turn
// comes again counts only what its device counted since, not the traffic
// of its earlier turn that it recorded then.
func TestTurnsDoNotCountTrafficTwice(t *testing.T) {
	e, _, k := roleEnv(t)
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	rx := func() (total, dev int64) {
		e.db.View(func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "a")
			total, dev = p.RxBytes, p.DevRx
			return nil
		})
		return
	}
	// An earlier turn here: 1000 bytes, recorded.
	e.os.stats = []wgdev.PeerStats{{PublicKey: k}}
	if err := e.promote(1); err != nil {
		t.Fatal(err)
	}
	e.os.stats = []wgdev.PeerStats{{PublicKey: k, LastHandshake: e.clk.t, Endpoint: "192.0.2.1:4000", RxBytes: 1000}}
	if err := e.r.PollStats(); err != nil {
		t.Fatal(err)
	}
	e.r.Demote()
	// The other gateway's turn: its device counted 300, on top.
	e.put(func(tx *store.Tx) error {
		p, _ := tx.Peer("acme", "a")
		p.RxBytes, p.DevRx = p.RxBytes+300, 300
		return tx.PutPeer(p)
	})
	if total, _ := rx(); total != 1300 {
		t.Fatalf("total %d before this gateway's second turn; want 1300", total)
	}
	// This gateway's device still says 1000 when its turn comes, then
	// counts 50 more.
	if err := e.promote(2); err != nil {
		t.Fatal(err)
	}
	e.os.stats[0].RxBytes = 1050
	e.os.stats[0].LastHandshake = e.clk.t.Add(time.Second)
	if err := e.r.PollStats(); err != nil {
		t.Fatal(err)
	}
	if total, dev := rx(); total != 1350 || dev != 1050 {
		t.Errorf("total %d, device counter %d; want 1350 (1000 + 300 + 50), 1050", total, dev)
	}
}

// TestDemotionDuringPromotion: a demotion that comes while a promotion
// prepares (forgetting conntrack, reading counters) does not wait for it,
// and the promotion then opens nothing.
func TestDemotionDuringPromotion(t *testing.T) {
	e, f, _ := roleEnv(t)
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	e.r.o.Roles.Forget = func() error {
		f.calls = append(f.calls, "forget")
		// roleMu is free here: this would deadlock otherwise.
		return e.r.Demote()
	}
	if err := e.promote(4); err != nil {
		t.Fatal(err)
	}
	if got := f.said(); got != "forget down release" {
		t.Errorf("%q; want the demotion, and nothing opened after it", got)
	}
	if on, _ := e.r.Serving(); on {
		t.Error("serving after a demotion")
	}
}
