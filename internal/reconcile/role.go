package reconcile

import (
	"errors"
	"fmt"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/wgdev"
)

// A cluster gateway answers partners only while it holds the active role
// (docs/cluster.md). Its data plane is kept warm all the same: the rules,
// the sets and WireGuard's peers follow the state on every gateway, and
// the role moves only the link and the address partners dial.
//
// Promotion goes through a run like any other change, and opens the data
// plane last, once that run found its rules in force. Demotion does not
// wait for a run: it must take the gateway off the partners' path before
// etcd can promote another. Both hold roleMu, so a promotion decided
// before a demotion can never open the link after it.

// Roles is what a cluster gateway's role moves.
type Roles struct {
	// Link is the WireGuard interface's link.
	Link Link
	// Address is the address partners dial, which the active holds.
	Address Address
	// Forget deletes what conntrack remembers of partner flows from an
	// earlier turn (conntrack.Kernel.Forget), before this one begins.
	Forget func() error
}

// Link is the WireGuard link, and the handshakes a promotion starts.
type Link interface {
	Up() error
	Down() error
	Kick(peers []wgdev.Peer) error
}

// Address is the address that moves with the active role.
type Address interface {
	Hold() error
	Release() error
}

// Promote records that this gateway holds the active role under epoch,
// and asks for a full run, which opens the data plane when it is done.
func (r *Reconciler) Promote(epoch int64) {
	r.roleMu.Lock()
	r.active, r.epoch = true, epoch
	r.roleMu.Unlock()
	r.Apply(store.Changes{Orgs: true})
}

// Demote takes this gateway off the partners' path at once: link down,
// then the address released. An error of one does not keep the other from
// being tried.
func (r *Reconciler) Demote() error {
	r.roleMu.Lock()
	defer r.roleMu.Unlock()
	r.active, r.epoch = false, 0
	var errs []error
	if err := r.o.Roles.Link.Down(); err != nil {
		errs = append(errs, err)
	}
	if err := r.o.Roles.Address.Release(); err != nil {
		errs = append(errs, err)
	}
	r.serving = false
	return errors.Join(errs...)
}

// Serving reports whether this gateway answers partners now, and under
// which epoch.
func (r *Reconciler) Serving() (bool, int64) {
	r.roleMu.Lock()
	defer r.roleMu.Unlock()
	if !r.serving {
		return false, 0
	}
	return true, r.epoch
}

// serve opens the data plane of a gateway promoted since the last run, once
// t's rules are in force: the address, then the link, then a handshake with
// every partner seen lately, at the endpoint the active before recorded.
// What takes long (conntrack, the counters, the handshakes) is done outside
// roleMu: a demotion never waits for it.
func (r *Reconciler) serve(t target) error {
	if r.o.Roles == nil || t.policy == nil {
		return nil
	}
	r.roleMu.Lock()
	open := r.active && !r.serving && r.cur.rules != nil && !r.cur.rulesPartial
	epoch := r.epoch
	r.roleMu.Unlock()
	if !open {
		return nil
	}
	if err := r.o.Roles.Forget(); err != nil {
		// Flows another gateway carried since may stall until they time
		// out here; new ones are not affected.
		r.log.Warn("forget the flows of an earlier turn", "err", err)
	}
	// What the device counted in earlier turns was counted then; this
	// turn's traffic is what it counts from now on.
	base, err := r.o.Device.Stats()
	if err != nil {
		return fmt.Errorf("read the device's counters: %w", err)
	}
	r.statsMu.Lock()
	r.lastEndpoints = nil
	r.statsMu.Unlock()

	r.roleMu.Lock()
	if !r.active || r.epoch != epoch || r.serving {
		// Demoted, or promoted anew, meanwhile.
		r.roleMu.Unlock()
		return nil
	}
	r.beginTurn(base)
	if err := r.o.Roles.Address.Hold(); err != nil {
		err = errors.Join(fmt.Errorf("take the address partners dial: %w", err), r.o.Roles.Address.Release())
		r.roleMu.Unlock()
		return err
	}
	if err := r.o.Roles.Link.Up(); err != nil {
		err = errors.Join(fmt.Errorf("open the link: %w", err), r.o.Roles.Address.Release())
		r.roleMu.Unlock()
		return err
	}
	r.serving = true
	r.roleMu.Unlock()

	var kick []wgdev.Peer
	for _, p := range t.peers {
		if p.Endpoint.IsValid() {
			kick = append(kick, p)
		}
	}
	r.log.Info("answering partners", "epoch", epoch, "handshakes_started", len(kick))
	// A demotion meanwhile takes the link down: handshakes started on a
	// link that is down go nowhere.
	if err := r.o.Roles.Link.Kick(kick); err != nil {
		// They come back by their own clients' retry instead.
		r.log.Warn("start handshakes with partners", "err", err)
	}
	return nil
}

// turn is where the device's counters stood when this gateway's turn as the
// active began. The store keeps one device counter per peer, last written
// by whichever gateway answered it; the first record of a peer in a turn
// counts from the device's own counter at the turn's start (zero for a peer
// added since), so traffic counted in an earlier turn here is not counted
// again, whatever the other gateway wrote meanwhile.
type turn struct {
	mu       sync.Mutex
	base     map[wgtypes.Key]wgdev.PeerStats
	recorded map[wgtypes.Key]bool
}

func (r *Reconciler) beginTurn(stats []wgdev.PeerStats) {
	r.turn.mu.Lock()
	defer r.turn.mu.Unlock()
	r.turn.base = make(map[wgtypes.Key]wgdev.PeerStats, len(stats))
	for _, s := range stats {
		r.turn.base[s.PublicKey] = s
	}
	r.turn.recorded = map[wgtypes.Key]bool{}
}

// turnBase is where a peer's device counters started this turn, if it was
// not recorded in it yet.
func (r *Reconciler) turnBase(k wgtypes.Key) (wgdev.PeerStats, bool) {
	r.turn.mu.Lock()
	defer r.turn.mu.Unlock()
	if r.turn.recorded == nil || r.turn.recorded[k] {
		return wgdev.PeerStats{}, false
	}
	return r.turn.base[k], true
}

func (r *Reconciler) recordedInTurn(keys []wgtypes.Key) {
	r.turn.mu.Lock()
	defer r.turn.mu.Unlock()
	if r.turn.recorded == nil {
		return
	}
	for _, k := range keys {
		r.turn.recorded[k] = true
	}
}
