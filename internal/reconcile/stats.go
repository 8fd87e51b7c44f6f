package reconcile

import (
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/wgdev"
)

// PollStats copies handshake times, endpoints and traffic from the device
// into the store. Only peers whose device statistics moved since the last
// poll are read and written, in one transaction: at 10,000 peers most are
// idle at any moment, and decoding every record every few seconds was the
// daemon's largest steady cost. Last-seen only moves forward and traffic
// totals never go back, so a restart or a re-created peer (whose device
// counters start at zero) loses nothing.
//
// A cluster gateway that takes turns answering partners records only while
// it answers them: a standby's device holds what it saw when it last did,
// which the active's news has overtaken.
func (r *Reconciler) PollStats() error {
	if !r.recording() {
		return nil
	}
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	stats, err := r.o.Device.Stats()
	if err != nil {
		return err
	}
	seen := make(map[wgtypes.Key]wgdev.PeerStats, len(stats))
	var moved []wgdev.PeerStats
	for _, s := range stats {
		seen[s.PublicKey] = s
		// A peer this device never had a handshake with has nothing to
		// say. Where gateways share one state, it is another gateway's
		// partner, and zero counters would read as a reset of the ones
		// that gateway stored.
		if s.LastHandshake.IsZero() {
			continue
		}
		if last, ok := r.lastStats[s.PublicKey]; !ok || !sameStats(last, s) {
			moved = append(moved, s)
		}
	}
	if err := r.record(moved); err != nil {
		return err
	}
	r.lastStats = seen
	return r.o.Device.EndKeepalives(moved)
}

// recording reports whether this gateway records what its device sees.
func (r *Reconciler) recording() bool {
	if r.o.Roles == nil {
		return true
	}
	serving, _ := r.Serving()
	return serving
}

// PollEndpoints records, on the active of a cluster, the endpoint of every
// partner whose endpoint moved since it last looked, so that the gateway
// that takes over next reaches each partner where it is now (Kick), not
// after the partner's own retry. It runs more often than PollStats and
// writes far less: endpoints change when partners connect or roam.
func (r *Reconciler) PollEndpoints() error {
	if r.o.Roles == nil || !r.recording() {
		return nil
	}
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	stats, err := r.o.Device.Stats()
	if err != nil {
		return err
	}
	var moved []wgdev.PeerStats
	for _, s := range stats {
		if !s.LastHandshake.IsZero() && s.Endpoint != "" && r.lastEndpoints[s.PublicKey] != s.Endpoint {
			moved = append(moved, s)
		}
	}
	if err := r.record(moved); err != nil {
		return err
	}
	if r.lastEndpoints == nil {
		r.lastEndpoints = map[wgtypes.Key]string{}
	}
	for _, s := range moved {
		r.lastEndpoints[s.PublicKey] = s.Endpoint
	}
	return nil
}

// record writes what moved into the store, in one transaction.
func (r *Reconciler) record(moved []wgdev.PeerStats) error {
	if len(moved) > 0 {
		// A cluster gateway writes only under the promotion it answers
		// partners by; 0 on a single gateway.
		var epoch int64
		if r.o.Roles != nil {
			serving, e := r.Serving()
			if !serving {
				return nil
			}
			epoch = e
		}
		var firsts []wgtypes.Key
		err := r.o.DB.UpdateUnder(epoch, func(tx *store.Tx) error {
			firsts = firsts[:0]
			for _, s := range moved {
				pub := s.PublicKey.String()
				org, name, ok := strings.Cut(tx.KeyOwner(pub), "/")
				if !ok {
					continue
				}
				p, err := tx.Peer(org, name)
				// A rotated peer's old key still names it; its statistics
				// are not the peer's any more.
				if err != nil || p.PublicKey != pub {
					continue
				}
				base, first := r.turnBase(s.PublicKey)
				if first {
					p.DevRx, p.DevTx = base.RxBytes, base.TxBytes
				}
				if !merge(p, s) {
					continue
				}
				if first {
					firsts = append(firsts, s.PublicKey)
				}
				if err := tx.PutPeer(p); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			// Forget nothing: the next poll tries these peers again.
			return err
		}
		r.recordedInTurn(firsts)
	}
	return nil
}

func sameStats(a, b wgdev.PeerStats) bool {
	return a.LastHandshake.Equal(b.LastHandshake) && a.Endpoint == b.Endpoint && a.RxBytes == b.RxBytes && a.TxBytes == b.TxBytes
}

// merge folds device statistics into a peer and reports whether it changed.
func merge(p *store.Peer, s wgdev.PeerStats) bool {
	changed := false
	if !s.LastHandshake.IsZero() && (p.LastHandshake == nil || s.LastHandshake.After(*p.LastHandshake)) {
		t := s.LastHandshake.UTC().Truncate(time.Second)
		if p.LastHandshake == nil || !t.Equal(*p.LastHandshake) {
			p.LastHandshake = &t
			changed = true
		}
	}
	if s.Endpoint != "" && s.Endpoint != p.Endpoint {
		p.Endpoint = s.Endpoint
		changed = true
	}
	p.RxBytes, p.DevRx, changed = advance(p.RxBytes, p.DevRx, s.RxBytes, changed)
	p.TxBytes, p.DevTx, changed = advance(p.TxBytes, p.DevTx, s.TxBytes, changed)
	return changed
}

// advance adds the growth of a device counter to a total; a counter below
// its last value was reset, and all of it is new.
func advance(total, last, now int64, changed bool) (int64, int64, bool) {
	if now == last {
		return total, last, changed
	}
	if now > last {
		return total + now - last, now, true
	}
	return total + now, now, true
}
