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

// TestFullRunRecordsWhereARemovedPeerWas: a suspend that a full run applies
// (it came with an organisation change, or while a periodic run was due)
// keeps the peer's last endpoint, as a peers-only run does, so that the
// resume reaches out to the partner at once. Found in the kernel VM, where
// slow runs made the suspend coalesce with a full one.
func TestFullRunRecordsWhereARemovedPeerWas(t *testing.T) {
	e := newEnv(t)
	pub := key(t)
	k, _ := wgtypes.ParseKey(pub)
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
		p := &store.Peer{Org: "acme", Name: "a", PublicKey: pub, PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup}
		tx.ClaimKey(pub, p.ID())
		return tx.PutPeer(p)
	})
	e.once(false)
	e.os.stats = []wgdev.PeerStats{{PublicKey: k, LastHandshake: e.clk.t, Endpoint: "192.0.2.1:4000"}}
	e.put(func(tx *store.Tx) error {
		p, _ := tx.Peer("acme", "a")
		p.State = api.StateSuspended
		return tx.PutPeer(p)
	})
	e.once(false)
	e.db.View(func(tx *store.Tx) error {
		if p, _ := tx.Peer("acme", "a"); p.Endpoint != "192.0.2.1:4000" {
			t.Errorf("after a full run removed the suspended peer, its endpoint is %q, want 192.0.2.1:4000", p.Endpoint)
		}
		return nil
	})
}

// TestPollStatsSkipsPeersThisDeviceNeverSaw: where several gateways share
// one state, a gateway the partner does not use holds the peer with no
// handshake and zero counters. Written, those zeros would read as a reset
// of the device counters the serving gateway stored, and its traffic would
// be counted twice.
func TestPollStatsSkipsPeersThisDeviceNeverSaw(t *testing.T) {
	e := newEnv(t)
	pub := key(t)
	k, _ := wgtypes.ParseKey(pub)
	seen := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	e.put(func(tx *store.Tx) error {
		p := &store.Peer{Org: "acme", Name: "a", PublicKey: pub, PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup,
			LastHandshake: &seen, Endpoint: "192.0.2.1:4000", RxBytes: 500, DevRx: 500}
		tx.ClaimKey(pub, p.ID())
		return tx.PutPeer(p)
	})
	e.os.stats = []wgdev.PeerStats{{PublicKey: k}}
	if err := e.r.PollStats(); err != nil {
		t.Fatal(err)
	}
	var p *store.Peer
	e.db.View(func(tx *store.Tx) error {
		p, _ = tx.Peer("acme", "a")
		return nil
	})
	if p.DevRx != 500 || p.RxBytes != 500 {
		t.Errorf("a device that never saw the peer rewrote its counters: dev %d, total %d; want 500, 500", p.DevRx, p.RxBytes)
	}
}
