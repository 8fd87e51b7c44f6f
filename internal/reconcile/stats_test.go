package reconcile

import (
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/wgdev"
	"github.com/extranetgw/extranet/pkg/api"
)

func TestPollStatsWritesOnlyWhatMoved(t *testing.T) {
	e := newEnv(t)
	pub := key(t)
	k, _ := wgtypes.ParseKey(pub)
	e.put(func(tx *store.Tx) error {
		p := &store.Peer{Org: "acme", Name: "a", PublicKey: pub, PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup}
		tx.ClaimKey(pub, p.ID())
		return tx.PutPeer(p)
	})
	rx := func() int64 {
		var v int64
		e.db.View(func(tx *store.Tx) error {
			p, _ := tx.Peer("acme", "a")
			v = p.RxBytes
			return nil
		})
		return v
	}
	seen := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	e.os.stats = []wgdev.PeerStats{{PublicKey: k, LastHandshake: seen, Endpoint: "192.0.2.1:4000", RxBytes: 100, TxBytes: 50}}
	if err := e.r.PollStats(); err != nil {
		t.Fatal(err)
	}
	if got := rx(); got != 100 {
		t.Fatalf("rx = %d after the first poll, want 100", got)
	}

	// Unchanged device statistics: the record is not even read, so a
	// value written meanwhile stays.
	e.put(func(tx *store.Tx) error {
		p, _ := tx.Peer("acme", "a")
		p.RxBytes = 7
		return tx.PutPeer(p)
	})
	if err := e.r.PollStats(); err != nil || rx() != 7 {
		t.Fatalf("an idle peer was rewritten: rx = %d, %v", rx(), err)
	}

	// Moved: the growth is added to the total.
	e.os.stats[0].RxBytes = 130
	if err := e.r.PollStats(); err != nil || rx() != 37 {
		t.Errorf("rx = %d after 30 more bytes on top of 7, want 37 (%v)", rx(), err)
	}
}
