// Package reconcile makes the kernel match the store: it derives the access
// policy and the peer list from the store, applies them to the firewall and
// the WireGuard device, kills flows that lost their access, repairs drift,
// and records traffic statistics. It never decides policy.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/policy"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/wgdev"
	"github.com/extranetgw/extranet/pkg/api"
)

// Firewall is the part of the firewall the reconciler drives. Apply puts
// rules and every set in force, the peer set included; SetPeerSet and
// UpdatePeerSet change the peer set alone (each peer's address, marked
// with its group), as peers come, go and move.
type Firewall interface {
	Apply(*policy.Policy) error
	SetPeerSet(map[netip.Addr]policy.Peer) error
	UpdatePeerSet(add map[netip.Addr]policy.Peer, remove []netip.Addr) error
	// PeerHolders is which key (policy.Peer.Holder) holds each address in
	// the kernel's peer set.
	PeerHolders() (map[netip.Addr]string, error)
	Check() ([]string, error)
}

// Device is the part of the WireGuard device the reconciler drives.
type Device interface {
	SyncPeers(want []wgdev.Peer, verify bool) (wgdev.SyncResult, error)
	UpdatePeers(set []wgdev.Peer, remove []wgtypes.Key) (wgdev.SyncResult, error)
	Stats() ([]wgdev.PeerStats, error)
	EndKeepalives(stats []wgdev.PeerStats) error
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
	// Host, when set, tells what the gateway host receives itself (kept
	// from every partner) and the interfaces partner traffic toward
	// granted, the prefixes of every grant, may leave it by.
	Host func(granted []netip.Prefix) (policy.Host, error)
	// Observe, when set, learns how each reconcile went (for metrics).
	Observe func(took time.Duration, err error, repairs int)
	// Roles, when set, makes this a cluster gateway that takes turns
	// answering partners: its link stays down until Promote.
	Roles *Roles
	// AliveFile, when set, is a file whose time says when the daemon last
	// ran (touched after a successful run, at most every aliveEvery), so
	// that a start can tell which dates passed while it did not.
	AliveFile string
}

// aliveEvery bounds how often AliveFile is touched, and so how stale the
// time it says may be.
const aliveEvery = 10 * time.Second

// Reconciler owns every change to the data plane.
type Reconciler struct {
	o   Options
	log *slog.Logger

	kick chan struct{}

	mu      sync.Mutex
	waiters []chan error
	pending pending
	state   State

	// Owned by the Run goroutine: what is in force, how far that is
	// known, and the addresses whose flows a failed sweep left alive.
	cur     inForce
	know    knowledge
	unswept map[netip.Addr]bool

	// touched is when AliveFile was last touched.
	touched time.Time

	// statsMu serialises PollStats: the poller calls it on its interval,
	// expire and the daemon's stop whenever they need current handshakes.
	// lastStats is each peer's statistics at the last poll.
	statsMu   sync.Mutex
	lastStats map[wgtypes.Key]wgdev.PeerStats
	// lastEndpoints are the endpoints the active last recorded.
	lastEndpoints map[wgtypes.Key]string

	// roleMu orders promotion and demotion (role.go): active is the
	// role, serving whether the data plane is open for it.
	roleMu          sync.Mutex
	active, serving bool
	epoch           int64
	turn            turn
}

// orgInForce is what deciding about a peer needs of its organisation.
type orgInForce struct {
	expires time.Time // zero: none
	// groups maps group names to IDs.
	groups map[string]uint32
}

// pending is the work asked for since the last run: peers whose records
// changed, or full when anything else did.
type pending struct {
	peers map[string]bool
	full  bool
}

// State is what `status` reports about reconciliation.
type State struct {
	LastRun    time.Time
	LastError  string
	LastRepair time.Time
	Repairs    []string
	Runs       int
	// EndedWhileDown are the organisations and peers whose date passed
	// since the daemon last ran, found by the start ("ORG/NAME" or "org
	// ORG", with the date); DownSince is when it last ran, zero if unknown.
	EndedWhileDown []string
	DownSince      time.Time
}

// SetDevice hands over the device, before Start.
func (r *Reconciler) SetDevice(d Device) { r.o.Device = d }

// New returns a Reconciler; call Start, then Run.
func New(o Options) *Reconciler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.StatsInterval <= 0 {
		o.StatsInterval = 30 * time.Second
	}
	return &Reconciler{o: o, log: o.Logger, kick: make(chan struct{}, 1)}
}

// Apply asks for a reconcile of what ch changed and returns a channel that
// yields the outcome (nil when in force) of one that started after this
// call. A change to peers only is applied to those peers alone; anything
// else re-reads the whole store.
func (r *Reconciler) Apply(ch store.Changes) <-chan error {
	done := make(chan error, 1)
	r.mu.Lock()
	r.waiters = append(r.waiters, done)
	if ch.Orgs {
		r.pending.full = true
	}
	for _, id := range ch.Peers {
		if r.pending.peers == nil {
			r.pending.peers = map[string]bool{}
		}
		r.pending.peers[id] = true
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return done
}

// State returns a copy of the reconcile state.
func (r *Reconciler) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.state
	s.Repairs = append([]string(nil), s.Repairs...)
	return s
}

// Run reconciles on every Apply, every Interval, and on each value from hup
// (SIGHUP), until ctx ends; at once too if Start did not finish its work.
func (r *Reconciler) Run(ctx context.Context, hup <-chan struct{}) {
	if r.fullNeeded(pending{}) {
		r.Once(ctx, false)
	}
	tick := time.NewTicker(r.o.Interval)
	defer tick.Stop()
	// Reading thousands of peers' statistics takes a while; it must not
	// hold up the reconcile a request is waiting for.
	go r.pollStats(ctx)
	for {
		select {
		case <-ctx.Done():
			w, _ := r.takePending()
			r.release(w, errors.New("extranetd is stopping"))
			return
		case <-r.kick:
			w, work := r.takePending()
			r.release(w, r.applyPending(ctx, work))
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
	// Only a cluster gateway that takes turns looks at endpoints apart.
	var endpoints <-chan time.Time
	if r.o.Roles != nil {
		e := time.NewTicker(endpointsEvery)
		defer e.Stop()
		endpoints = e.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.PollStats(); err != nil {
				r.log.Warn("poll peer statistics", "err", err)
			}
		case <-endpoints:
			if err := r.PollEndpoints(); err != nil {
				r.log.Warn("record partners' endpoints", "err", err)
			}
		}
	}
}

// endpointsEvery is how often the active of a cluster records partners'
// endpoints: a partner that connected or roamed less than this before a
// failover comes back by its own retry instead of at once.
const endpointsEvery = time.Second

// applyPending runs the reconcile that work asks for: the changed peers
// alone when that is enough, else a full one.
func (r *Reconciler) applyPending(ctx context.Context, work pending) error {
	if r.fullNeeded(work) {
		return r.Once(ctx, false)
	}
	if len(work.peers) == 0 {
		return nil
	}
	stale := false
	err := r.observe(func() (int, error) {
		var err error
		stale, err = r.applyPeers(work.peers)
		return 0, err
	})
	if stale || err != nil {
		// Start over from the store rather than leave a waiter with half
		// a change, or apply a peer by its organisation's old groups.
		return r.Once(ctx, false)
	}
	return nil
}

// fullNeeded tells whether work needs the whole store re-read rather than
// only the changed peers.
func (r *Reconciler) fullNeeded(work pending) bool {
	return work.full || r.know != known
}

func (r *Reconciler) takePending() ([]chan error, pending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, p := r.waiters, r.pending
	r.waiters, r.pending = nil, pending{}
	return w, p
}

// release tells the waiters w how the run that served them went.
func (r *Reconciler) release(w []chan error, err error) {
	for _, ch := range w {
		ch <- err
	}
}

// desired reads the store into a full run's target: the policy, the wanted
// peers and the active organisations.
func (r *Reconciler) desired() (target, error) {
	now := r.o.Clock.Now()
	p := &policy.Policy{
		Interface:  r.o.Interface,
		TunnelNet:  r.o.Plan.Network,
		Masquerade: r.o.Masquerade,
	}
	// Sized from the last run: with thousands of peers, growing the maps
	// costs more than filling them.
	n := len(r.cur.peers)
	t := target{policy: p, peers: make(map[string]wgdev.Peer, n), entries: make(map[string]policy.Peer, n), poll: true}
	p.Peers = make(map[netip.Addr]policy.Peer, n)
	p.At = now
	orgs := map[string]orgInForce{}
	err := r.o.DB.View(func(tx *store.Tx) error {
		if err := tx.Orgs(func(o *store.Org) error {
			if !store.InForce(o.State, o.Expires, now) {
				return nil
			}
			in := orgInForce{groups: make(map[string]uint32, len(o.Groups))}
			if o.Expires != nil {
				in.expires = *o.Expires
			}
			po := policy.Org{ID: o.ID, Name: o.Name, Blocks: o.Blocks}
			for i := range o.Groups {
				g := &o.Groups[i]
				in.groups[g.Name] = g.ID
				po.Groups = append(po.Groups, policy.Group{ID: g.ID, Name: g.Name, Grants: o.GroupGrants(g)})
			}
			orgs[o.Name] = in
			p.Orgs = append(p.Orgs, po)
			return nil
		}); err != nil {
			return err
		}
		return tx.DataplanePeers(func(sp *store.DataplanePeer) error {
			if w, in, ok := r.wanted(sp, orgs, now); ok {
				id := sp.Org + "/" + sp.Name
				t.peers[id], t.entries[id] = w, in
				p.Peers[w.Address] = in
			}
			return nil
		})
	})
	if err != nil {
		return target{}, err
	}
	t.orgs = orgs
	if r.o.Host != nil {
		host, err := r.o.Host(p.Granted())
		switch {
		case err == nil:
			sort.Slice(host.Local, func(i, j int) bool {
				if a, b := host.Local[i].Addr(), host.Local[j].Addr(); a != b {
					return a.Less(b)
				}
				return host.Local[i].Bits() < host.Local[j].Bits()
			})
			p.Host = host
		case r.know != nothing:
			// What is in force stands rather than the run failing: a
			// failed run would hold up a revoke, for an answer that the
			// next run asks again.
			r.log.Warn("reading the host's addresses and routes failed; keeping those in force", "err", err)
			p.Host = r.cur.rules.Host
		default:
			return target{}, err
		}
	}
	return t, nil
}

// wanted decides whether a stored peer belongs in the data plane, and how:
// on WireGuard, and in the firewall's peer set (its group, its key and when
// its access ends). Expiry dates are enforced here too, so access ends on
// time even if the expire job never runs, and the kernel is told the date,
// so that it ends on time even if the daemon does not run.
func (r *Reconciler) wanted(sp *store.DataplanePeer, orgs map[string]orgInForce, now time.Time) (wgdev.Peer, policy.Peer, bool) {
	if sp == nil || !store.InForce(sp.State, &sp.Expires, now) {
		return wgdev.Peer{}, policy.Peer{}, false
	}
	o, ok := orgs[sp.Org]
	if !ok || !store.InForce(api.StateActive, &o.expires, now) {
		return wgdev.Peer{}, policy.Peer{}, false
	}
	group := o.groups[sp.Group]
	if group == 0 {
		r.log.Error("peer is in a group its organisation does not have; leaving it out", "peer", sp.Org+"/"+sp.Name, "group", sp.Group)
		return wgdev.Peer{}, policy.Peer{}, false
	}
	pub, psk := wgtypes.Key(sp.PublicKey), wgtypes.Key(sp.PresharedKey)
	if pub == (wgtypes.Key{}) || psk == (wgtypes.Key{}) {
		r.log.Error("peer has a corrupt key; leaving it out", "peer", sp.Org+"/"+sp.Name)
		return wgdev.Peer{}, policy.Peer{}, false
	}
	w := wgdev.Peer{PublicKey: pub, PresharedKey: psk, Address: sp.Address}
	if !sp.LastHandshake.IsZero() && now.Sub(sp.LastHandshake) < recentlyOnline {
		w.Endpoint, _ = netip.ParseAddrPort(sp.Endpoint)
	}
	in := policy.Peer{Group: group, Key: pub, Ends: sp.Expires}
	if !o.expires.IsZero() && (in.Ends.IsZero() || o.expires.Before(in.Ends)) {
		in.Ends = o.expires
	}
	return w, in, true
}

// Once runs one full reconcile: everything is read from the store. check
// asks for drift detection as well (periodic runs and SIGHUP), which reads
// the firewall and the device back instead of trusting what was applied.
func (r *Reconciler) Once(ctx context.Context, check bool) error {
	return r.observe(func() (int, error) { return r.once(check) })
}

// observe runs one reconcile and records how it went.
func (r *Reconciler) observe(run func() (int, error)) error {
	start := r.o.Clock.Now()
	repairs, err := run()
	if err != nil && r.know == known {
		r.know = uncertain
	}
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
		r.touchAlive(start)
	}
	return err
}

// touchAlive records that the daemon runs, at most every aliveEvery.
func (r *Reconciler) touchAlive(now time.Time) {
	if r.o.AliveFile == "" || now.Sub(r.touched) < aliveEvery {
		return
	}
	err := os.Chtimes(r.o.AliveFile, now, now)
	if errors.Is(err, os.ErrNotExist) {
		err = os.WriteFile(r.o.AliveFile, nil, 0o600)
	}
	if err != nil {
		r.log.Warn("record that extranetd runs", "file", r.o.AliveFile, "err", err)
		return
	}
	r.touched = now
}

// endedWhileDown lists the organisations and peers in force before their
// dates that passed since the daemon last ran (since; zero for unknown,
// when every such date counts): the kernel ended their new flows on time,
// and the admin is told which.
func (r *Reconciler) endedWhileDown(since, now time.Time) ([]string, error) {
	var out []string
	ended := func(t time.Time) bool { return !t.IsZero() && t.After(since) && !t.After(now) }
	gone := map[string]bool{}
	err := r.o.DB.View(func(tx *store.Tx) error {
		if err := tx.Orgs(func(o *store.Org) error {
			if o.State == api.StateActive && o.Expires != nil && ended(*o.Expires) {
				gone[o.Name] = true
				out = append(out, fmt.Sprintf("org %s (%s)", o.Name, o.Expires.UTC().Format(time.RFC3339)))
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.DataplanePeers(func(sp *store.DataplanePeer) error {
			if sp.State == api.StateActive && !gone[sp.Org] && ended(sp.Expires) {
				out = append(out, fmt.Sprintf("%s/%s (%s)", sp.Org, sp.Name, sp.Expires.UTC().Format(time.RFC3339)))
			}
			return nil
		})
	})
	sort.Strings(out)
	return out, err
}

// handedOver lists the addresses whose holder the start cannot vouch for:
// those the kernel's peer set, as an earlier run left it, gives to another
// key than now (they changed hands while the daemon was not running: a
// restore), and those it no longer holds at all (their entry's date passed,
// or they came since), since whatever flows they have were not opened by
// the key that holds them now as far as anyone can tell. Flows opened under
// an old key must not live on under a new holder, whatever its group
// allows. An entry without a fingerprint (from a release that kept none)
// tells nothing; held nil (no set: a first start) neither.
func handedOver(held map[netip.Addr]string, now map[netip.Addr]policy.Peer) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	if held == nil {
		return out
	}
	for a, p := range now {
		if h, ok := held[a]; !ok || (h != "" && h != p.Holder()) {
			out[a] = true
		}
	}
	return out
}

func (r *Reconciler) once(check bool) (int, error) {
	t, err := r.desired()
	if err != nil {
		return 0, fmt.Errorf("read desired state: %w", err)
	}
	t.check = check
	repairs, err := r.apply(t)
	if len(repairs) > 0 {
		r.recordRepair(repairs)
	}
	return len(repairs), err
}

// applyPeers brings the peers with the given ORG/NAME in line with their
// stored records, touching nothing else: the rules do not depend on peers,
// and the other peers have not changed. It needs a full run before it, and
// it asks for one (stale) without touching anything when a changed peer's
// group is not the one that run saw: the organisation changed since, and
// its change is still on the way to the reconciler.
func (r *Reconciler) applyPeers(ids map[string]bool) (stale bool, err error) {
	now := r.o.Clock.Now()
	t := target{ids: ids, peers: make(map[string]wgdev.Peer, len(ids)), entries: make(map[string]policy.Peer, len(ids))}
	err = r.o.DB.View(func(tx *store.Tx) error {
		for id := range ids {
			sp, err := tx.DataplanePeer(id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if stale, err = r.groupMoved(tx, sp); stale || err != nil {
				return err
			}
			if w, in, ok := r.wanted(sp, r.cur.orgs, now); ok {
				t.peers[id], t.entries[id] = w, in
			} else if _, had := r.cur.peers[id]; had && sp.State != api.StateRevoked && sp.Endpoint == "" {
				// A pause, and nothing recorded where the peer was: its
				// endpoint must be read before it goes, or a resume waits
				// for the partner's client to give up on its old session
				// (~15 s).
				t.poll = true
			}
		}
		return nil
	})
	if err != nil || stale {
		return stale, err
	}
	_, err = r.apply(t)
	return false, err
}

// groupMoved reports whether the group a peer names has another ID in the
// store than in the last full run: a group deleted and made again under
// its name, say. Resolved through that run's names, the peer would get
// the old group's mark.
func (r *Reconciler) groupMoved(tx *store.Tx, sp *store.DataplanePeer) (bool, error) {
	in, ok := r.cur.orgs[sp.Org]
	if !ok {
		// Not in force then: wanted leaves the peer out, and the change
		// that brings its organisation back brings a full run.
		return false, nil
	}
	o, err := tx.Org(sp.Org)
	if errors.Is(err, store.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	var id uint32
	if g := o.Group(sp.Group); g != nil {
		id = g.ID
	}
	return id != in.groups[sp.Group], nil
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
	return a.Interface == b.Interface && a.TunnelNet == b.TunnelNet && a.Masquerade == b.Masquerade &&
		reflect.DeepEqual(a.Host, b.Host) && reflect.DeepEqual(a.Orgs, b.Orgs)
}

// recentlyOnline is how recent a handshake must be for the gateway to reach
// out to a re-added peer itself (see wgdev.Peer.Endpoint).
const recentlyOnline = 10 * time.Minute

// samePeers compares wanted peers, ignoring endpoints, which move on their own.
func samePeers(a, b map[string]wgdev.Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for id, p := range a {
		q, ok := b[id]
		if !ok || p.PublicKey != q.PublicKey || p.PresharedKey != q.PresharedKey || p.Address != q.Address {
			return false
		}
	}
	return true
}

// grantsWithdrawn reports whether an organisation, group or grant of old
// is missing from new, or the host gained a local range (flows toward it,
// if any, must not outlive the rule that now refuses them).
func grantsWithdrawn(old, new *policy.Policy) bool {
	blocks, gone := narrowed(old, new)
	return gone || len(blocks) > 0 || !subset(new.Host.Local, old.Host.Local)
}

// subset reports whether every prefix of a is in b.
func subset(a, b []netip.Prefix) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// narrowed returns the blocks of the organisations that kept their place
// in new but of which a group lost a grant of old or is gone, and whether
// an organisation of old is gone from new altogether.
func narrowed(old, new *policy.Policy) (blocks []netip.Prefix, gone bool) {
	newOrgs := map[uint32]policy.Org{}
	for _, o := range new.Orgs {
		newOrgs[o.ID] = o
	}
	for _, o := range old.Orgs {
		n, ok := newOrgs[o.ID]
		if !ok {
			gone = true
			continue
		}
		if groupsNarrowed(o.Groups, n.Groups) {
			blocks = append(blocks, o.Blocks...)
		}
	}
	return blocks, gone
}

// groupsNarrowed reports whether a group of old is gone from new, or lost
// a grant there.
func groupsNarrowed(old, new []policy.Group) bool {
	have := map[uint32]map[grant.Grant]bool{}
	for _, g := range new {
		have[g.ID] = map[grant.Grant]bool{}
		for _, gr := range g.Grants {
			have[g.ID][gr] = true
		}
	}
	for _, g := range old {
		grants, ok := have[g.ID]
		if !ok {
			return true
		}
		for _, gr := range g.Grants {
			if !grants[gr] {
				return true
			}
		}
	}
	return false
}

// Start puts the stored state in force while the device's link is still
// down. The firewall and the device's peers load at the same time: iptables
// and ipset work in processes of their own while WireGuard's per-peer key
// setup runs in ours, and at 10,000 peers each takes about a second. Then
// flows the state does not allow are killed (say, of a grant removed by a
// restore while the daemon was stopped).
//
// An error means the firewall is not in place, and the link must stay
// down. A failure to load the peers is recorded as a failed run instead,
// and Run starts over: the default deny is in place either way.
func (r *Reconciler) Start() error {
	var fatal error
	var since time.Time
	if r.o.AliveFile != "" {
		if fi, err := os.Stat(r.o.AliveFile); err == nil {
			since = fi.ModTime()
		}
	}
	r.observe(func() (int, error) {
		// What the last run left in the kernel, read before anything
		// replaces it. Unreadable, every partner flow dies: better a
		// reconnect than a flow that changed hands.
		held, heldErr := r.o.Firewall.PeerHolders()
		t, err := r.desired()
		if err != nil {
			fatal = fmt.Errorf("read desired state: %w", err)
			return 0, fatal
		}
		p := t.policy
		handed := handedOver(held, p.Peers)
		if heldErr != nil {
			r.log.Warn("cannot tell which keys held the addresses before this start; killing every partner flow", "err", heldErr)
			for a := range p.Peers {
				handed[a] = true
			}
		} else if len(handed) > 0 {
			r.log.Warn("addresses changed keys while extranetd was not running; killing their flows", "addresses", len(handed))
		}
		if ended, err := r.endedWhileDown(since, p.At); err != nil {
			r.log.Warn("list what ended while extranetd was not running", "err", err)
		} else if len(ended) > 0 {
			r.log.Warn("access ended by date while extranetd was not running", "ended", ended, "down_since", since)
			r.mu.Lock()
			r.state.EndedWhileDown, r.state.DownSince = ended, since
			r.mu.Unlock()
			if err := r.o.DB.Update(func(tx *store.Tx) error {
				return tx.Audit(p.At, "extranetd", "dataplane.ended", r.o.Interface, nil, ended)
			}); err != nil {
				r.log.Error("audit what ended while extranetd was not running", "err", err)
			}
		}
		t.linkDown, t.kill = true, handed
		_, err = r.apply(t)
		if errors.Is(err, errRulesAtStart) {
			fatal = err
		}
		return 0, err
	})
	return fatal
}
