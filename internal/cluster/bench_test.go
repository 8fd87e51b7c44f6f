package cluster

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// BenchmarkChange is what sharing the state costs a change: one peer
// written with its audit event, on a single gateway's file and on a
// cluster copy (one etcd transaction more, against a one-member etcd on
// loopback; its disk is this machine's).
func BenchmarkChange(b *testing.B) {
	put := func(db *store.DB, i int) error {
		return db.Update(func(tx *store.Tx) error {
			if err := tx.PutPeer(&store.Peer{Org: "acme", Name: fmt.Sprint("p", i), State: api.StateActive, Group: store.DefaultGroup}); err != nil {
				return err
			}
			return tx.Audit(time.Now(), "root", "peer.issue", fmt.Sprint("acme/p", i), nil, nil)
		})
	}
	b.Run("single", func(b *testing.B) {
		db, err := store.Open(filepath.Join(b.TempDir(), "x.db"), time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		for i := 0; b.Loop(); i++ {
			if err := put(db, i); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cluster", func(b *testing.B) {
		e, _ := startEtcd(b)
		single, err := store.Open(filepath.Join(b.TempDir(), "single.db"), time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Init(b.Context(), single); err != nil {
			b.Fatal(err)
		}
		single.Close()
		g := join(b, e, filepath.Join(b.TempDir(), "a.db"))
		for i := 0; b.Loop(); i++ {
			if err := put(g.db, i); err != nil {
				b.Fatal(err)
			}
		}
	})
}
