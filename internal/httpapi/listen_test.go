package httpapi_test

import (
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/extranetgw/extranet/internal/httpapi"
)

// TestListenSharesOnlyItsOwnDirectory: with a socket group, the socket's
// directory is handed to the group (root:group 0750) when it is the
// daemon's own, the one systemd named in RUNTIME_DIRECTORY or one Listen
// created, and left exactly as it was otherwise, since it may be /run or
// /tmp.
func TestListenSharesOnlyItsOwnDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hand a directory to another group")
	}
	grp, err := user.LookupGroup("daemon")
	if err != nil {
		t.Skip("no group named daemon on this host")
	}
	gid, _ := strconv.Atoi(grp.Gid)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		name     string
		exists   bool
		runtime  bool
		group    string
		wantMode os.FileMode
		wantGid  int
	}{
		{"runtime directory", true, true, "daemon", 0o750, gid},
		{"created directory", false, false, "daemon", 0o750, gid},
		{"someone else's directory", true, false, "daemon", 0o700, 0},
		{"no group", true, true, "", 0o700, 0},
		{"unknown group", true, true, "no-such-group-xq", 0o700, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "extranet")
			if c.exists {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if c.runtime {
				t.Setenv("RUNTIME_DIRECTORY", "/elsewhere:"+dir)
			} else {
				t.Setenv("RUNTIME_DIRECTORY", "")
			}
			l, err := httpapi.Listen(filepath.Join(dir, "s.sock"), c.group, log)
			if err != nil {
				t.Fatal(err)
			}
			l.Close()
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !c.exists {
				// Listen made it; only its mode and group are asserted.
				if fi.Mode().Perm() != c.wantMode || int(fi.Sys().(*syscall.Stat_t).Gid) != c.wantGid {
					t.Errorf("mode %o gid %d, want %o %d", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, c.wantMode, c.wantGid)
				}
				return
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode().Perm() != c.wantMode || int(st.Gid) != c.wantGid || st.Uid != 0 {
				t.Errorf("mode %o owner %d:%d, want %o 0:%d", fi.Mode().Perm(), st.Uid, st.Gid, c.wantMode, c.wantGid)
			}
		})
	}
}

// TestListenRefusesSymlinkedRuntimeDirectory: the directory is changed
// through a descriptor that does not follow a symlink, so a link in its
// place changes nothing behind it.
func TestListenRefusesSymlinkedRuntimeDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hand a directory to another group")
	}
	if _, err := user.LookupGroup("daemon"); err != nil {
		t.Skip("no group named daemon on this host")
	}
	base := t.TempDir()
	target := filepath.Join(base, "target")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "extranet")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RUNTIME_DIRECTORY", link)
	if l, err := httpapi.Listen(filepath.Join(link, "s.sock"), "daemon", slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		l.Close()
		t.Fatal("Listen handed a symlinked directory to the group")
	}
	fi, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Gid != 0 {
		t.Errorf("the link's target changed: mode %o gid %d", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid)
	}
}
