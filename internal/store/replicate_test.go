package store

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// recorder is a cluster of one that takes every commit.
type recorder struct {
	fence   int64
	commits [][]Write
}

func (r *recorder) Commit(fence, _ int64, ws []Write) (int64, error) {
	if fence != r.fence {
		return 0, ErrStale
	}
	r.fence++
	r.commits = append(r.commits, ws)
	return r.fence, nil
}

// TestCopyReplaysIntoTheSameState: what a copy commits is every write its
// transaction made, sequences included, so another copy that applies them
// (or rebuilds from a dump) holds the same state.
func TestCopyReplaysIntoTheSameState(t *testing.T) {
	dir := t.TempDir()
	first, err := Open(filepath.Join(dir, "first.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	ws, err := first.Dump()
	if err != nil {
		t.Fatal(err)
	}
	if err := Rebuild(filepath.Join(dir, "second.db"), 0, nil, ws); err != nil {
		t.Fatal(err)
	}
	second, err := Open(filepath.Join(dir, "second.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	rec := &recorder{}
	first.Replicate(rec)
	if err := first.Update(func(tx *Tx) error {
		if err := tx.PutOrg(&Org{ID: 1, Name: "acme", State: "active"}); err != nil {
			return err
		}
		if err := tx.Audit(time.Now(), "root", "org.create", "acme", nil, nil); err != nil {
			return err
		}
		return tx.DeleteOrg("acme")
	}); err != nil {
		t.Fatal(err)
	}
	if len(rec.commits) != 1 {
		t.Fatalf("%d commits, want 1", len(rec.commits))
	}
	ch, err := second.ApplyReplicated(rec.fence, rec.commits[0])
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Orgs {
		t.Error("an organisation written by another copy is not a change the data plane hears of")
	}
	if ch, err := second.ApplyReplicated(rec.fence, rec.commits[0]); err != nil || !ch.Empty() {
		t.Errorf("a change applied twice: %+v, %v; want nothing the second time", ch, err)
	}
	a, _ := first.Dump()
	b, _ := second.Dump()
	if !reflect.DeepEqual(a, b) {
		t.Errorf("the copies differ:\n%v\n%v", a, b)
	}
	if f, _ := first.Fence(); f != rec.fence {
		t.Errorf("the writer's fence is %d, want %d", f, rec.fence)
	}
}

func TestRebuildRefuses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ws, _ := db.Dump()
	if err := Rebuild(path, 1, nil, ws); !errors.Is(err, ErrLocked) {
		t.Errorf("a rebuild under a running daemon: %v, want %v", err, ErrLocked)
	}
	db.Close()
	for i := range ws {
		if ws[i].Bucket == string(bucketMeta) && string(ws[i].Key) == string(keySchema) {
			ws[i].Value = be32(SchemaVersion - 1)
		}
	}
	if err := Rebuild(path, 1, nil, ws); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Errorf("a rebuild from another schema: %v, want a refusal", err)
	}
}
