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
func (r *Reconciler) PollStats() error {
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
	if len(moved) > 0 {
		err := r.o.DB.Update(func(tx *store.Tx) error {
			for _, s := range moved {
				pub := s.PublicKey.String()
				org, name, ok := strings.Cut(tx.KeyOwner(pub), "/")
				if !ok {
					continue
				}
				p, err := tx.Peer(org, name)
				// A rotated peer's old key still names it; its statistics
				// are not the peer's any more.
				if err != nil || p.PublicKey != pub || !merge(p, s) {
					continue
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
	}
	r.lastStats = seen
	return r.o.Device.EndKeepalives(moved)
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
