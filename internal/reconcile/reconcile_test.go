package reconcile

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/policy"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/wgdev"
	"github.com/extranetgw/extranet/pkg/api"
)

// fakeOS records what the reconciler did to the kernel, rendered as text so
// that a test reads like the state it expects.
type fakeOS struct {
	applies int
	policy  *policy.Policy
	drift   []string
	peers   map[wgtypes.Key]wgdev.Peer
	sweeps  []string
	// swept is the policy of the last sweep.
	swept *policy.Policy
	stats []wgdev.PeerStats
	// set is the firewall's peer sets: each address with its entry.
	set map[netip.Addr]policy.Peer
	// wgErr, when set, fails every change to the peers; setErr every
	// change to the peer set alone; applyErr every load of the rules;
	// sweepErr every sweep.
	wgErr, setErr, applyErr, sweepErr error
	// syncs and updates count full syncs and partial updates.
	syncs, updates int
}

func (f *fakeOS) Apply(p *policy.Policy) error {
	f.applies++
	if f.applyErr != nil {
		return f.applyErr
	}
	f.policy, f.drift = p, nil
	f.set = maps.Clone(p.Peers)
	return nil
}

func (f *fakeOS) Check() ([]string, error) { return f.drift, nil }

func (f *fakeOS) SetPeerSet(peers map[netip.Addr]policy.Peer) error {
	if f.setErr != nil {
		return f.setErr
	}
	f.set = maps.Clone(peers)
	return nil
}

// PeerHolders is what a kernel set left by an earlier run holds: the set
// as the fake has it.
func (f *fakeOS) PeerHolders() (map[netip.Addr]string, error) {
	held := map[netip.Addr]string{}
	for a, p := range f.set {
		held[a] = p.Holder()
	}
	return held, nil
}

func (f *fakeOS) UpdatePeerSet(add map[netip.Addr]policy.Peer, remove []netip.Addr) error {
	if f.setErr != nil {
		return f.setErr
	}
	for _, a := range remove {
		delete(f.set, a)
	}
	for a, g := range add {
		f.set[a] = g
	}
	return nil
}

func (f *fakeOS) SyncPeers(want []wgdev.Peer, _ bool) (wgdev.SyncResult, error) {
	f.syncs++
	if f.wgErr != nil {
		return wgdev.SyncResult{}, f.wgErr
	}
	var res wgdev.SyncResult
	seen := map[wgtypes.Key]bool{}
	for _, p := range want {
		seen[p.PublicKey] = true
		old, ok := f.peers[p.PublicKey]
		switch {
		case !ok:
			res.Added++
		case old != p:
			res.Updated++
		default:
			continue
		}
		f.peers[p.PublicKey] = p
	}
	for k := range f.peers {
		if !seen[k] {
			delete(f.peers, k)
			res.Removed++
		}
	}
	return res, nil
}

func (f *fakeOS) UpdatePeers(set []wgdev.Peer, remove []wgtypes.Key) (wgdev.SyncResult, error) {
	f.updates++
	if f.wgErr != nil {
		return wgdev.SyncResult{}, f.wgErr
	}
	var res wgdev.SyncResult
	for _, p := range set {
		if old, ok := f.peers[p.PublicKey]; !ok {
			res.Added++
		} else if old != p {
			res.Updated++
		}
		f.peers[p.PublicKey] = p
	}
	for _, k := range remove {
		if _, ok := f.peers[k]; ok {
			delete(f.peers, k)
			res.Removed++
		}
	}
	return res, nil
}

func (f *fakeOS) Stats() ([]wgdev.PeerStats, error) { return f.stats, nil }

func (f *fakeOS) EndKeepalives([]wgdev.PeerStats) error { return nil }

func (f *fakeOS) Sweep(tunnel netip.Prefix, p *policy.Policy) (int, error) {
	if f.sweepErr != nil {
		return 0, f.sweepErr
	}
	var live []string
	for a := range p.Peers {
		live = append(live, a.String())
	}
	sort.Strings(live)
	f.sweeps = append(f.sweeps, strings.Join(live, ","))
	f.swept = p
	return 0, nil
}

// String renders the fake kernel: the applied orgs and grants, and the peers.
func (f *fakeOS) String() string {
	var b strings.Builder
	if f.policy != nil {
		for _, o := range f.policy.Orgs {
			fmt.Fprintf(&b, "org %d %s blocks=%v", o.ID, o.Name, o.Blocks)
			for _, g := range o.Groups {
				if g.Name == store.DefaultGroup {
					fmt.Fprintf(&b, " grants=%v", g.Grants)
				} else {
					fmt.Fprintf(&b, " %s=%v", g.Name, g.Grants)
				}
			}
			b.WriteString("\n")
		}
	}
	var peers []string
	for _, p := range f.peers {
		peers = append(peers, p.Address.String())
	}
	sort.Strings(peers)
	fmt.Fprintf(&b, "peers %s\n", strings.Join(peers, ","))
	var set []string
	for a, g := range f.set {
		if g.Group == 0 {
			set = append(set, a.String()+"(no group)")
		} else {
			set = append(set, a.String())
		}
	}
	sort.Strings(set)
	fmt.Fprintf(&b, "peer set %s\n", strings.Join(set, ","))
	return b.String()
}

type fixedClock struct{ t time.Time }

func (c *fixedClock) Now() time.Time { return c.t }

type env struct {
	t   *testing.T
	db  *store.DB
	os  *fakeOS
	r   *Reconciler
	clk *fixedClock
}

func newEnv(t *testing.T) *env {
	db, err := store.Open(filepath.Join(t.TempDir(), "x.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 24)
	f := &fakeOS{peers: map[wgtypes.Key]wgdev.Peer{}}
	clk := &fixedClock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	r := New(Options{DB: db, Firewall: f, Device: f, Sweeper: f, Plan: plan, Interface: "wg-ext", Clock: clk,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return &env{t: t, db: db, os: f, r: r, clk: clk}
}

func (e *env) put(fn func(tx *store.Tx) error) {
	e.t.Helper()
	if err := e.db.Update(fn); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) once(check bool) {
	e.t.Helper()
	if err := e.r.Once(context.Background(), check); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) expect(want string) {
	e.t.Helper()
	if got := e.os.String(); got != want {
		e.t.Errorf("kernel state:\n%s\nwant:\n%s", got, want)
	}
}

func key(t *testing.T) string {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

func TestReconcileTransitions(t *testing.T) {
	e := newEnv(t)
	block := netip.MustParsePrefix("100.64.1.0/24")
	g1, _ := grant.Parse("10.20.0.0/24")
	g2, _ := grant.Parse("10.30.0.0/16:tcp/443")
	psk := key(t)
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{block}, Grants: []grant.Grant{g1, g2}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
		tx.PutPeer(&store.Peer{Org: "acme", Name: "a", PublicKey: key(t), PresharedKey: psk, Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup})
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "b", PublicKey: key(t), PresharedKey: psk, Address: netip.MustParseAddr("100.64.1.2"), State: api.StateSuspended, Group: store.DefaultGroup})
	})
	e.once(false)
	e.expect("org 1 acme blocks=[100.64.1.0/24] grants=[10.20.0.0/24 10.30.0.0/16:tcp/443]\npeers 100.64.1.1\npeer set 100.64.1.1\n")
	if len(e.os.sweeps) != 1 {
		t.Errorf("first reconcile swept %d times, want once (flows from before a restart)", len(e.os.sweeps))
	}

	// Idempotent: nothing changed, nothing applied, nothing swept.
	applies := e.os.applies
	e.once(false)
	e.once(true)
	if e.os.applies != applies || len(e.os.sweeps) != 1 {
		t.Errorf("no-op reconcile applied %d times and swept %d", e.os.applies-applies, len(e.os.sweeps)-1)
	}

	// Drift in the firewall is repaired and audited.
	e.os.drift = []string{"chain EXTRANET-FWD missing"}
	e.once(true)
	if e.os.applies != applies+1 || e.r.State().LastRepair.IsZero() {
		t.Errorf("drift not repaired")
	}

	// Resuming b adds it, without a sweep: nothing was withdrawn.
	e.put(func(tx *store.Tx) error {
		p, _ := tx.Peer("acme", "b")
		p.State = api.StateActive
		return tx.PutPeer(p)
	})
	e.once(false)
	e.expect("org 1 acme blocks=[100.64.1.0/24] grants=[10.20.0.0/24 10.30.0.0/16:tcp/443]\npeers 100.64.1.1,100.64.1.2\npeer set 100.64.1.1,100.64.1.2\n")
	if len(e.os.sweeps) != 1 {
		t.Errorf("adding a peer swept conntrack")
	}
	if e.os.applies != applies+1 {
		t.Errorf("adding a peer re-applied the firewall; rules must not depend on peers")
	}

	// Ungranting sweeps with the narrower policy.
	e.put(func(tx *store.Tx) error {
		o, _ := tx.Org("acme")
		o.Grants = []grant.Grant{g1}
		return tx.PutOrg(o)
	})
	e.once(false)
	if len(e.os.sweeps) != 2 {
		t.Fatalf("ungrant did not sweep")
	}

	// Rotating a's key sweeps with a left out, so its old flows die.
	e.put(func(tx *store.Tx) error {
		p, _ := tx.Peer("acme", "a")
		p.PublicKey = key(t)
		return tx.PutPeer(p)
	})
	e.once(false)
	if got := e.os.sweeps[len(e.os.sweeps)-1]; got != "100.64.1.2" {
		t.Errorf("rotation sweep kept %q alive, want only 100.64.1.2", got)
	}

	// An expired org drops out of the policy without any job running.
	e.put(func(tx *store.Tx) error {
		o, _ := tx.Org("acme")
		past := e.clk.t.Add(-time.Minute)
		o.Expires = &past
		return tx.PutOrg(o)
	})
	e.once(false)
	e.expect("peers \npeer set \n")

	// A peer removed by hand is put back and recorded as a repair.
	e.put(func(tx *store.Tx) error {
		o, _ := tx.Org("acme")
		o.Expires = nil
		return tx.PutOrg(o)
	})
	e.once(false)
	for k := range e.os.peers {
		delete(e.os.peers, k)
		break
	}
	e.once(true)
	e.expect("org 1 acme blocks=[100.64.1.0/24] grants=[10.20.0.0/24]\npeers 100.64.1.1,100.64.1.2\npeer set 100.64.1.1,100.64.1.2\n")
	var repairs int
	e.db.View(func(tx *store.Tx) error {
		return tx.Events(0, func(ev *store.Event) error {
			if ev.Action == "dataplane.repair" && ev.Actor == "extranetd" {
				repairs++
			}
			return nil
		})
	})
	if repairs != 2 {
		t.Errorf("%d repairs audited, want 2 (firewall, wireguard)", repairs)
	}
}

func TestApplyWaitsForAReconcile(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	go e.r.Run(ctx, nil)
	done := e.r.Apply(store.Changes{Orgs: true})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Apply did not complete")
	}
	if e.r.State().Runs < 2 {
		t.Errorf("Apply returned before a second reconcile ran")
	}
}
