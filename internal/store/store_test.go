package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func TestOpenModeAndLock(t *testing.T) {
	_, path := open(t)
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o", fi.Mode().Perm())
	}
	start := time.Now()
	_, err := Open(path, 200*time.Millisecond)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("second open took %v", d)
	}
}

func TestPeersPrefixAndIDs(t *testing.T) {
	db, path := open(t)
	err := db.Update(func(tx *Tx) error {
		for _, p := range []Peer{{Org: "a", Name: "x"}, {Org: "ab", Name: "x"}, {Org: "a", Name: "y"}} {
			if err := tx.PutPeer(&p); err != nil {
				return err
			}
		}
		id1, _ := tx.NextOrgID()
		id2, _ := tx.NextOrgID()
		if id1 != 1 || id2 != 2 {
			return fmt.Errorf("ids %d %d", id1, id2)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	db.View(func(tx *Tx) error {
		return tx.Peers("a", func(p *Peer) error { got = append(got, p.ID()); return nil })
	})
	if fmt.Sprint(got) != "[a/x a/y]" {
		t.Errorf("peers of a = %v (org ab must not leak in)", got)
	}
	db.Close()
	db2, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	db2.Update(func(tx *Tx) error {
		if id, _ := tx.NextOrgID(); id != 3 {
			t.Errorf("org id after reopen = %d, want 3 (ids are never reused)", id)
		}
		return nil
	})
}

func TestAddresses(t *testing.T) {
	db, _ := open(t)
	a := netip.MustParseAddr
	db.Update(func(tx *Tx) error {
		for _, s := range []string{"100.64.1.1", "100.64.1.2", "100.64.1.4"} {
			tx.ClaimAddr(a(s), "p")
		}
		if got, ok := tx.FreeAddr(a("100.64.1.1"), a("100.64.1.254")); !ok || got != a("100.64.1.3") {
			t.Errorf("free = %v %v, want the gap 100.64.1.3", got, ok)
		}
		if _, ok := tx.FreeAddr(a("100.64.1.1"), a("100.64.1.2")); ok {
			t.Error("full range reported free")
		}
		tx.ReleaseAddr(a("100.64.1.1"))
		if got, _ := tx.FreeAddr(a("100.64.1.1"), a("100.64.1.2")); got != a("100.64.1.1") {
			t.Errorf("released address not free: %v", got)
		}
		if tx.AddrOwner(a("100.64.1.2")) != "p" {
			t.Error("owner lost")
		}
		return nil
	})
}

func TestFailedUpdateWritesNothing(t *testing.T) {
	db, _ := open(t)
	boom := errors.New("boom")
	err := db.Update(func(tx *Tx) error {
		tx.PutOrg(&Org{Name: "acme"})
		tx.ClaimKey("k", "acme/p")
		tx.Audit(time.Now(), "root", "org.create", "acme", nil, nil)
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	db.View(func(tx *Tx) error {
		if _, err := tx.Org("acme"); !errors.Is(err, ErrNotFound) {
			t.Error("org written by a failed update")
		}
		if tx.KeyOwner("k") != "" {
			t.Error("key claimed by a failed update")
		}
		n := 0
		tx.Events(0, func(*Event) error { n++; return nil })
		if n != 0 {
			t.Error("audit event written by a failed update")
		}
		return nil
	})
}

func TestConcurrentClaims(t *testing.T) {
	db, _ := open(t)
	first, last := netip.MustParseAddr("100.64.1.1"), netip.MustParseAddr("100.64.1.254")
	var wg sync.WaitGroup
	got := make([]netip.Addr, 50)
	for i := range got {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := db.Update(func(tx *Tx) error {
				a, ok := tx.FreeAddr(first, last)
				if !ok {
					return errors.New("full")
				}
				got[i] = a
				return tx.ClaimAddr(a, fmt.Sprint(i))
			})
			if err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, a := range got {
		if seen[a] {
			t.Fatalf("%s claimed twice", a)
		}
		seen[a] = true
	}
}

func audit(t *testing.T, db *DB, n int) {
	for i := 0; i < n; i++ {
		if err := db.Update(func(tx *Tx) error {
			return tx.Audit(time.Now(), "root", "org.create", fmt.Sprint(i), nil, map[string]int{"i": i})
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func key(seq uint64) []byte { return be64(seq) }

func TestAuditChain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(b *bolt.Bucket)
		broken uint64
	}{
		{"intact", func(*bolt.Bucket) {}, 0},
		{"edited", func(b *bolt.Bucket) {
			var ev map[string]any
			json.Unmarshal(b.Get(key(2)), &ev)
			ev["actor"] = "mallory"
			raw, _ := json.Marshal(ev)
			b.Put(key(2), raw)
		}, 2},
		{"middle removed", func(b *bolt.Bucket) { b.Delete(key(2)) }, 3},
		{"first removed", func(b *bolt.Bucket) { b.Delete(key(1)) }, 2},
		{"last removed", func(b *bolt.Bucket) { b.Delete(key(4)) }, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, _ := open(t)
			audit(t, db, 4)
			db.Bolt().Update(func(tx *bolt.Tx) error { tc.tamper(tx.Bucket([]byte("audit"))); return nil })
			db.View(func(tx *Tx) error {
				at, why, err := tx.VerifyAudit()
				if err != nil || at != tc.broken {
					t.Errorf("broken at %d (%s), %v; want %d", at, why, err, tc.broken)
				}
				return nil
			})
		})
	}
}

func TestChangeReportsWhatTheDataPlaneDependsOn(t *testing.T) {
	db, _ := open(t)
	ch, err := db.Change(func(tx *Tx) error {
		tx.PutOrg(&Org{ID: 1, Name: "acme"})
		tx.PutPeer(&Peer{Org: "acme", Name: "a"})
		tx.PutPeer(&Peer{Org: "acme", Name: "a"})
		return tx.PutPeer(&Peer{Org: "acme", Name: "b"})
	})
	sort.Strings(ch.Peers)
	if err != nil || !ch.Orgs || strings.Join(ch.Peers, " ") != "acme/a acme/b" {
		t.Errorf("changes = %+v, %v; want orgs and acme/a acme/b once each", ch, err)
	}
	ch, _ = db.Change(func(tx *Tx) error {
		p, _ := tx.Peer("acme", "b")
		return tx.DeletePeer(p)
	})
	if ch.Orgs || len(ch.Peers) != 1 || ch.Peers[0] != "acme/b" {
		t.Errorf("delete: changes = %+v", ch)
	}
	if _, err := db.Change(func(tx *Tx) error { return tx.ClaimKey("k", "acme/a") }); err != nil {
		t.Fatal(err)
	}
	ch, err = db.Change(func(tx *Tx) error {
		tx.PutPeer(&Peer{Org: "acme", Name: "c"})
		return errors.New("refused")
	})
	if err == nil || !ch.Empty() {
		t.Errorf("a failed transaction reported changes %+v", ch)
	}
	db.View(func(tx *Tx) error {
		if _, err := tx.DataplanePeer("acme/a"); err != nil {
			t.Errorf("DataplanePeer(acme/a): %v", err)
		}
		if _, err := tx.DataplanePeer("acme/b"); !errors.Is(err, ErrNotFound) {
			t.Errorf("DataplanePeer of a deleted peer: %v, want ErrNotFound", err)
		}
		return nil
	})
}

// TestMigrationGivesEveryOrgItsDefaultGroup: a state file of schema 3,
// from before groups, opens with every organisation holding a default
// group (which has its grants) and every peer in it, the data-plane mirror
// included, so what each peer reaches is what it reached before.
func TestMigrationGivesEveryOrgItsDefaultGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for _, m := range migrations[:3] {
			if err := m(tx); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keySchema, be32(3)); err != nil {
			return err
		}
		if err := meta.Put(keyNextOrgID, be32(3)); err != nil {
			return err
		}
		for _, o := range []string{
			`{"id":1,"name":"acme","state":"active","grants":["10.20.0.0/24"],"blocks":["100.64.1.0/24"]}`,
			`{"id":2,"name":"globex","state":"active","grants":[],"blocks":[]}`,
		} {
			var rec struct{ Name string }
			json.Unmarshal([]byte(o), &rec)
			if err := tx.Bucket(bucketOrgs).Put([]byte(rec.Name), []byte(o)); err != nil {
				return err
			}
		}
		p := `{"org":"acme","name":"bob","public_key":"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=","preshared_key":"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=","address":"100.64.1.2","state":"active","endpoint":"192.0.2.1:4242"}`
		if err := tx.Bucket(bucketPeers).Put([]byte("acme/bob"), []byte(p)); err != nil {
			return err
		}
		// The mirror as schema 3 wrote it: no group.
		var old Peer
		json.Unmarshal([]byte(p), &old)
		mirror := encodeDataplane(&old)
		mirror = append(mirror[:85], []byte(old.Endpoint)...)
		return tx.Bucket(bucketDataplane).Put([]byte("acme/bob"), mirror)
	})
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *Tx) error {
		ids := map[uint32]bool{}
		defer func() {
			if len(ids) != 2 {
				t.Errorf("group ids %v, want two", ids)
			}
		}()
		for _, name := range []string{"acme", "globex"} {
			o, err := tx.Org(name)
			if err != nil {
				return err
			}
			if len(o.Groups) != 1 || o.Groups[0].Name != DefaultGroup || o.Groups[0].ID == 0 || ids[o.Groups[0].ID] {
				t.Errorf("%s's groups after the migration: %+v", name, o.Groups)
				continue
			}
			ids[o.Groups[0].ID] = true
			if g := o.GroupGrants(&o.Groups[0]); fmt.Sprint(g) != fmt.Sprint(o.Grants) {
				t.Errorf("%s's default group reaches %v, not the org's %v", name, g, o.Grants)
			}
		}
		p, err := tx.Peer("acme", "bob")
		if err != nil {
			return err
		}
		dp, err := tx.DataplanePeer("acme/bob")
		if err != nil {
			return err
		}
		if p.Group != DefaultGroup || dp.Group != DefaultGroup || dp.Endpoint != "192.0.2.1:4242" || dp.Address != p.Address {
			t.Errorf("bob after the migration: group %q, mirror %+v", p.Group, dp)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// New groups never take an id the migration gave out.
	err = db.Update(func(tx *Tx) error {
		id, err := tx.NextGroupID()
		if id <= 2 {
			t.Errorf("next group id %d was given out already", id)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
