package reconcile

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/policy"
	"github.com/extranetgw/extranet/internal/wgdev"
)

// The data plane changes one way. Every run builds a target (the start,
// a full run that read the whole store, a partial one that read the peers a
// request changed) and hands it to apply, which changes the kernel in one
// order, each step only after the one before it held:
//
//  1. rules: a new peer is never on WireGuard before the rules that confine
//     it; when they do not load, the run withdraws only (withdrawals);
//  2. the peer set: each address's group mark; when it cannot be written,
//     a peer whose mark may be another group's stays off WireGuard
//     (heldBack);
//  3. WireGuard's peers: withdrawals and additions in one call;
//  4. what is in force is recorded (commit), then every flow that lost its
//     access dies: only now, with the peer gone from the device, nothing
//     can re-open it. A sweep that fails is retried by the next run;
//  5. a cluster gateway promoted since the last run opens its data plane
//     (role.go), once its rules are in force.

// target is what one run wants of the data plane.
type target struct {
	// policy is the whole wanted policy: rules, and in Peers every peer
	// set entry. nil in a partial run, which leaves the rules alone.
	policy *policy.Policy
	// orgs are the active organisations, from a full read.
	orgs map[string]orgInForce
	// ids are the peers a partial run decides about; nil in a full run,
	// which decides about every peer.
	ids map[string]bool
	// peers are the wanted WireGuard peers, by ORG/NAME, among those
	// decided about, and entries are their peer set entries.
	peers   map[string]wgdev.Peer
	entries map[string]policy.Peer
	// check reads the firewall and the device back to find drift.
	check bool
	// linkDown is the start's run: the link is down, so the rules and the
	// peers load at the same time, and rules that fail are fatal.
	linkDown bool
	// kill are addresses whose every flow dies, whatever the policy
	// allows: at a start, those that changed hands while the daemon was
	// not running.
	kill map[netip.Addr]bool
	// poll reads the peers' endpoints before any leaves the device, so
	// that one coming back can be reached at once.
	poll bool
}

// inForce is what the data plane holds as far as the reconciler knows,
// after the last run that succeeded.
type inForce struct {
	// rules is the policy last loaded into the firewall; its Peers are
	// those of that load. rulesPartial: a load failed since, part way
	// perhaps, so the kernel may hold some of another policy's rules.
	rules        *policy.Policy
	rulesPartial bool
	// set is the peer set's entries as last written. After a write that
	// failed it keeps the entries from before, since the kernel may still
	// hold them: what holds a peer back is the mark it may carry.
	set map[netip.Addr]policy.Peer
	// peers are the WireGuard peers by ORG/NAME, and owner the peer that
	// holds each of their addresses, so that a peer that gave up an
	// address never takes it from the one that holds it now.
	peers map[string]wgdev.Peer
	owner map[netip.Addr]string
	// orgs are the active organisations as of the last full run.
	orgs map[string]orgInForce
}

// knowledge is how far inForce can be trusted.
type knowledge int

const (
	// nothing: no run has put anything in force yet.
	nothing knowledge = iota
	// uncertain: a run failed, and the kernel may hold anything between
	// what is in force and what that run wanted. inForce still says whose
	// flows the next run must kill.
	uncertain
	// known: the kernel holds what inForce says.
	known
)

// errRulesAtStart marks a start whose firewall failed: the link must stay
// down.
var errRulesAtStart = errors.New("the firewall is not in place")

// apply brings the data plane to t and records what is in force. It
// returns what it found drifted and repaired.
func (r *Reconciler) apply(t target) ([]string, error) {
	full := t.policy != nil
	old := r.cur
	var repairs []string
	var errs []error

	// 1. Rules. At the start they load beside WireGuard's peers, since
	// the link is down: nothing passes either way.
	loaded, withdrawing := false, false
	var startSync chan syncOutcome
	if t.linkDown {
		startSync = make(chan syncOutcome, 1)
		want := slices.Collect(maps.Values(t.peers))
		go func() {
			res, err := r.o.Device.SyncPeers(want, false)
			startSync <- syncOutcome{res, err}
		}()
	}
	if full {
		var drift []string
		var err error
		loaded, drift, err = r.loadRules(t.policy, t.check)
		switch {
		case err != nil && t.linkDown:
			<-startSync
			return nil, fmt.Errorf("%w: %w", errRulesAtStart, err)
		case err != nil:
			errs = append(errs, err)
			t = r.withdrawals(t)
			withdrawing = true
		default:
			repairs = append(repairs, drift...)
		}
	}

	// 2. The peer set, unless the rules' load just wrote it whole.
	setFailed := false
	if !loaded {
		if err := r.writePeerSet(t); err != nil {
			errs = append(errs, fmt.Errorf("firewall peer set: %w", err))
			t.peers = r.heldBack(t)
			setFailed = true
		}
	}

	// 3. WireGuard.
	d := r.peerDiff(t)
	kill := d.lost
	for a := range t.kill {
		if kill == nil {
			kill = map[netip.Addr]bool{}
		}
		kill[a] = true
	}
	if t.poll && len(d.remove) > 0 {
		if err := r.PollStats(); err != nil {
			r.log.Warn("read endpoints before removing peers", "err", err)
		}
	}
	var res wgdev.SyncResult
	var err error
	switch {
	case t.linkDown:
		o := <-startSync
		res, err = o.res, o.err
	case full:
		res, err = r.o.Device.SyncPeers(slices.Collect(maps.Values(t.peers)), t.check)
	default:
		res, err = r.o.Device.UpdatePeers(slices.Collect(maps.Values(t.peers)), d.remove)
	}
	if err != nil {
		// Fail closed: whatever WireGuard holds now, the flows of the
		// peers that left die; the next run, a full one, sorts out the
		// rest.
		errs = append(errs, fmt.Errorf("sync WireGuard peers: %w", err))
		// An address whose holder left has its new holder's mark by now,
		// and the device may still hold the one that left: no mark at all
		// until a run gets both right.
		if retaken := retaken(t, d.lost); len(retaken) > 0 {
			if err := r.o.Firewall.UpdatePeerSet(nil, retaken); err != nil {
				errs = append(errs, fmt.Errorf("firewall peer set: %w", err))
			}
		}
		if t.linkDown {
			r.cur = inForce{rules: t.policy, set: maps.Clone(t.policy.Peers)}
			r.know = uncertain
		}
		errs = append(errs, r.sweep(r.sweepPolicy(t), kill))
		return nil, errors.Join(errs...)
	}
	if full && !withdrawing && old.peers != nil && samePeers(old.peers, t.peers) && res.Added+res.Removed+res.Updated > 0 {
		repairs = append(repairs, fmt.Sprintf("wireguard peers changed by hand: %d re-added, %d removed, %d fixed", res.Added, res.Removed, res.Updated))
	}
	repairs = append(repairs, res.Fixed...)

	// 4. Record, then kill what lost its access.
	sweepAll := full && (r.know != known || withdrawing || grantsWithdrawn(old.rules, t.policy))
	r.commit(t, withdrawing, setFailed)
	if sweepAll || len(kill) > 0 || d.regrouped {
		errs = append(errs, r.sweep(r.sweepPolicy(t), kill))
	}

	// 5. A cluster gateway promoted since opens its data plane now.
	if !withdrawing {
		errs = append(errs, r.serve(t))
	}
	return repairs, errors.Join(errs...)
}

type syncOutcome struct {
	res wgdev.SyncResult
	err error
}

// loadRules loads p's rules when they are not those in force, or when
// check finds them drifted; it says whether it loaded them, and the drift.
func (r *Reconciler) loadRules(p *policy.Policy, check bool) (bool, []string, error) {
	if r.know != nothing && !r.cur.rulesPartial && sameRules(r.cur.rules, p) {
		if !check {
			return false, nil, nil
		}
		drift, err := r.o.Firewall.Check()
		if err != nil {
			return false, nil, fmt.Errorf("check firewall: %w", err)
		}
		if len(drift) == 0 {
			return false, nil, nil
		}
		if err := r.o.Firewall.Apply(p); err != nil {
			return false, nil, fmt.Errorf("repair firewall (%v): %w", drift, err)
		}
		return true, drift, nil
	}
	if err := r.o.Firewall.Apply(p); err != nil {
		return false, nil, fmt.Errorf("apply firewall: %w", err)
	}
	return true, nil, nil
}

// withdrawals is what a full run does when the firewall did not take the
// new policy: the rules in force may then be the old ones, the new, or
// some of each, and what the new state takes away must not wait for them.
// Through the peer set, WireGuard and conntrack alone it applies the
// stricter of the old and the new state: WireGuard keeps only the peers
// that both want as they are, less those of organisations whose grants
// narrowed (their old, wider rules may still be loaded) and those whose
// address changed group (heldBack); nothing is added, and flows the new
// policy does not allow, or of a peer that left, die. Before any run
// succeeded the old peers are unknown, and the new state's stand in for
// both.
func (r *Reconciler) withdrawals(t target) target {
	var blocks []netip.Prefix
	if r.know != nothing {
		blocks, _ = narrowed(r.cur.rules, t.policy)
	}
	keep := make(map[string]wgdev.Peer, len(t.peers))
	for id, w := range t.peers {
		old, had := r.cur.peers[id]
		if r.cur.peers != nil && (!had || old.PublicKey != w.PublicKey || old.PresharedKey != w.PresharedKey || old.Address != w.Address) {
			continue
		}
		if ipam.Contains(blocks, w.Address) {
			continue
		}
		// Nothing is added: not even an address the peer set in force
		// does not hold. One it holds in another group is heldBack's.
		if _, ok := r.cur.set[w.Address]; r.know != nothing && !ok {
			continue
		}
		keep[id] = w
	}
	t.peers = keep
	t.peers = r.heldBack(t)
	strict := *t.policy
	strict.Peers = make(map[netip.Addr]policy.Peer, len(t.peers))
	for id, w := range t.peers {
		strict.Peers[w.Address] = t.entries[id]
	}
	t.policy = &strict
	r.log.Warn("the firewall did not take the new state; withdrawing through the peer set, WireGuard and conntrack alone",
		"peers_kept", len(t.peers), "peers_wanted", len(t.entries))
	return t
}

// heldBack is t's peers less those whose address the peer set in force
// gives another group than t does (a peer moved, or an address taken over).
// Only the set's mark keeps a peer to its group, so while the set may hold
// the old mark, nothing else would keep the peer from the old group's
// grants: it stays off WireGuard until a run writes the set.
func (r *Reconciler) heldBack(t target) map[string]wgdev.Peer {
	out := make(map[string]wgdev.Peer, len(t.peers))
	for id, w := range t.peers {
		if old, ok := r.cur.set[w.Address]; ok && old.Group != t.entries[id].Group {
			continue
		}
		out[id] = w
	}
	return out
}

// writePeerSet writes t's peer set entries: the whole set in a full run
// (the firewall writes the difference, or refills a set it lost track
// of), the difference for the peers decided about in a partial one.
func (r *Reconciler) writePeerSet(t target) error {
	if t.policy != nil {
		return r.o.Firewall.SetPeerSet(t.policy.Peers)
	}
	// Gone are the addresses the changed peers held, but for those taken
	// by one of them again.
	gone := map[netip.Addr]bool{}
	for id := range t.ids {
		if old, had := r.cur.peers[id]; had && r.cur.owner[old.Address] == id {
			gone[old.Address] = true
		}
	}
	add := map[netip.Addr]policy.Peer{}
	for id, e := range t.entries {
		a := t.peers[id].Address
		delete(gone, a)
		if old, ok := r.cur.set[a]; !ok || !old.Same(e) {
			add[a] = e
		}
	}
	remove := make([]netip.Addr, 0, len(gone))
	for a := range gone {
		remove = append(remove, a)
	}
	return r.o.Firewall.UpdatePeerSet(add, remove)
}

// diff is what one run changes of WireGuard's peers.
type diff struct {
	// remove are the keys that leave the device.
	remove []wgtypes.Key
	// lost are the addresses of peers that left, moved or changed keys:
	// their flows were opened by a key that no longer has that address.
	lost map[netip.Addr]bool
	// regrouped: an address kept its peer but changed groups; its flows
	// live on only as far as the new group allows.
	regrouped bool
}

// peerDiff compares the peers t decides about with those in force.
func (r *Reconciler) peerDiff(t target) diff {
	var d diff
	check := func(id string) {
		old, had := r.cur.peers[id]
		w, want := t.peers[id]
		if had && (!want || old.PublicKey != w.PublicKey || old.Address != w.Address) {
			if !want || old.PublicKey != w.PublicKey {
				d.remove = append(d.remove, old.PublicKey)
			}
			if d.lost == nil {
				d.lost = map[netip.Addr]bool{}
			}
			d.lost[old.Address] = true
		}
		if want {
			if e, ok := r.cur.set[w.Address]; ok && e.Group != t.entries[id].Group {
				d.regrouped = true
			}
		}
	}
	if t.ids != nil {
		for id := range t.ids {
			check(id)
		}
		return d
	}
	for id := range r.cur.peers {
		check(id)
	}
	for id := range t.peers {
		if _, had := r.cur.peers[id]; !had {
			check(id)
		}
	}
	return d
}

// commit records what the run put in force. A full run replaces the
// record; a partial one changes the peers it decided about, withdrawals
// first, so that an address given up and taken by another peer in the same
// run ends up with the new holder. A run that could only withdraw marks the
// rules as partial, so the next run loads them whatever they are.
func (r *Reconciler) commit(t target, withdrawing, setFailed bool) {
	switch {
	case withdrawing:
		if r.cur.peers != nil {
			r.cur.peers = t.peers
			r.cur.owner = owners(t.peers)
		}
		r.cur.rulesPartial = true
		if r.know == known {
			r.know = uncertain
		}
	case t.policy != nil:
		set := r.cur.set
		if !setFailed || set == nil {
			set = maps.Clone(t.policy.Peers)
		}
		r.cur = inForce{rules: t.policy, set: set, peers: t.peers, owner: owners(t.peers), orgs: t.orgs}
		r.know = known
	default:
		for id := range t.ids {
			if old, had := r.cur.peers[id]; had {
				delete(r.cur.peers, id)
				if r.cur.owner[old.Address] == id {
					delete(r.cur.owner, old.Address)
					if !setFailed {
						delete(r.cur.set, old.Address)
					}
				}
			}
		}
		for id, w := range t.peers {
			r.cur.peers[id] = w
			r.cur.owner[w.Address] = id
			if !setFailed {
				r.cur.set[w.Address] = t.entries[id]
			}
		}
	}
}

// retaken are the addresses of lost that t gives a peer: their new
// holder's mark is in the peer set.
func retaken(t target, lost map[netip.Addr]bool) []netip.Addr {
	var out []netip.Addr
	for _, w := range t.peers {
		if lost[w.Address] {
			out = append(out, w.Address)
		}
	}
	return out
}

func owners(peers map[string]wgdev.Peer) map[netip.Addr]string {
	out := make(map[netip.Addr]string, len(peers))
	for id, w := range peers {
		out[w.Address] = id
	}
	return out
}

// sweepPolicy is the policy flows are judged by after t: t's own in a
// full run, else the rules in force with the peer set in force.
func (r *Reconciler) sweepPolicy(t target) *policy.Policy {
	if t.policy != nil {
		return t.policy
	}
	p := *r.cur.rules
	p.Peers = r.cur.set
	return &p
}

// sweep kills the flows p does not allow, and every flow of the addresses
// in kill, which changed hands or keys: the address may still be allowed,
// but not for the key that opened those flows. Addresses a sweep could not
// kill are kept for the next one.
func (r *Reconciler) sweep(p *policy.Policy, kill map[netip.Addr]bool) error {
	for a := range r.unswept {
		if kill == nil {
			kill = map[netip.Addr]bool{}
		}
		kill[a] = true
	}
	if len(kill) > 0 {
		p = withoutPeers(p, kill)
	}
	n, err := r.o.Sweeper.Sweep(r.o.Plan.Network, p)
	if err != nil {
		r.unswept = kill
		return fmt.Errorf("kill withdrawn flows: %w", err)
	}
	r.unswept = nil
	if n > 0 {
		r.log.Info("killed flows that lost their access", "flows", n)
	}
	return nil
}

func withoutPeers(p *policy.Policy, drop map[netip.Addr]bool) *policy.Policy {
	cp := *p
	cp.Peers = make(map[netip.Addr]policy.Peer, len(p.Peers))
	for a, g := range p.Peers {
		if !drop[a] {
			cp.Peers[a] = g
		}
	}
	return &cp
}
