package flowlog

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// StoreDirectory names peers from the store, read again after a change.
// A revoked peer keeps its address in its record, so the flow a revoke
// killed is still named after the peer that had it; where a new peer got
// the address since, the peer in force wins.
type StoreDirectory struct {
	db    *store.DB
	stale atomic.Bool

	mu     sync.Mutex
	byAddr map[netip.Addr]Who
}

// NewStoreDirectory returns a Directory over db.
func NewStoreDirectory(db *store.DB) *StoreDirectory {
	d := &StoreDirectory{db: db}
	d.stale.Store(true)
	return d
}

// Changed says the store changed: the next Lookup reads it again.
func (d *StoreDirectory) Changed() { d.stale.Store(true) }

// Lookup names the peer that holds, or last held, a.
func (d *StoreDirectory) Lookup(a netip.Addr) (Who, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stale.Swap(false) {
		if m, err := d.read(); err == nil {
			d.byAddr = m
		} else {
			d.stale.Store(true)
		}
	}
	w, ok := d.byAddr[a]
	return w, ok
}

func (d *StoreDirectory) read() (map[netip.Addr]Who, error) {
	m := map[netip.Addr]Who{}
	revoked := map[netip.Addr]bool{}
	err := d.db.View(func(tx *store.Tx) error {
		return tx.DataplanePeers(func(sp *store.DataplanePeer) error {
			if !sp.Address.IsValid() {
				return nil
			}
			gone := sp.State == api.StateRevoked
			if _, held := m[sp.Address]; held && gone && !revoked[sp.Address] {
				return nil
			}
			m[sp.Address] = Who{Org: sp.Org, Name: sp.Name, Group: sp.Group}
			revoked[sp.Address] = gone
			return nil
		})
	})
	return m, err
}
