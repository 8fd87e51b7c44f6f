package daemon

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/store"
)

// TestRestoreCommandListsRevokedKeys runs `extranetd restore` over a state
// in which a peer of the backup was revoked since: the command lists it,
// keeps it revoked, and with --allow-revoked restores it.
func TestRestoreCommandListsRevokedKeys(t *testing.T) {
	const key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE="
	dir := t.TempDir()
	dbPath := filepath.Join(dir, DBFile)
	db, err := store.Open(dbPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	put := func(state string) {
		t.Helper()
		if err := db.Update(func(tx *store.Tx) error {
			p := &store.Peer{Org: "acme", Name: "alice", PublicKey: key, State: state, Address: netip.MustParseAddr("100.64.1.1"), Group: store.DefaultGroup}
			if err := tx.ClaimKey(key, p.ID()); err != nil {
				return err
			}
			return tx.PutPeer(p)
		}); err != nil {
			t.Fatal(err)
		}
	}
	put("active")
	backup := writeBackup(t, db, filepath.Join(dir, "backup.db"))
	put("revoked")
	db.Close()

	run := func(args ...string) string {
		t.Helper()
		cmd := NewRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(append([]string{"restore", backup, "--state-dir", dir}, args...))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("restore %v: %v", args, err)
		}
		return out.String()
	}
	state := func() string {
		t.Helper()
		db, err := store.Open(dbPath, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var st string
		db.View(func(tx *store.Tx) error {
			p, err := tx.Peer("acme", "alice")
			if err == nil {
				st = p.State
			}
			return err
		})
		return st
	}

	out := run()
	if !strings.Contains(out, "restored revoked (pass --allow-revoked") || !strings.Contains(out, "acme/alice: active in the backup, revoked (by acme/alice) now") {
		t.Errorf("restore does not list the revoked key:\n%s", out)
	}
	if st := state(); st != "revoked" {
		t.Errorf("acme/alice is %s after the restore, want revoked", st)
	}
	out = run("--allow-revoked")
	if !strings.Contains(out, "Re-enabled by the backup:\n  acme/alice: active in the backup, revoked (by acme/alice) now") {
		t.Errorf("--allow-revoked does not list the peer it re-enables:\n%s", out)
	}
	if st := state(); st != "active" {
		t.Errorf("acme/alice is %s after --allow-revoked, want active", st)
	}
}

// TestRestoreRefusedInACluster: a cluster gateway's start copies the
// cluster's state over its file, so a restore there would be undone
// unnoticed; it is refused with what to do instead, and the file is left.
func TestRestoreRefusedInACluster(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, DBFile), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	backup := writeBackup(t, db, filepath.Join(dir, "backup.db"))
	db.Close()
	cmd := NewRootCmd()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetArgs([]string{"restore", backup, "--state-dir", dir, "--etcd-endpoints", "http://192.0.2.1:2379"})
	err = cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "cluster init") {
		t.Errorf("restore on a cluster gateway: %v, want a refusal that says what to do", err)
	}
}

// writeBackup writes db's backup, as `extranetctl backup` does, to path.
func writeBackup(t *testing.T, db *store.DB, path string) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := db.Backup(f); err != nil {
		t.Fatal(err)
	}
	return path
}
