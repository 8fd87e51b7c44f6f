package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Distinct public keys; restore compares by key only.
const (
	keyA  = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE="
	keyB  = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAI="
	keyC  = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAM="
	keyD  = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQ="
	keyE  = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAU="
	keyF  = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAY="
	keyB2 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAc="
)

// putPeer stores a peer with its key and, unless revoked, its address, as
// the service does.
func putPeer(t *testing.T, db *DB, name, key, state string, host byte) {
	t.Helper()
	err := db.Update(func(tx *Tx) error {
		p := &Peer{Org: "acme", Name: name, PublicKey: key, State: state, Address: netip.AddrFrom4([4]byte{100, 64, 1, host})}
		if err := tx.ClaimKey(key, p.ID()); err != nil {
			return err
		}
		if state == "revoked" {
			if err := tx.ReleaseAddr(p.Address); err != nil {
				return err
			}
		} else if err := tx.ClaimAddr(p.Address, p.ID()); err != nil {
			return err
		}
		return tx.PutPeer(p)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func peerState(t *testing.T, db *DB, name string) (state, addrOwner string) {
	t.Helper()
	if err := db.View(func(tx *Tx) error {
		p, err := tx.Peer("acme", name)
		if err != nil {
			return err
		}
		state, addrOwner = p.State, tx.AddrOwner(p.Address)
		return nil
	}); err != nil {
		t.Fatalf("peer %s: %v", name, err)
	}
	return state, addrOwner
}

// restoreFixture writes a backup, then moves the live state on: a is
// revoked, b is revoked and its name issued again with a new key, e is
// issued and revoked, f is issued. d was never on this gateway.
func restoreFixture(t *testing.T) (backup, current string) {
	t.Helper()
	dir := t.TempDir()
	current = filepath.Join(dir, "extranet.db")
	db, err := Open(current, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	putPeer(t, db, "a", keyA, "active", 1)
	putPeer(t, db, "b", keyB, "suspended", 2)
	putPeer(t, db, "c", keyC, "active", 3)

	// d exists only in the backup (say, issued on a gateway since lost).
	backup = filepath.Join(dir, "backup.db")
	f, err := os.OpenFile(backup, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Backup(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	bdb, err := Open(backup, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	putPeer(t, bdb, "d", keyD, "active", 4)
	bdb.Close()

	putPeer(t, db, "a", keyA, "revoked", 1)
	putPeer(t, db, "b", keyB2, "active", 2)
	putPeer(t, db, "e", keyE, "revoked", 5)
	putPeer(t, db, "f", keyF, "active", 6)
	return backup, current
}

func lastEvent(t *testing.T, db *DB) Event {
	t.Helper()
	var last Event
	if err := db.View(func(tx *Tx) error {
		return tx.Events(0, func(ev *Event) error { last = *ev; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return last
}

// TestRestoreKeepsRevokedKeysRevoked: a backup taken before a revocation
// does not bring the revoked key back, says so, and is audited.
func TestRestoreKeepsRevokedKeysRevoked(t *testing.T) {
	backup, current := restoreFixture(t)
	rep, err := Restore(backup, current, RestoreOptions{Actor: "alice", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(ps []RestoredPeer) (out []string) {
		for _, p := range ps {
			out = append(out, p.Peer)
		}
		return out
	}
	if got := ids(rep.KeptRevoked); !reflect.DeepEqual(got, []string{"acme/a", "acme/b"}) {
		t.Errorf("report: kept revoked %v, want acme/a and acme/b", got)
	}
	if got := ids(rep.ReEnabled); !reflect.DeepEqual(got, []string{"acme/d"}) {
		t.Errorf("report: re-enabled %v, want acme/d (unknown to the current state)", got)
	}
	if got := ids(rep.Lost); !reflect.DeepEqual(got, []string{"acme/b", "acme/f"}) {
		t.Errorf("report: lost %v, want acme/b (its new key) and acme/f", got)
	}
	db, err := Open(current, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for name, want := range map[string]string{"a": "revoked", "b": "revoked", "c": "active", "d": "active"} {
		st, owner := peerState(t, db, name)
		if st != want {
			t.Errorf("acme/%s is %s after the restore, want %s", name, st, want)
		}
		if want == "revoked" && owner != "" {
			t.Errorf("revoked acme/%s still holds its address (owner %q)", name, owner)
		}
	}
	if err := db.View(func(tx *Tx) error {
		if owner := tx.KeyOwner(keyE); owner != "acme/e" {
			t.Errorf("key of acme/e, revoked after the backup, is free again after the restore (owner %q)", owner)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ev := lastEvent(t, db)
	if ev.Action != "state.restore" {
		t.Fatalf("last audit event %q, want state.restore", ev.Action)
	}
	var after RestoreReport
	if err := json.Unmarshal(ev.After, &after); err != nil {
		t.Fatal(err)
	}
	if ev.Actor != "alice" || !reflect.DeepEqual(after.KeptRevoked, rep.KeptRevoked) || !reflect.DeepEqual(after.ReEnabled, rep.ReEnabled) {
		t.Errorf("restore event by %q lists %+v, want alice and %+v", ev.Actor, after, rep)
	}
	if err := db.View(func(tx *Tx) error {
		if at, why, err := tx.VerifyAudit(); at != 0 || err != nil {
			t.Errorf("audit chain after the restore broken at %d: %s %v", at, why, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreAllowRevoked brings revoked keys back when asked, and lists
// and audits each one.
func TestRestoreAllowRevoked(t *testing.T) {
	backup, current := restoreFixture(t)
	rep, err := Restore(backup, current, RestoreOptions{Actor: "alice", Now: time.Now(), AllowRevoked: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.KeptRevoked) != 0 || len(rep.ReEnabled) != 3 || rep.ReEnabled[0].Peer != "acme/a" || rep.ReEnabled[0].Now != "revoked (by acme/a)" {
		t.Errorf("report %+v, want acme/a, acme/b and acme/d re-enabled", rep)
	}
	db, err := Open(current, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for name, want := range map[string]string{"a": "active", "b": "suspended", "d": "active"} {
		if st, _ := peerState(t, db, name); st != want {
			t.Errorf("acme/%s is %s, want %s as in the backup", name, st, want)
		}
	}
	var after RestoreReport
	if ev := lastEvent(t, db); ev.Action != "state.restore" || json.Unmarshal(ev.After, &after) != nil || len(after.ReEnabled) != 3 {
		t.Errorf("restore event %s %s, want the three re-enabled peers", ev.Action, ev.After)
	}
}

// TestRestoreDryRunAndLock: a dry run replaces nothing, and a held state
// file is refused.
func TestRestoreDryRunAndLock(t *testing.T) {
	backup, current := restoreFixture(t)
	before, _ := os.ReadFile(current)
	rep, err := Restore(backup, current, RestoreOptions{Actor: "alice", DryRun: true})
	if err != nil || len(rep.KeptRevoked) != 2 {
		t.Fatalf("dry run: %+v %v", rep, err)
	}
	if after, _ := os.ReadFile(current); !bytes.Equal(before, after) {
		t.Error("a dry run changed the state file")
	}
	if _, err := os.Stat(current + ".restore"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dry run left its temporary file: %v", err)
	}
	db, err := Open(current, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Restore(backup, current, RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "stop extranetd") {
		t.Errorf("restore over a held file: %v", err)
	}
}

// suspendFixture writes a backup in which c and h are active and g is
// suspended, then moves the live state on: c is suspended, h expired and
// g resumed. Every key is live in both.
func suspendFixture(t *testing.T) (backup, current string) {
	t.Helper()
	dir := t.TempDir()
	current = filepath.Join(dir, "extranet.db")
	db, err := Open(current, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	putPeer(t, db, "c", keyC, "active", 3)
	putPeer(t, db, "g", keyD, "suspended", 4)
	putPeer(t, db, "h", keyE, "active", 5)
	backup = filepath.Join(dir, "backup.db")
	f, err := os.OpenFile(backup, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Backup(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	putPeer(t, db, "c", keyC, "suspended", 3)
	putPeer(t, db, "g", keyD, "active", 4)
	putPeer(t, db, "h", keyE, "expired", 5)
	return backup, current
}

// TestRestoreKeepsSuspendedPeersSuspended: a peer suspended (or expired)
// since the backup is listed and stays so, unless --allow-resumed; every
// other peer whose state the restore changes is listed too.
func TestRestoreKeepsSuspendedPeersSuspended(t *testing.T) {
	line := func(ps []RestoredPeer) (out []string) {
		for _, p := range ps {
			out = append(out, p.Peer+" "+p.State+" "+p.Now)
		}
		return out
	}
	for _, allow := range []bool{false, true} {
		backup, current := suspendFixture(t)
		rep, err := Restore(backup, current, RestoreOptions{Actor: "alice", Now: time.Now(), AllowResumed: allow})
		if err != nil {
			t.Fatal(err)
		}
		closed := []string{"acme/c active suspended", "acme/h active expired"}
		wantKept, wantRe, want := closed, []string(nil), map[string]string{"c": "suspended", "g": "suspended", "h": "expired"}
		if allow {
			wantKept, wantRe, want = nil, closed, map[string]string{"c": "active", "g": "suspended", "h": "active"}
		}
		if got := line(rep.KeptSuspended); !reflect.DeepEqual(got, wantKept) {
			t.Errorf("allow-resumed=%v: kept suspended %q, want %q", allow, got, wantKept)
		}
		if got := line(rep.ReEnabled); !reflect.DeepEqual(got, wantRe) {
			t.Errorf("allow-resumed=%v: re-enabled %q, want %q", allow, got, wantRe)
		}
		if got := line(rep.Changed); !reflect.DeepEqual(got, []string{"acme/g suspended active"}) {
			t.Errorf("allow-resumed=%v: changed %q, want acme/g (resumed since, suspended in the backup)", allow, got)
		}
		db, err := Open(current, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for name, st := range want {
			if got, _ := peerState(t, db, name); got != st {
				t.Errorf("allow-resumed=%v: acme/%s is %s after the restore, want %s", allow, name, got, st)
			}
		}
		var after RestoreReport
		if ev := lastEvent(t, db); json.Unmarshal(ev.After, &after) != nil || !reflect.DeepEqual(after.KeptSuspended, rep.KeptSuspended) || !reflect.DeepEqual(after.Changed, rep.Changed) {
			t.Errorf("allow-resumed=%v: restore event %s does not list the report %+v", allow, ev.After, rep)
		}
		db.Close()
	}
}
