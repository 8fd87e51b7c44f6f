package e2e

import (
	"encoding/json"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/extranetgw/extranet/pkg/api"
)

// TestRoles: real unix users, made by the test, reach the daemon through
// its socket group; what each may do is its role's, decided by the daemon
// from the kernel's account of who connected, and every refusal exits 5,
// names the role it needs and is in the audit log.
func TestRoles(t *testing.T) {
	controlPlane(t)
	r := NewRig(t)
	r.Serve(r.IN1, in1Addr, "in1", tcpPorts, nil)
	r.Serve(r.IN2, in2Addr, "in2", tcpPorts, nil)
	// The socket and the CLI where the test's users can reach them.
	shared, err := os.MkdirTemp("", "extranet-roles-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	os.Chmod(shared, 0o755)
	ctl := filepath.Join(shared, "extranetctl")
	raw, err := os.ReadFile(filepath.Join(bin, "extranetctl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ctl, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	group := "xg" + r.id
	addGroup(t, group)
	account := func(name string) *user.User {
		return addUser(t, "--no-create-home", "--gid", group, "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name)
	}
	sponsor, auditor, expirer, nobody := account("xs"+r.id), account("xa"+r.id), account("xe"+r.id), account("xn"+r.id)
	r.Socket = filepath.Join(shared, "extranetd.sock")
	// Enrollment on, for the sponsor's invites (no browser here: the
	// pages are TestEnrollmentInBrowser's).
	cert, key, _, _ := testCA(t, r.Dir)
	r.StartDaemon("--socket-group", group, "--enroll-listen", "127.0.0.1:"+enrollPort, "--enroll-tls-cert", cert,
		"--enroll-tls-key", key, "--enroll-url", "https://localhost:"+enrollPort)

	// A fresh install: the socket group is admin.
	if out := r.MustCTL("role", "list"); !strings.Contains(out, "@"+group) || !strings.Contains(out, "admin") {
		t.Fatalf("first assignments:\n%s", out)
	}
	if _, _, code := r.runAs(t, ctl, nobody, "org", "create", "initech"); code != 0 {
		t.Errorf("a socket-group member of a fresh install cannot create an org: exit %d", code)
	}
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	r.MustCTL("org", "create", "globex", "--grant", "10.10.2.0/24:tcp/8080")
	r.Issue("acme/laptop")
	r.Issue("globex/server")
	r.MustCTL("role", "assign", sponsor.Username, "sponsor", "--org", "acme")
	r.MustCTL("role", "assign", auditor.Username, "auditor")
	r.MustCTL("role", "assign", expirer.Username, "expirer")
	// Tightened as docs/permissions.md says.
	r.MustCTL("role", "revoke", "@"+group, "admin")

	refused := func(u *user.User, needs string, args ...string) {
		t.Helper()
		_, stderr, code := r.runAs(t, ctl, u, args...)
		if code != 5 || !strings.Contains(stderr, "needs the role "+needs) {
			t.Errorf("%s %v: exit %d, %s; want 5 and the role %s", u.Username, args, code, strings.TrimSpace(stderr), needs)
		}
	}
	ok := func(u *user.User, args ...string) string {
		t.Helper()
		out, stderr, code := r.runAs(t, ctl, u, args...)
		if code != 0 {
			t.Errorf("%s %v: exit %d, %s", u.Username, args, code, strings.TrimSpace(stderr))
		}
		return out
	}

	t.Run("sponsor", func(t *testing.T) {
		out := ok(sponsor, "peer", "issue", "acme/phone")
		if !strings.Contains(out, "PrivateKey = ") {
			t.Errorf("the sponsor got no config:\n%s", out)
		}
		ok(sponsor, "peer", "suspend", "acme/phone")
		ok(sponsor, "peer", "resume", "acme/phone")
		ok(sponsor, "peer", "revoke", "acme/phone", "--yes")
		ok(sponsor, "peer", "config", "acme/laptop")
		if out := ok(sponsor, "org", "list"); !strings.Contains(out, "acme") || strings.Contains(out, "globex") {
			t.Errorf("the sponsor's org list:\n%s", out)
		}
		if out := ok(sponsor, "peer", "list"); strings.Contains(out, "globex") {
			t.Errorf("the sponsor sees globex's peers:\n%s", out)
		}
		if out := ok(sponsor, "audit", "-o", "json"); strings.Contains(out, "globex") || !strings.Contains(out, "acme/phone") {
			t.Errorf("the sponsor's audit:\n%s", out)
		}
		refused(sponsor, "admin, auditor or sponsor of globex", "org", "show", "globex")
		refused(sponsor, "admin, auditor or sponsor of globex", "peer", "list", "--org", "globex")
		refused(sponsor, "admin, auditor or sponsor of globex", "audit", "--org", "globex")
		var st api.Status
		if err := json.Unmarshal([]byte(ok(sponsor, "status", "-o", "json")), &st); err != nil || st.Orgs != 1 {
			t.Errorf("the sponsor's status counts %d organisations (%v), want its one", st.Orgs, err)
		}
		refused(sponsor, "admin or sponsor of globex", "peer", "issue", "globex/x")
		refused(sponsor, "admin or sponsor of globex", "peer", "revoke", "globex/server", "--yes")
		refused(sponsor, "admin", "org", "grant", "acme", "10.10.2.0/24")
		// Its organisations' groups, within the ceiling an admin set.
		ok(sponsor, "group", "create", "acme/support", "--grant", "10.10.1.2/32:tcp/22")
		ok(sponsor, "group", "grant", "acme/support", "10.10.1.2/32:tcp/443")
		if _, stderr, code := r.runAs(t, ctl, sponsor, "group", "grant", "acme/support", "10.10.2.0/24"); code != 2 || !strings.Contains(stderr, "outside what organisation \"acme\" may reach") {
			t.Errorf("a sponsor's group grant outside the ceiling: exit %d, %s", code, strings.TrimSpace(stderr))
		}
		ok(sponsor, "peer", "move", "acme/laptop", "--group", "support")
		if out := ok(sponsor, "group", "list", "acme"); !strings.Contains(out, "acme/support") {
			t.Errorf("the sponsor's group list:\n%s", out)
		}
		refused(sponsor, "admin or sponsor of globex", "group", "create", "globex/spy", "--grant", "10.10.2.0/24:tcp/8080")
		refused(sponsor, "admin, auditor or sponsor of globex", "group", "list", "globex")
		refused(sponsor, "admin or sponsor of globex", "peer", "move", "globex/server", "--group", "default")
		// Invites into its organisations, and their requests.
		if out := ok(sponsor, "invite", "create", "acme", "--group", "support"); !strings.Contains(out, "/enroll#") {
			t.Errorf("the sponsor's invite:\n%s", out)
		}
		refused(sponsor, "admin or sponsor of globex", "invite", "create", "globex")
		r.MustCTL("invite", "create", "globex")
		if out := ok(sponsor, "invite", "list"); !strings.Contains(out, "acme/") || strings.Contains(out, "globex") {
			t.Errorf("the sponsor's invite list:\n%s", out)
		}
		ok(sponsor, "request", "list")
		refused(sponsor, "admin, auditor or sponsor of globex", "request", "list", "--org", "globex")
		refused(sponsor, "admin", "export")
		// (Where the sponsor may write: the CLI makes the file first.)
		backup := filepath.Join(os.TempDir(), "xb"+r.id+".db")
		t.Cleanup(func() { os.Remove(backup); os.Remove(backup + ".partial") })
		refused(sponsor, "admin", "backup", backup)
		refused(sponsor, "admin", "role", "assign", sponsor.Username, "admin")
	})

	t.Run("auditor", func(t *testing.T) {
		if out := ok(auditor, "org", "list"); !strings.Contains(out, "acme") || !strings.Contains(out, "globex") {
			t.Errorf("the auditor's org list:\n%s", out)
		}
		ok(auditor, "peer", "list")
		ok(auditor, "peer", "show", "globex/server")
		ok(auditor, "audit")
		if out := ok(auditor, "audit", "verify"); !strings.Contains(out, "hash chain verified") {
			t.Errorf("audit verify: %s", out)
		}
		ok(auditor, "role", "list")
		refused(auditor, "admin or sponsor of acme", "peer", "config", "acme/laptop")
		refused(auditor, "admin or sponsor of acme", "peer", "issue", "acme/x")
		ok(auditor, "group", "show", "acme/support")
		if out := ok(auditor, "invite", "list"); !strings.Contains(out, "acme/") || !strings.Contains(out, "globex/") {
			t.Errorf("the auditor's invite list:\n%s", out)
		}
		refused(auditor, "admin or sponsor of acme", "invite", "create", "acme")
		refused(auditor, "admin or sponsor of acme", "group", "delete", "acme/support", "--move-to", "default", "--yes")
		refused(auditor, "admin", "export")
	})

	t.Run("expirer", func(t *testing.T) {
		ok(expirer, "expire")
		ok(expirer, "expire", "--idle", "1s", "--action", "revoke", "--dry-run")
		if _, stderr, code := r.runAs(t, ctl, expirer, "expire", "--idle", "1s", "--action", "revoke"); code != 5 || !strings.Contains(stderr, "configured policy only") {
			t.Errorf("the expirer chose its own policy: exit %d, %s", code, stderr)
		}
		refused(expirer, "admin, auditor or sponsor", "peer", "list")
		refused(expirer, "admin, auditor or sponsor", "status")
	})

	t.Run("no role", func(t *testing.T) {
		refused(nobody, "admin, auditor or sponsor", "org", "list")
		var w api.WhoAmI
		if err := json.Unmarshal([]byte(ok(nobody, "whoami", "-o", "json")), &w); err != nil || w.User != nobody.Username || len(w.Roles) != 0 {
			t.Errorf("whoami: %+v %v", w, err)
		}
	})

	// Every refusal is in the audit log, with who was refused.
	out := r.MustCTL("audit", "--action", "denied", "-o", "json")
	for _, u := range []*user.User{sponsor, auditor, expirer, nobody} {
		if !strings.Contains(out, `"actor":"`+u.Username+`"`) {
			t.Errorf("no refusal of %s in the audit log", u.Username)
		}
	}
	// A subject that does not exist is refused at once.
	if _, stderr, code := r.CTL("role", "assign", "nosuchuser"+r.id, "auditor"); code != 2 || !strings.Contains(stderr, "no user") {
		t.Errorf("assign to an unknown user: exit %d, %s", code, stderr)
	}
}
