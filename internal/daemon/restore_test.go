package daemon

import (
	"bytes"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/store"
)

// TestRestorePreviewsEveryStateChange: the preview lists a peer suspended
// since the backup and keeps it suspended (--allow-resumed restores it
// active), says of a peer the backup does not know that it is live now
// and not in the backup, and a dry run works while a daemon holds the
// state, by reading it through the daemon's backup API.
func TestRestorePreviewsEveryStateChange(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, DBFile)
	db, err := store.Open(dbPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	put := func(name, key, state string, host byte) {
		t.Helper()
		if err := db.Update(func(tx *store.Tx) error {
			p := &store.Peer{Org: "acme", Name: name, PublicKey: key, State: state, Address: netip.AddrFrom4([4]byte{100, 64, 1, host}), Group: store.DefaultGroup}
			if err := tx.ClaimKey(key, p.ID()); err != nil {
				return err
			}
			return tx.PutPeer(p)
		}); err != nil {
			t.Fatal(err)
		}
	}
	put("laptop", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=", "active", 1)
	backup := writeBackup(t, db, filepath.Join(dir, "backup.db"))
	put("laptop", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=", "suspended", 1)
	put("phone", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAI=", "active", 2)

	// The daemon's stand-in holds the state file as extranetd does and
	// answers GET /v1/backup on its socket.
	sock := filepath.Join(dir, "extranetd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/backup" {
			http.NotFound(w, r)
			return
		}
		var b bytes.Buffer
		if _, err := db.Backup(&b); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
		w.Write(b.Bytes())
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	run := func(args ...string) (string, error) {
		t.Helper()
		cmd := NewRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"restore", backup, "--state-dir", dir, "--socket", sock}, args...))
		err := cmd.Execute()
		return out.String(), err
	}
	before, _ := os.ReadFile(dbPath)
	out, err := run("--dry-run")
	if err != nil {
		t.Fatalf("restore --dry-run while the daemon runs: %v\n%s", err, out)
	}
	for _, want := range []string{
		"kept so (pass --allow-resumed",
		"acme/laptop: active in the backup, suspended now",
		"acme/phone: active now, not in the backup",
		"Dry run",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("restore --dry-run says nothing like %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "acme/phone: active in the backup") {
		t.Errorf("restore --dry-run says a peer not in the backup is in it:\n%s", out)
	}
	if after, _ := os.ReadFile(dbPath); !bytes.Equal(before, after) {
		t.Error("a dry run changed the running daemon's state file")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".restore-*")); len(left) > 0 {
		t.Errorf("a dry run left %v behind", left)
	}
	if out, err := run(); err == nil || !strings.Contains(err.Error(), "stop extranetd") {
		t.Errorf("restore while the daemon runs: %v, want a refusal to stop it first\n%s", err, out)
	}

	srv.Close()
	db.Close()
	if out, err = run("--allow-resumed"); err != nil {
		t.Fatalf("restore --allow-resumed: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Re-enabled by the backup:\n  acme/laptop: active in the backup, suspended now") {
		t.Errorf("--allow-resumed does not list the peer it resumes:\n%s", out)
	}
	db, err = store.Open(dbPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *store.Tx) error {
		p, err := tx.Peer("acme", "laptop")
		if err != nil || p.State != "active" {
			t.Errorf("acme/laptop after --allow-resumed: %+v %v, want active", p, err)
		}
		return nil
	})
}
