package reconcile

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// BenchmarkReconcileAfterChange times the reconcile that follows one store
// change with 10,000 peers in 1,000 orgs, against fakes: the part of
// `peer issue` latency that is ours rather than the kernel's. "full" is a
// run that re-reads the whole store (what an org change needs); "peer" is
// the run after a new peer, which reads that peer alone.
func BenchmarkReconcileAfterChange(b *testing.B) {
	t := &testing.T{}
	e := newEnv(t)
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/12"), 24)
	psk := key(t)
	e.db.Update(func(tx *store.Tx) error {
		for o := 1; o <= 1000; o++ {
			name := fmt.Sprintf("org%04d", o)
			block := plan.Block(o)
			tx.PutOrg(&store.Org{ID: uint32(o), Name: name, State: api.StateActive, Blocks: []netip.Prefix{block}, Groups: []store.Group{{ID: uint32(o), Name: store.DefaultGroup}}})
			addr, _ := ipam.Hosts(block)
			for i := 0; i < 10; i++ {
				tx.PutPeer(&store.Peer{Org: name, Name: fmt.Sprint(i), PublicKey: key(t), PresharedKey: psk, Address: addr, State: api.StateActive, Group: store.DefaultGroup})
				addr = addr.Next()
			}
		}
		return nil
	})
	ctx := context.Background()
	if err := e.r.Once(ctx, false); err != nil {
		b.Fatal(err)
	}
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			if err := e.r.Once(ctx, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("peer", func(b *testing.B) {
		// Issue a new peer before each run, spread over the orgs, as the
		// API benchmark of scripts/bench.sh does. The commits are not
		// timed, and need neither fsync nor a batch window here.
		e.db.Bolt().NoSync, e.db.Bolt().MaxBatchDelay = true, 0
		i := 0
		for b.Loop() {
			b.StopTimer()
			org := 1 + i%1000
			first, _ := ipam.Hosts(plan.Block(org))
			addr := first
			for n := 0; n < 10+i/1000; n++ {
				addr = addr.Next()
			}
			ch, err := e.db.Change(func(tx *store.Tx) error {
				return tx.PutPeer(&store.Peer{Org: fmt.Sprintf("org%04d", org), Name: fmt.Sprint("new", i), PublicKey: key(t), PresharedKey: psk, Address: addr, State: api.StateActive, Group: store.DefaultGroup})
			})
			if err != nil {
				b.Fatal(err)
			}
			i++
			b.StartTimer()
			if _, err := e.r.applyPeers(map[string]bool{ch.Peers[0]: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
