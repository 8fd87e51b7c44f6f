// Package reconcile makes the kernel match the store: it derives the access
// policy and the peer list from the store, applies them to the firewall and
// the WireGuard device, kills flows that lost their access, repairs drift,
// and records traffic statistics. It never decides policy.
package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/policy"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/wgdev"
	"github.com/extranetgw/extranet/pkg/api"
)

// Firewall is the part of the firewall the reconciler drives.
type Firewall interface {
	Apply(*policy.Policy) error
	Check() ([]string, error)
}

// Device is the part of the WireGuard device the reconciler drives.
type Device interface {
	SyncPeers(want []wgdev.Peer, verify bool) (wgdev.SyncResult, error)
	Stats() ([]wgdev.PeerStats, error)
}

// Sweeper kills conntrack entries the policy no longer allows.
type Sweeper interface {
	Sweep(tunnel netip.Prefix, p *policy.Policy) (int, error)
}

// Clock tells the time.
type Clock interface{ Now() time.Time }

// Options configure a Reconciler.
type Options struct {
	DB         *store.DB
	Firewall   Firewall
	Device     Device
	Sweeper    Sweeper
	Plan       ipam.Plan
	Interface  string
	Masquerade bool
	Clock      Clock
	Logger     *slog.Logger
	// Interval is the period of the drift-repairing reconcile.
	Interval time.Duration
	// StatsInterval is the period of the handshake and traffic poller.
	StatsInterval time.Duration
	// Observe, when set, learns how each reconcile went (for metrics).
	Observe func(took time.Duration, err error, repairs int)
}

// Reconciler owns every change to the data plane.
type Reconciler struct {
	o   Options
	log *slog.Logger

	kick chan struct{}

	mu      sync.Mutex
	waiters []chan struct{}
	state   State

	// Owned by the Run goroutine.
	applied  *policy.Policy
	lastKeys map[netip.Addr]wgtypes.Key
	lastWant []wgdev.Peer
}

// State is what `status` reports about reconciliation.
type State struct {
	LastRun    time.Time
	LastError  string
	LastRepair time.Time
	Repairs    []string
	Runs       int
}

// SetDevice hands over the device once it is up; the firewall comes first.
func (r *Reconciler) SetDevice(d Device) { r.o.Device = d }

// New returns a Reconciler; call Run to start it.
func New(o Options) *Reconciler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.StatsInterval <= 0 {
		o.StatsInterval = 5 * time.Second
	}
	return &Reconciler{o: o, log: o.Logger, kick: make(chan struct{}, 1)}
}

// Apply asks for a reconcile and returns a channel closed when one that
// started after this call has finished.
func (r *Reconciler) Apply() <-chan struct{} {
	ch := make(chan struct{})
	r.mu.Lock()
	r.waiters = append(r.waiters, ch)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return ch
}

// State returns a copy of the reconcile state.
func (r *Reconciler) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.state
	s.Repairs = append([]string(nil), s.Repairs...)
	return s
}

// Run reconciles at once, then on every Apply, every Interval, and on each
// value from hup (SIGHUP), until ctx ends. The first result is sent on ready.
func (r *Reconciler) Run(ctx context.Context, hup <-chan struct{}, ready chan<- error) {
	first := r.Once(ctx, true)
	if ready != nil {
		ready <- first
	}
	tick := time.NewTicker(r.o.Interval)
	defer tick.Stop()
	// Reading thousands of peers' statistics takes a while; it must not
	// hold up the reconcile a request is waiting for.
	go r.pollStats(ctx)
	for {
		select {
		case <-ctx.Done():
			r.release(r.takeWaiters())
			return
		case <-r.kick:
			w := r.takeWaiters()
			r.Once(ctx, false)
			r.release(w)
		case <-hup:
			r.Once(ctx, true)
		case <-tick.C:
			r.Once(ctx, true)
		}
	}
}

func (r *Reconciler) pollStats(ctx context.Context) {
	t := time.NewTicker(r.o.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.PollStats(); err != nil {
				r.log.Warn("poll peer statistics", "err", err)
			}
		}
	}
}

func (r *Reconciler) takeWaiters() []chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.waiters
	r.waiters = nil
	return w
}

func (r *Reconciler) release(w []chan struct{}) {
	for _, ch := range w {
		close(ch)
	}
}

// desired reads the store into the policy and the wanted peer list. Expiry
// dates are enforced here too, so access ends on time even if the expire
// job never runs.
func (r *Reconciler) desired() (*policy.Policy, []wgdev.Peer, map[netip.Addr]wgtypes.Key, error) {
	now := r.o.Clock.Now()
	p := &policy.Policy{
		Interface:  r.o.Interface,
		TunnelNet:  r.o.Plan.Network,
		Masquerade: r.o.Masquerade,
	}
	// Sized from the last run: with thousands of peers, growing the maps
	// costs more than filling them.
	want := make([]wgdev.Peer, 0, len(r.lastWant))
	keys := make(map[netip.Addr]wgtypes.Key, len(r.lastWant))
	p.Peers = make(map[netip.Addr]bool, len(r.lastWant))
	err := r.o.DB.View(func(tx *store.Tx) error {
		active := map[string]bool{}
		if err := tx.Orgs(func(o *store.Org) error {
			if o.State != api.StateActive || (o.Expires != nil && !o.Expires.After(now)) {
				return nil
			}
			active[o.Name] = true
			p.Orgs = append(p.Orgs, policy.Org{ID: o.ID, Name: o.Name, Blocks: o.Blocks, Grants: o.Grants})
			return nil
		}); err != nil {
			return err
		}
		return tx.DataplanePeers(func(sp *store.DataplanePeer) error {
			if sp.State != api.StateActive || !active[sp.Org] || (!sp.Expires.IsZero() && !sp.Expires.After(now)) {
				return nil
			}
			pub, psk := wgtypes.Key(sp.PublicKey), wgtypes.Key(sp.PresharedKey)
			if pub == (wgtypes.Key{}) || psk == (wgtypes.Key{}) {
				r.log.Error("peer has a corrupt key; leaving it out", "peer", sp.Org+"/"+sp.Name)
				return nil
			}
			wp := wgdev.Peer{PublicKey: pub, PresharedKey: psk, Address: sp.Address}
			if !sp.LastHandshake.IsZero() && now.Sub(sp.LastHandshake) < recentlyOnline {
				wp.Endpoint, _ = netip.ParseAddrPort(sp.Endpoint)
			}
			want = append(want, wp)
			p.Peers[sp.Address] = true
			keys[sp.Address] = pub
			return nil
		})
	})
	return p, want, keys, err
}

// Once runs one reconcile. check asks for drift detection (periodic runs);
// a run after a store change applies what changed.
func (r *Reconciler) Once(ctx context.Context, check bool) error {
	start := r.o.Clock.Now()
	repairs, err := r.once(check)
	if r.o.Observe != nil {
		r.o.Observe(r.o.Clock.Now().Sub(start), err, repairs)
	}
	r.mu.Lock()
	r.state.LastRun = start
	r.state.Runs++
	if err != nil {
		r.state.LastError = err.Error()
	} else {
		r.state.LastError = ""
	}
	r.mu.Unlock()
	if err != nil {
		r.log.Error("reconcile", "err", err)
	} else {
		r.log.Debug("reconciled", "took", time.Since(start))
	}
	return err
}

func (r *Reconciler) once(check bool) (int, error) {
	p, want, keys, err := r.desired()
	if err != nil {
		return 0, fmt.Errorf("read desired state: %w", err)
	}
	var repairs []string

	// Firewall first: a new peer must never be up before its rules are.
	switch {
	case r.applied == nil || !sameRules(r.applied, p):
		if err := r.o.Firewall.Apply(p); err != nil {
			return 0, fmt.Errorf("apply firewall: %w", err)
		}
	case check:
		drift, err := r.o.Firewall.Check()
		if err != nil {
			return 0, fmt.Errorf("check firewall: %w", err)
		}
		if len(drift) > 0 {
			if err := r.o.Firewall.Apply(p); err != nil {
				return 0, fmt.Errorf("repair firewall (%v): %w", drift, err)
			}
			repairs = append(repairs, drift...)
		}
	}

	res, err := r.o.Device.SyncPeers(want, check)
	if err != nil {
		return 0, fmt.Errorf("sync WireGuard peers: %w", err)
	}
	if r.lastWant != nil && samePeers(r.lastWant, want) && res != (wgdev.SyncResult{}) {
		repairs = append(repairs, fmt.Sprintf("wireguard peers changed by hand: %d re-added, %d removed, %d fixed", res.Added, res.Removed, res.Updated))
	}

	// Flows die after the peer is gone from the device, so nothing can
	// re-open them in between.
	if r.applied == nil || withdrawn(r.applied, p, r.lastKeys, keys) {
		sweep := p
		if rotated := rekeyed(r.lastKeys, keys); len(rotated) > 0 {
			sweep = withoutPeers(p, rotated)
		}
		n, err := r.o.Sweeper.Sweep(r.o.Plan.Network, sweep)
		if err != nil {
			return 0, fmt.Errorf("kill withdrawn flows: %w", err)
		}
		if n > 0 {
			r.log.Info("killed flows that lost their access", "flows", n)
		}
	}
	r.applied, r.lastKeys, r.lastWant = p, keys, want

	if len(repairs) > 0 {
		r.recordRepair(repairs)
	}
	return len(repairs), nil
}

func (r *Reconciler) recordRepair(repairs []string) {
	now := r.o.Clock.Now()
	r.log.Warn("repaired drift", "what", repairs)
	r.mu.Lock()
	r.state.LastRepair, r.state.Repairs = now, repairs
	r.mu.Unlock()
	err := r.o.DB.Update(func(tx *store.Tx) error {
		return tx.Audit(now, "extranetd", "dataplane.repair", r.o.Interface, nil, repairs)
	})
	if err != nil {
		r.log.Error("audit drift repair", "err", err)
	}
}

// sameRules reports whether two policies need the same firewall rules.
// Peers are not part of the rules, so issuing or revoking one never touches
// iptables.
func sameRules(a, b *policy.Policy) bool {
	return a.Interface == b.Interface && a.TunnelNet == b.TunnelNet && a.Masquerade == b.Masquerade && reflect.DeepEqual(a.Orgs, b.Orgs)
}

// recentlyOnline is how recent a handshake must be for the gateway to reach
// out to a re-added peer itself (see wgdev.Peer.Endpoint).
const recentlyOnline = 10 * time.Minute

// samePeers compares peer lists, ignoring endpoints, which move on their own.
func samePeers(a, b []wgdev.Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].PublicKey != b[i].PublicKey || a[i].PresharedKey != b[i].PresharedKey || a[i].Address != b[i].Address {
			return false
		}
	}
	return true
}

// withdrawn reports whether any access present in old is absent in new.
func withdrawn(old, new *policy.Policy, oldKeys, newKeys map[netip.Addr]wgtypes.Key) bool {
	for a := range old.Peers {
		if !new.Peers[a] {
			return true
		}
	}
	if len(rekeyed(oldKeys, newKeys)) > 0 {
		return true
	}
	newOrgs := map[uint32]policy.Org{}
	for _, o := range new.Orgs {
		newOrgs[o.ID] = o
	}
	for _, o := range old.Orgs {
		n, ok := newOrgs[o.ID]
		if !ok {
			return true
		}
		have := map[string]bool{}
		for _, g := range n.Grants {
			have[g.String()] = true
		}
		for _, g := range o.Grants {
			if !have[g.String()] {
				return true
			}
		}
	}
	return false
}

// rekeyed lists addresses whose peer now has another key (rotation): flows
// of the old key must die even though the address stays allowed.
func rekeyed(old, new map[netip.Addr]wgtypes.Key) map[netip.Addr]bool {
	var out map[netip.Addr]bool
	for a, k := range new {
		if ok, had := old[a]; had && ok != k {
			if out == nil {
				out = map[netip.Addr]bool{}
			}
			out[a] = true
		}
	}
	return out
}

func withoutPeers(p *policy.Policy, drop map[netip.Addr]bool) *policy.Policy {
	cp := *p
	cp.Peers = make(map[netip.Addr]bool, len(p.Peers))
	for a := range p.Peers {
		if !drop[a] {
			cp.Peers[a] = true
		}
	}
	return &cp
}

// PrepareFirewall installs the rules for the stored policy before the
// WireGuard interface exists, so that the interface never comes up without
// its default deny.
func (r *Reconciler) PrepareFirewall() error {
	p, _, _, err := r.desired()
	if err != nil {
		return fmt.Errorf("read desired state: %w", err)
	}
	if err := r.o.Firewall.Apply(p); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	r.applied = p
	return nil
}
