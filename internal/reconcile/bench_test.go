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
// `peer issue` latency that is ours rather than the kernel's.
func BenchmarkReconcileAfterChange(b *testing.B) {
	e := newEnv(&testing.T{})
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/12"), 24)
	psk := key(&testing.T{})
	e.db.Update(func(tx *store.Tx) error {
		for o := 1; o <= 1000; o++ {
			name := fmt.Sprintf("org%04d", o)
			block := plan.Block(o)
			tx.PutOrg(&store.Org{ID: uint32(o), Name: name, State: api.StateActive, Blocks: []netip.Prefix{block}})
			addr, _ := ipam.Hosts(block)
			for i := 0; i < 10; i++ {
				tx.PutPeer(&store.Peer{Org: name, Name: fmt.Sprint(i), PublicKey: key(&testing.T{}), PresharedKey: psk, Address: addr, State: api.StateActive})
				addr = addr.Next()
			}
		}
		return nil
	})
	ctx := context.Background()
	e.r.Once(ctx, false)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := e.r.Once(ctx, false); err != nil {
			b.Fatal(err)
		}
	}
}
