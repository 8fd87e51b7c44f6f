package service

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// seedPeers writes orgs×perOrg active peers straight into the store.
func seedPeers(b *testing.B, db *store.DB, orgs, perOrg int, created time.Time) {
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/10"), 24)
	err := db.Update(func(tx *store.Tx) error {
		for o := 1; o <= orgs; o++ {
			id, _ := tx.NextOrgID()
			name := fmt.Sprintf("org%05d", o)
			block := plan.Block(o)
			tx.PutOrg(&store.Org{ID: id, Name: name, State: api.StateActive, Blocks: []netip.Prefix{block}, Groups: []store.Group{{ID: id, Name: store.DefaultGroup}}})
			addr, _ := ipam.Hosts(block)
			for i := 0; i < perOrg; i++ {
				p := &store.Peer{Org: name, Name: fmt.Sprintf("p%d", i), PublicKey: fmt.Sprintf("k%d-%d", o, i), Address: addr,
					State: api.StateActive, CreatedAt: created, Group: store.DefaultGroup}
				if err := tx.PutPeer(p); err != nil {
					return err
				}
				addr = addr.Next()
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkExpire100k times one expire pass over 100,000 peers in the store
// (no kernel), with nothing due, and with every peer due (dry run, which
// decides everything but writes nothing).
func BenchmarkExpire100k(b *testing.B) {
	for _, due := range []bool{false, true} {
		b.Run(fmt.Sprintf("due=%v", due), func(b *testing.B) {
			db, err := store.Open(filepath.Join(b.TempDir(), "x.db"), time.Second)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			clk := &fakeClock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
			seedPeers(b, db, 1000, 100, clk.t.Add(-time.Hour))
			svc := New(Options{DB: db, Clock: clk, Expire: ExpireDefaults{Idle: 30 * 24 * time.Hour, Unused: 14 * 24 * time.Hour, Action: "suspend"}})
			req := api.ExpireRequest{}
			if due {
				req = api.ExpireRequest{Unused: "1m", DryRun: true}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := svc.Expire(context.Background(), req)
				if err != nil {
					b.Fatal(err)
				}
				if due && len(res.Actions) != 100000 {
					b.Fatalf("%d actions", len(res.Actions))
				}
			}
		})
	}
}
