package cluster

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// BenchmarkChange is what sharing the state costs a change: one peer
// written with its audit event, on a single gateway's file and on a
// cluster copy (one etcd transaction more, against a one-member etcd on
// loopback; its disk is this machine's), one at a time and from 16
// goroutines at once (ns/op is then per change, with 16 in flight).
func BenchmarkChange(b *testing.B) {
	put := func(db *store.DB, i int) error {
		return db.Update(func(tx *store.Tx) error {
			if err := tx.PutPeer(&store.Peer{Org: "acme", Name: fmt.Sprint("p", i), State: api.StateActive, Group: store.DefaultGroup}); err != nil {
				return err
			}
			return tx.Audit(time.Now(), "root", "peer.issue", fmt.Sprint("acme/p", i), nil, nil)
		})
	}
	// run makes changes on db, one at a time or 16 at once.
	run := func(b *testing.B, db *store.DB, parallel bool) {
		if !parallel {
			for i := 0; b.Loop(); i++ {
				if err := put(db, i); err != nil {
					b.Fatal(err)
				}
			}
			return
		}
		var n atomic.Int64
		b.SetParallelism(8) // 16 goroutines on 2 cores
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := put(db, int(n.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	for _, parallel := range []bool{false, true} {
		suffix := ""
		if parallel {
			suffix = "/16-at-once"
		}
		b.Run("single"+suffix, func(b *testing.B) {
			db, err := store.Open(filepath.Join(b.TempDir(), "x.db"), time.Second)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			run(b, db, parallel)
		})
		b.Run("cluster"+suffix, func(b *testing.B) {
			e, _ := startEtcd(b)
			single, err := store.Open(filepath.Join(b.TempDir(), "single.db"), time.Second)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e.Init(b.Context(), single, ""); err != nil {
				b.Fatal(err)
			}
			single.Close()
			run(b, join(b, e, filepath.Join(b.TempDir(), "a.db")).db, parallel)
		})
	}
}
