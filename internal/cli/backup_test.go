package cli_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBackupServer answers /v1/backup with handler on a unix socket.
func fakeBackupServer(t *testing.T, handler http.HandlerFunc) *daemon {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return &daemon{t: t, sock: sock, dir: dir}
}

// TestBackupTruncatedStreamFails: a stream that ends before the whole file
// arrived is a failed backup, and leaves neither FILE nor FILE.partial.
func TestBackupTruncatedStreamFails(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		// What a server that failed mid-stream used to send: chunks with
		// no length, ended cleanly.
		"no length": func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("half "))
			w.(http.Flusher).Flush()
			w.Write([]byte("a database"))
		},
		"short of its length": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100000")
			w.Write([]byte("half a database"))
		},
	} {
		t.Run(name, func(t *testing.T) {
			d := fakeBackupServer(t, h)
			file := filepath.Join(d.dir, "backup.db")
			_, errOut, code := d.ctl("backup", file)
			if code == 0 {
				t.Errorf("a truncated backup stream exited 0: %s", errOut)
			}
			for _, p := range []string{file, file + ".partial"} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s is left after a failed backup: %v", filepath.Base(p), err)
				}
			}
		})
	}
}

// TestBackupPartialIsNew: the .partial file is created, never reused: a
// link planted there is not followed.
func TestBackupPartialIsNew(t *testing.T) {
	d := startDaemon(t, "")
	file := filepath.Join(d.dir, "backup.db")
	victim := filepath.Join(d.dir, "victim")
	os.WriteFile(victim, []byte("keep me"), 0o644)
	if err := os.Symlink(victim, file+".partial"); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := d.ctl("backup", file)
	if code == 0 {
		t.Error("backup wrote through an existing FILE.partial")
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Error("backup overwrote the target of a link planted at FILE.partial")
	}
	if !strings.Contains(errOut, "backup.db.partial") {
		t.Errorf("the error does not name the .partial file: %s", errOut)
	}
	os.Remove(file + ".partial")
	d.must("backup", file)
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Errorf("backup after the link is gone: %v %v", fi, err)
	}
}
