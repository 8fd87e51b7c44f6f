package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/extranetgw/extranet/internal/daemon"
)

// unitPath is the shipped unit, which the test below follows rather than
// copying its settings.
const unitPath = "../../systemd/extranetd.service"

// TestSocketGroupUnderUnit starts extranetd the way systemd/extranetd.service
// does: its socket in a runtime directory created as RuntimeDirectory= and
// RuntimeDirectoryMode= create it (owned by root, the service's user, and
// announced in RUNTIME_DIRECTORY), with the shipped socket group. A real
// unix user in that group, with its groups set as at login, must be able to
// run extranetctl; a user outside it must be refused.
func TestSocketGroupUnderUnit(t *testing.T) {
	controlPlane(t)
	r := NewRig(t)
	for _, tool := range []string{"groupadd", "groupdel", "useradd", "userdel", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (shadow-utils / util-linux)", tool)
		}
	}
	rtName, rtMode := unitRuntimeDirectory(t)
	// The daemon only finds its socket in the runtime directory if the
	// default socket path lies in it.
	if def := filepath.Dir(daemon.Defaults().Socket); def != "/run/"+rtName {
		t.Fatalf("the default socket is in %s, but the unit's RuntimeDirectory=%s is /run/%s", def, rtName, rtName)
	}

	group, member, outsider := newAccounts(t, r.id)

	// <tmp>/run stands for /run (root, 0755); the runtime directory is
	// made the way systemd makes it, root:root with the unit's mode.
	top := t.TempDir()
	run := filepath.Join(top, "run")
	rtDir := filepath.Join(run, rtName)
	mkdirMode(t, run, 0o755)
	mkdirMode(t, rtDir, rtMode)
	// t.TempDir's directories are 0700; the users must get as far as
	// <tmp>/run, as they get to /run on a host.
	for _, d := range []string{filepath.Dir(top), top} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	mustTraverse(t, run)

	r.Socket = filepath.Join(rtDir, "extranetd.sock")
	r.DaemonEnv = []string{"RUNTIME_DIRECTORY=" + rtDir}
	r.StartDaemon("--socket-group", group.Name)

	out, code := ctlAs(t, r, member, "status")
	if code != 0 {
		t.Errorf("member %s of group %s: extranetctl status exit %d: %s", member.Username, group.Name, code, out)
	}
	out, code = ctlAs(t, r, outsider, "status")
	if code == 0 || !strings.Contains(out, "permission denied") {
		t.Errorf("outsider %s: extranetctl status exit %d, want permission denied: %s", outsider.Username, code, out)
	}

	// Reachable by root and the group, by nobody else.
	gid, _ := strconv.Atoi(group.Gid)
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{rtDir, 0o750}, {r.Socket, 0o660}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != c.mode || st.Uid != 0 || int(st.Gid) != gid {
			t.Errorf("%s: mode %o owner %d:%d, want %o 0:%d", c.path, fi.Mode().Perm(), st.Uid, st.Gid, c.mode, gid)
		}
	}
	// The directory around the runtime directory is not the daemon's.
	if fi, err := os.Stat(run); err != nil || fi.Mode().Perm() != 0o755 || fi.Sys().(*syscall.Stat_t).Gid != 0 {
		t.Errorf("%s was changed: %v %v", run, fi.Mode(), err)
	}
}

// unitRuntimeDirectory reads RuntimeDirectory= and RuntimeDirectoryMode=
// from the shipped unit.
func unitRuntimeDirectory(t *testing.T) (string, os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	var name, mode string
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), "=")
		switch {
		case !ok:
		case k == "RuntimeDirectory":
			name = strings.TrimSpace(v)
		case k == "RuntimeDirectoryMode":
			mode = strings.TrimSpace(v)
		}
	}
	if name == "" || strings.ContainsAny(name, " /") {
		t.Fatalf("%s: RuntimeDirectory=%q, want one plain name", unitPath, name)
	}
	// systemd's default when the mode is not given.
	m := uint64(0o755)
	if mode != "" {
		if m, err = strconv.ParseUint(mode, 8, 32); err != nil {
			t.Fatalf("%s: RuntimeDirectoryMode=%q: %v", unitPath, mode, err)
		}
	}
	return name, os.FileMode(m)
}

// newAccounts creates a group, a user in it and a user outside it, with
// names of their own; they are removed when the test ends, failed or not.
func newAccounts(t *testing.T, id string) (group *user.Group, member, outsider *user.User) {
	t.Helper()
	gname, mname, oname := "exsock"+id, "exsock"+id+"m", "exsock"+id+"o"
	group = addGroup(t, gname)
	// As `usermod -aG extranet alice` does: the group is a supplementary
	// one, not the user's primary group.
	common := []string{"--system", "--no-create-home", "--no-user-group", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"}
	member = addUser(t, append(common, "--groups", gname, mname)...)
	outsider = addUser(t, append(common, oname)...)
	return group, member, outsider
}

// addAccount runs add (groupadd or useradd) with args, whose last is the
// name, and del on that name when the test ends, failed or not.
func addAccount(t *testing.T, add, del string, args ...string) {
	t.Helper()
	if out, err := exec.Command(add, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", add, strings.Join(args, " "), err, out)
	}
	name := args[len(args)-1]
	t.Cleanup(func() {
		if out, err := exec.Command(del, name).CombinedOutput(); err != nil {
			t.Errorf("%s %s: %v\n%s", del, name, err, out)
		}
	})
}

func addGroup(t *testing.T, name string) *user.Group {
	t.Helper()
	addAccount(t, "groupadd", "groupdel", "--system", name)
	g, err := user.LookupGroup(name)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// addUser runs useradd with args, the name last.
func addUser(t *testing.T, args ...string) *user.User {
	t.Helper()
	addAccount(t, "useradd", "userdel", args...)
	u, err := user.Lookup(args[len(args)-1])
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// ctlAs runs extranetctl as u with the groups a login gives it, and returns
// its output, errors included, and exit code.
func ctlAs(t *testing.T, r *Rig, u *user.User, args ...string) (string, int) {
	t.Helper()
	stdout, stderr, code := r.runAs(t, filepath.Join(bin, "extranetctl"), u, args...)
	return stdout + stderr, code
}

// runAs runs the extranetctl at ctl as u, with the groups a login gives
// it, against the rig's socket. Like CTL, it keeps what it printed for the
// rig's check that no secret reaches stderr.
func (r *Rig) runAs(t *testing.T, ctl string, u *user.User, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command("setpriv", append([]string{"--reuid", u.Uid, "--regid", u.Gid, "--init-groups", "--",
		ctl, "--socket", r.Socket}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run extranetctl as %s: %v", u.Username, err)
	}
	r.mu.Lock()
	r.secrets = append(r.secrets, secretsIn(o.String())...)
	r.stderr.WriteString(e.String())
	r.mu.Unlock()
	return o.String(), e.String(), code
}

// mkdirMode makes a directory with exactly mode, whatever the umask.
func mkdirMode(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

// mustTraverse fails unless every directory from / to dir lets others in,
// so that a refusal seen later is the runtime directory's doing.
func mustTraverse(t *testing.T, dir string) {
	t.Helper()
	if !filepath.IsAbs(dir) {
		t.Fatalf("%s is not an absolute path", dir)
	}
	// Bounded: an absolute path reaches / within its depth.
	for d, depth := dir, 0; depth < 256; d, depth = filepath.Dir(d), depth+1 {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("%s is %v: other users cannot reach %s", d, fi.Mode(), dir)
		}
		if d == "/" {
			return
		}
	}
	t.Fatalf("%s: too deep", dir)
}
