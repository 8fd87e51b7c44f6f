package reconcile

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// restarted is a reconciler as a new daemon process makes it, on the same
// store and the same kernel as e's.
func (e *env) restarted() *Reconciler { return New(e.r.o) }

// TestStartKillsFlowsOfAddressesThatChangedHands: a restore while the
// daemon was stopped gave an address another key. The kernel's peer set, as
// the last run left it, says which key held it, and the start kills the
// address's flows, though the new holder's group would allow them.
func TestStartKillsFlowsOfAddressesThatChangedHands(t *testing.T) {
	e := newEnv(t)
	addr, other := netip.MustParseAddr("100.64.1.1"), netip.MustParseAddr("100.64.1.2")
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
		tx.PutPeer(&store.Peer{Org: "acme", Name: "a", PublicKey: key(t), PresharedKey: key(t), Address: addr, State: api.StateActive, Group: store.DefaultGroup})
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "b", PublicKey: key(t), PresharedKey: key(t), Address: other, State: api.StateActive, Group: store.DefaultGroup})
	})
	e.once(false)
	// The restore: a's address now belongs to c, under another key.
	e.put(func(tx *store.Tx) error {
		a, err := tx.Peer("acme", "a")
		if err != nil {
			return err
		}
		if err := tx.DeletePeer(a); err != nil {
			return err
		}
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "c", PublicKey: key(t), PresharedKey: key(t), Address: addr, State: api.StateActive, Group: store.DefaultGroup})
	})
	r := e.restarted()
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if _, alive := e.os.swept.Peers[addr]; alive {
		t.Errorf("the start's sweep let the flows of %s live on, though its key changed: swept %s", addr, e.os.sweeps[len(e.os.sweeps)-1])
	}
	if _, alive := e.os.swept.Peers[other]; !alive {
		t.Errorf("the start's sweep killed the flows of %s, whose key did not change", other)
	}

	// An entry the kernel no longer holds (its date passed while the
	// daemon was down) vouches for nothing: its address's flows die too.
	delete(e.os.set, other)
	if err := e.restarted().Start(); err != nil {
		t.Fatal(err)
	}
	if _, alive := e.os.swept.Peers[other]; alive {
		t.Errorf("the flows of %s, which the kernel's set no longer held, lived on", other)
	}
}

// TestStartSaysWhatEndedWhileDown: dates that passed after the daemon last
// ran are reported (status, log and audit), those before are not.
func TestStartSaysWhatEndedWhileDown(t *testing.T) {
	e := newEnv(t)
	now := e.clk.t
	alive := filepath.Join(t.TempDir(), "alive")
	if err := os.WriteFile(alive, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	down := now.Add(-time.Hour)
	if err := os.Chtimes(alive, down, down); err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	e.put(func(tx *store.Tx) error {
		tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []store.Group{{ID: 1, Name: store.DefaultGroup}}})
		tx.PutOrg(&store.Org{ID: 2, Name: "globex", State: api.StateActive, Expires: at(-10 * time.Minute), Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.2.0/24")}, Groups: []store.Group{{ID: 2, Name: store.DefaultGroup}}})
		tx.PutPeer(&store.Peer{Org: "acme", Name: "gone", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.1"), State: api.StateActive, Group: store.DefaultGroup, Expires: at(-30 * time.Minute)})
		tx.PutPeer(&store.Peer{Org: "acme", Name: "long-gone", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.2"), State: api.StateActive, Group: store.DefaultGroup, Expires: at(-2 * time.Hour)})
		tx.PutPeer(&store.Peer{Org: "acme", Name: "later", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.1.3"), State: api.StateActive, Group: store.DefaultGroup, Expires: at(time.Hour)})
		return tx.PutPeer(&store.Peer{Org: "globex", Name: "x", PublicKey: key(t), PresharedKey: key(t), Address: netip.MustParseAddr("100.64.2.1"), State: api.StateActive, Group: store.DefaultGroup})
	})
	e.r.o.AliveFile = alive
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	st := e.r.State()
	want := []string{"acme/gone (" + now.Add(-30*time.Minute).Format(time.RFC3339) + ")", "org globex (" + now.Add(-10*time.Minute).Format(time.RFC3339) + ")"}
	if !slices.Equal(st.EndedWhileDown, want) || !st.DownSince.Equal(down) {
		t.Errorf("ended while down: %q since %s, want %q since %s", st.EndedWhileDown, st.DownSince, want, down)
	}
	var audited string
	e.db.View(func(tx *store.Tx) error {
		return tx.Events(0, func(ev *store.Event) error {
			if ev.Action == "dataplane.ended" && ev.Actor == "extranetd" {
				audited = string(ev.After)
			}
			return nil
		})
	})
	if !strings.Contains(audited, "acme/gone") {
		t.Error("what ended while the daemon was down is not in the audit log")
	}
	// The start's successful run says the daemon runs again.
	if fi, err := os.Stat(alive); err != nil || !fi.ModTime().Equal(now) {
		t.Errorf("the alive file says %v (%v), want %s", fi.ModTime(), err, now)
	}
}
