package reconcile

import (
	"time"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/wgdev"
)

// PollStats copies handshake times, endpoints and traffic from the device
// into the store, in one transaction for all peers that changed and none
// when nothing did. Last-seen only moves forward and traffic totals never go
// back, so a restart or a re-created peer (whose device counters start at
// zero) loses nothing.
func (r *Reconciler) PollStats() error {
	stats, err := r.o.Device.Stats()
	if err != nil {
		return err
	}
	byKey := make(map[string]wgdev.PeerStats, len(stats))
	for _, s := range stats {
		byKey[s.PublicKey.String()] = s
	}
	var changed []*store.Peer
	if err := r.o.DB.View(func(tx *store.Tx) error {
		return tx.Peers("", func(p *store.Peer) error {
			s, ok := byKey[p.PublicKey]
			if ok && merge(p, s) {
				changed = append(changed, p)
			}
			return nil
		})
	}); err != nil {
		return err
	}
	if len(changed) == 0 {
		return nil
	}
	return r.o.DB.Update(func(tx *store.Tx) error {
		for _, c := range changed {
			// Re-read: an admin may have changed the peer since the view.
			p, err := tx.Peer(c.Org, c.Name)
			if err != nil || p.PublicKey != c.PublicKey {
				continue
			}
			p.LastHandshake, p.Endpoint = c.LastHandshake, c.Endpoint
			p.RxBytes, p.TxBytes, p.DevRx, p.DevTx = c.RxBytes, c.TxBytes, c.DevRx, c.DevTx
			if err := tx.PutPeer(p); err != nil {
				return err
			}
		}
		return nil
	})
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
