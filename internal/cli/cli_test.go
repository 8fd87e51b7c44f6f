package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/activity"
	"github.com/extranetgw/extranet/internal/cli"
	"github.com/extranetgw/extranet/internal/httpapi"
	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

var ctlBin string

// TestMain builds the real extranetctl binary: these tests run it as an
// admin would, against the real API on a real socket and bbolt file.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "extranetctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Tests run the binary as other users too.
	os.Chmod(dir, 0o755)
	ctlBin = filepath.Join(dir, "extranetctl")
	build := exec.Command("go", "build", "-o", ctlBin, "../../cmd/extranetctl")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build extranetctl: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type daemon struct {
	t    *testing.T
	sock string
	dir  string
}

func startDaemon(t *testing.T, endpoint string) *daemon {
	return startDaemonGroup(t, endpoint, "")
}

func startDaemonGroup(t *testing.T, endpoint, group string) *daemon {
	return startDaemonWith(t, endpoint, group, nil)
}

// startDaemonWith starts a daemon whose changes go to applier, and that
// reads partner activity from flows, if given.
func startDaemonWith(t *testing.T, endpoint, group string, applier service.Applier, flows ...service.ActivityReader) *daemon {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "extranet.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 24)
	if _, err := service.BootstrapRoles(db, group, "extranet-expire", time.Now()); err != nil {
		t.Fatal(err)
	}
	opts := service.Options{DB: db, Plan: plan, Endpoint: endpoint, GatewayPublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", Applier: applier}
	if len(flows) > 0 {
		opts.Activity = flows[0]
	}
	svc := service.New(opts)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httpapi.New(svc, log)
	sock := filepath.Join(dir, "s.sock")
	if group != "" {
		// Other users must be able to reach the socket's directory.
		sockDir, err := os.MkdirTemp("", "extranetctl-sock-")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(sockDir, 0o755)
		t.Cleanup(func() { os.RemoveAll(sockDir) })
		sock = filepath.Join(sockDir, "s.sock")
	}
	l, err := httpapi.Listen(sock, group, log)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return &daemon{t: t, sock: sock, dir: dir}
}

// ctl runs extranetctl with no terminal on stdin, as a script would.
func (d *daemon) ctl(args ...string) (string, string, int) {
	cmd := exec.Command(ctlBin, args...)
	cmd.Env = append(os.Environ(), "EXTRANET_SOCKET="+d.sock)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func (d *daemon) must(args ...string) string {
	d.t.Helper()
	out, errOut, code := d.ctl(args...)
	if code != 0 {
		d.t.Fatalf("extranetctl %v: exit %d: %s", args, code, errOut)
	}
	return out
}

func TestTablesAndJSON(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	d.must("org", "create", "acme", "--grant", "10.20.0.0/24", "--grant", "10.20.5.10/32:tcp/443", "--display-name", "ACME Corp")
	d.must("org", "create", "globex")
	out := d.must("org", "list")
	if !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "acme") || !strings.Contains(out, "10.20.0.0/24,10.20.5.10/32:tcp/443") {
		t.Errorf("org list table:\n%s", out)
	}
	var orgs []api.Org
	if err := json.Unmarshal([]byte(d.must("org", "list", "-o", "json")), &orgs); err != nil || len(orgs) != 2 {
		t.Fatalf("org list -o json: %v %+v", err, orgs)
	}
	conf := d.must("peer", "issue", "acme/laptop")
	if !strings.Contains(conf, "[Interface]") || !strings.Contains(conf, "AllowedIPs = 10.20.0.0/24") {
		t.Errorf("issued config:\n%s", conf)
	}
	out = d.must("peer", "list")
	if !strings.Contains(out, "acme/laptop") || !strings.Contains(out, "never connected") {
		t.Errorf("peer list:\n%s", out)
	}
	var p api.Peer
	if err := json.Unmarshal([]byte(d.must("peer", "show", "acme/laptop", "-o", "json")), &p); err != nil || p.Address != "100.64.1.1" {
		t.Errorf("peer show -o json: %v %+v", err, p)
	}
	out = d.must("audit")
	if !strings.Contains(out, "org.create") || !strings.Contains(out, "peer.issue") {
		t.Errorf("audit:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(d.must("audit", "-o", "json")), "\n")
	if len(lines) != 3 {
		t.Errorf("audit -o json: want one JSON object per line for 3 events, got %d lines", len(lines))
	}
	for _, l := range lines {
		var ev api.AuditEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Actor == "" {
			t.Errorf("audit line %q: %v", l, err)
		}
	}
	if out := d.must("audit", "verify"); !strings.Contains(out, "intact") {
		t.Errorf("audit verify: %s", out)
	}
}

func TestExitCodesAndErrors(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	d.must("org", "create", "acme")
	d.must("peer", "issue", "acme/laptop")
	cases := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"org", "create"}, 2, "NAME"},
		{[]string{"org", "frobnicate"}, 2, ""},
		{[]string{"org", "list", "--bogus"}, 2, "bogus"},
		{[]string{"org", "list", "-o", "yaml"}, 2, "yaml"},
		{[]string{"org", "create", "Bad_Name"}, 2, "Bad_Name"},
		{[]string{"org", "grant", "acme", "10.0.0.1/8"}, 2, "10.0.0.0/8"},
		{[]string{"org", "show", "nope"}, 3, "nope"},
		{[]string{"peer", "show", "acme/nope"}, 3, "acme/nope"},
		{[]string{"peer", "show", "acme"}, 2, "ORG/NAME"},
		{[]string{"org", "create", "acme"}, 4, "already exists"},
		{[]string{"peer", "issue", "acme/laptop"}, 4, "already exists"},
		{[]string{"org", "delete", "acme", "--yes"}, 4, "--force"},
		{[]string{"peer", "revoke", "acme/laptop"}, 2, "--yes"},
		{[]string{"peer", "issue", "acme/x", "--expires", "yesterday"}, 2, "yesterday"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			_, errOut, code := d.ctl(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, errOut)
			}
			if !strings.Contains(errOut, tc.contains) {
				t.Errorf("stderr %q does not name %q", errOut, tc.contains)
			}
		})
	}
	_, errOut, code := d.ctl("org", "show", "nope", "-o", "json")
	var ae api.Error
	if code != 3 || json.Unmarshal([]byte(errOut), &ae) != nil || ae.Code != api.CodeNotFound {
		t.Errorf("-o json error: exit %d, stderr %q", code, errOut)
	}
	d.must("org", "delete", "acme", "--force", "--yes")
	if _, _, code := d.ctl("org", "show", "acme"); code != 3 {
		t.Errorf("org still there after delete --force")
	}
}

func TestDaemonDown(t *testing.T) {
	cmd := exec.Command(ctlBin, "--socket", filepath.Join(t.TempDir(), "none.sock"), "org", "list")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit = %v, want 1", err)
	}
	if !strings.Contains(string(out), "not running") {
		t.Errorf("message does not say the daemon is down: %s", out)
	}
}

// TestImportHelpNamesEveryColumn: the header import's help shows is the one
// export writes, group column and rows included.
func TestImportHelpNamesEveryColumn(t *testing.T) {
	out, err := exec.Command(ctlBin, "import", "--help").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	help := strings.Join(strings.Fields(string(out)), " ")
	if want := strings.Join(service.CSVHeader, ","); !strings.Contains(strings.ReplaceAll(help, ", ", ","), want) {
		t.Errorf("import --help does not show the header %s:\n%s", want, out)
	}
	if !strings.Contains(help, "group row") {
		t.Errorf("import --help does not say what a group row holds:\n%s", out)
	}
}

// TestUsageHintOnlyForUsage: "Run 'extranetctl --help'" follows a mistake
// in how the command was typed, not a value the daemon refused, whose
// message already names the value and the fix.
func TestUsageHintOnlyForUsage(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	d.must("org", "create", "acme", "--grant", "10.20.0.0/24")
	_, errOut, code := d.ctl("group", "create", "acme/lab", "--grant", "10.30.0.0/16")
	if code != 2 || !strings.Contains(errOut, "outside what organisation") || strings.Contains(errOut, "--help") {
		t.Errorf("a grant outside the ceiling: exit %d, %q; want 2, the reason, no usage hint", code, errOut)
	}
	_, errOut, code = d.ctl("group", "create", "acme/lab", "--no-such-flag")
	if code != 2 || !strings.Contains(errOut, "--help") {
		t.Errorf("an unknown flag: exit %d, %q; want 2 and the usage hint", code, errOut)
	}
}

// TestStatusWaitsForAStartingDaemon: a script that starts extranetd in the
// background goes on with `status --wait` instead of a loop of its own.
func TestStatusWaitsForAStartingDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "late.sock")
	start := time.Now()
	out, err := exec.Command(ctlBin, "--socket", sock, "status", "--wait", "300ms").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not running") {
		t.Fatalf("nothing listens, --wait 300ms: %v\n%s", err, out)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("gave up after %v, before its 300ms", took)
	}
	// A socket that takes the connection and never answers: the wait
	// still ends on time.
	mute := filepath.Join(t.TempDir(), "mute.sock")
	ml, err := net.Listen("unix", mute)
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Close()
	go func() {
		for {
			c, err := ml.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start = time.Now()
	if out, err := exec.Command(ctlBin, "--socket", mute, "status", "--wait", "500ms").CombinedOutput(); err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("a daemon that never answers, --wait 500ms: %v after %v\n%s", err, time.Since(start), out)
	}
	cmd := exec.Command(ctlBin, "--socket", sock, "status", "--wait", "30s")
	var o bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &o
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	d := startDaemon(t, "vpn.example.com:51820")
	if err := os.Rename(d.sock, sock); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(o.String(), "Endpoint") {
		t.Errorf("a daemon that answers after 300ms, --wait 30s: %v\n%s", err, o.String())
	}
}

func TestIssueWithoutEndpointSaysHow(t *testing.T) {
	d := startDaemon(t, "")
	d.must("org", "create", "acme")
	_, errOut, code := d.ctl("peer", "issue", "acme/laptop")
	if code != 4 || !strings.Contains(errOut, "--endpoint") {
		t.Errorf("exit %d, stderr %q; want 4 and advice naming --endpoint", code, errOut)
	}
}

func TestConfigFileIsPrivate(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	d.must("org", "create", "acme", "--grant", "10.20.0.0/24")
	path := filepath.Join(d.dir, "laptop.conf")
	out := d.must("peer", "issue", "acme/laptop", "--out", path)
	if strings.Contains(out, "PrivateKey") {
		t.Errorf("--out also printed the config to stdout")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %o, want 600", fi.Mode().Perm())
	}
	png := filepath.Join(d.dir, "phone.png")
	d.must("peer", "issue", "acme/phone", "--qr-png", png)
	raw, err := os.ReadFile(png)
	if err != nil || !bytes.HasPrefix(raw, []byte("\x89PNG")) {
		t.Errorf("--qr-png did not write a PNG: %v", err)
	}
	if fi, err := os.Stat(png); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("QR code PNG mode %o, want 600", fi.Mode().Perm())
	}
	if qr := d.must("peer", "rotate", "acme/phone", "--qr"); len(qr) < 100 {
		t.Errorf("--qr printed %d bytes", len(qr))
	}
}

// TestQRNeedsAPrivateKey: the WireGuard phone apps cannot import a QR code
// without a private key (iOS says only "Invalid QR Code"), so extranetctl
// refuses to make one, before it changes anything, and says what to do.
func TestQRNeedsAPrivateKey(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	d.must("org", "create", "acme", "--grant", "10.20.0.0/24")
	d.must("peer", "issue", "acme/laptop")
	const partnerKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	png := filepath.Join(d.dir, "x.png")
	for _, tc := range []struct {
		args   []string
		advice string
	}{
		{[]string{"peer", "issue", "acme/phone", "--public-key", partnerKey, "--qr"}, "issue without --public-key"},
		{[]string{"peer", "issue", "acme/phone", "--public-key", partnerKey, "--qr-png", png}, "issue without --public-key"},
		{[]string{"peer", "rotate", "acme/laptop", "--public-key", partnerKey, "--qr"}, "rotate without --public-key"},
		{[]string{"peer", "config", "acme/laptop", "--qr"}, "peer rotate acme/laptop --qr"},
		{[]string{"peer", "config", "acme/laptop", "--qr-png", png}, "peer rotate acme/laptop --qr"},
	} {
		out, errOut, code := d.ctl(tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "Invalid QR Code") || !strings.Contains(errOut, "--out") || !strings.Contains(errOut, tc.advice) {
			t.Errorf("%v: exit %d, stdout %d bytes, stderr %q; want exit 2, nothing printed, and why with what to do instead (%q)", tc.args, code, len(out), errOut, tc.advice)
		}
	}
	if _, _, code := d.ctl("peer", "show", "acme/phone"); code != 3 {
		t.Errorf("a refused QR code still issued acme/phone")
	}
	if _, err := os.Stat(png); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused QR code still wrote %s: %v", png, err)
	}
	var p api.Peer
	if err := json.Unmarshal([]byte(d.must("peer", "show", "acme/laptop", "-o", "json")), &p); err != nil || p.PublicKey == partnerKey {
		t.Errorf("a refused QR code still rotated acme/laptop: %v %+v", err, p)
	}
}

// TestConfigCommentFitsTheKey: the comment above PrivateKey says what the
// partner does with this file, which depends on who made the key pair and
// whether this output still holds the private key.
func TestConfigCommentFitsTheKey(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	d.must("org", "create", "acme", "--grant", "10.20.0.0/24")
	for _, tc := range []struct {
		what      string
		args      []string
		want, not string
	}{
		{"issued with a gateway-made key", []string{"peer", "issue", "acme/laptop"},
			"# Keep this file secret: it holds this device's private key.", "paste"},
		{"printed again", []string{"peer", "config", "acme/laptop"},
			"# Paste this device's private key from the config first issued for it", "made on the device"},
		{"issued for the partner's own key", []string{"peer", "issue", "acme/server", "--public-key", "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="},
			"# Paste this device's private key (from the WireGuard app or `wg genkey`)", "made on the device itself"},
	} {
		out := d.must(tc.args...)
		if !strings.Contains(out, tc.want) || strings.Contains(strings.ToLower(out), tc.not) {
			t.Errorf("config %s does not say %q (or says %q):\n%s", tc.what, tc.want, tc.not, out)
		}
	}
}

// TestOutNameWarning: wg-quick and the Android app name the tunnel after
// the config file, NAME.conf with NAME in [a-zA-Z0-9_=+.-]{1,15}, and
// refuse any other file. The config is still written, with a warning that
// says why and suggests a name that imports.
func TestOutNameWarning(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	d.must("org", "create", "acme", "--grant", "10.20.0.0/24")
	for i, tc := range []struct {
		file string
		warn []string // empty: no warning
	}{
		{"laptop-1.conf", nil},
		{"a_b=c+d.e-f.conf", nil},
		{"laptop-of-alice-smith.conf", []string{"21 characters", "at most 15", filepath.Join(d.dir, "laptop-of-alice.conf")}},
		{"my laptop.conf", []string{`" "`, filepath.Join(d.dir, "my-laptop.conf")}},
		{"laptop.txt", []string{"does not end in .conf", filepath.Join(d.dir, "laptop.conf")}},
	} {
		path := filepath.Join(d.dir, tc.file)
		_, errOut, code := d.ctl("peer", "issue", fmt.Sprintf("acme/p%d", i), "--out", path)
		if code != 0 {
			t.Fatalf("--out %q: exit %d: %s", tc.file, code, errOut)
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("--out %q: config not written: %v", tc.file, err)
		}
		if len(tc.warn) == 0 && strings.Contains(errOut, "warning") {
			t.Errorf("--out %q: needless warning: %s", tc.file, errOut)
		}
		for _, w := range tc.warn {
			if !strings.Contains(errOut, "warning: ") || !strings.Contains(errOut, w) {
				t.Errorf("--out %q: stderr does not warn with %q:\n%s", tc.file, w, errOut)
			}
		}
	}
}

// TestConfirmWording: a destructive verb without --yes says, in one
// sentence, what cannot be undone and how to go ahead; at a terminal it
// asks the same way.
func TestConfirmWording(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	d.must("org", "create", "acme")
	d.must("peer", "issue", "acme/alice")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"peer", "revoke", "acme/alice"}, "error: revoking acme/alice cannot be undone: pass --yes to confirm"},
		{[]string{"org", "delete", "acme"}, "error: deleting organisation acme cannot be undone: pass --yes to confirm"},
		{[]string{"org", "delete", "acme", "--force"}, "error: deleting organisation acme and revoking its active peers cannot be undone: pass --yes to confirm"},
	} {
		_, errOut, code := d.ctl(tc.args...)
		if first, _, _ := strings.Cut(errOut, "\n"); code != 2 || first != tc.want {
			t.Errorf("%v: exit %d, first line %q; want exit 2 and %q", tc.args, code, first, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"peer", "revoke", "acme/alice"}, `Revoking acme/alice cannot be undone. Type "acme/alice" to confirm: `},
		{[]string{"org", "delete", "acme"}, `Deleting organisation acme cannot be undone. Type "acme" to confirm: `},
	} {
		var errOut bytes.Buffer
		env := &cli.Env{
			In: strings.NewReader("no\n"), Out: io.Discard, ErrOut: &errOut,
			Now: time.Now, IsTTY: func() bool { return true }, Getenv: func(string) string { return "" },
		}
		cli.Main(append([]string{"--socket", d.sock}, tc.args...), env)
		if !strings.HasPrefix(errOut.String(), tc.want) {
			t.Errorf("%v: prompt %q, want %q", tc.args, errOut.String(), tc.want)
		}
	}
	if out := d.must("peer", "show", "acme/alice"); !strings.Contains(out, "active") {
		t.Errorf("a declined revoke revoked:\n%s", out)
	}
}

func TestCompletion(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if out := d.must("completion", sh); !strings.Contains(out, "extranetctl") {
			t.Errorf("completion %s does not mention extranetctl", sh)
		}
	}
	d.must("org", "create", "acme", "--grant", "10.20.0.0/24")
	if out := d.must("__complete", "org", "show", "ac"); !strings.Contains(out, "acme") {
		t.Errorf("dynamic completion of org names: %q", out)
	}
	d.must("group", "create", "acme/support", "--grant", "10.20.0.10/32:tcp/22")
	d.must("peer", "issue", "acme/bob", "--public-key", "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
	for _, tc := range []struct {
		args []string
		want string
	}{
		// Groups are ORG/GROUP: the organisation first, then its groups.
		{[]string{"group", "show", "ac"}, "acme/\n"},
		{[]string{"group", "grant", "acme/s"}, "acme/support\n"},
		{[]string{"group", "list", "a"}, "acme\n"},
		{[]string{"peer", "issue", "acme/new", "--group", ""}, "default\nsupport\n"},
		{[]string{"peer", "move", "acme/bob", "--group", "s"}, "support\n"},
		{[]string{"group", "delete", "acme/support", "--move-to", "d"}, "default\n"},
	} {
		out := d.must(append([]string{"__complete"}, tc.args...)...)
		if !strings.HasPrefix(out, tc.want) {
			t.Errorf("completion of %v: %q, want it to start %q", tc.args, out, tc.want)
		}
	}
}

// TestSocketGroup proves the kernel enforces who may talk to the daemon: a
// user outside the socket's group is refused, a member gets in and is
// named in the audit log by the kernel's account of who connected.
func TestSocketGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run commands as another user")
	}
	grp, err := user.LookupGroup("daemon")
	if err != nil {
		t.Skip("no group named daemon on this host")
	}
	gid, _ := strconv.Atoi(grp.Gid)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user named nobody on this host")
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	d := startDaemonGroup(t, "vpn.example.com:51820", "daemon")
	fi, err := os.Stat(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o660 || int(st.Gid) != gid {
		t.Fatalf("socket mode %o gid %d, want 660 and group daemon (%d)", fi.Mode().Perm(), st.Gid, gid)
	}
	as := func(gid int, args ...string) (string, int) {
		cmd := exec.Command(ctlBin, append([]string{"--socket", d.sock}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := as(65534, "org", "create", "intruder"); code == 0 || !strings.Contains(out, "permission denied") {
		t.Errorf("outsider: exit %d, %s", code, out)
	}
	if out, code := as(gid, "org", "create", "member"); code != 0 {
		t.Fatalf("group member refused: exit %d, %s", code, out)
	}
	if out := d.must("audit", "--org", "member"); !strings.Contains(out, "nobody") {
		t.Errorf("audit does not name the member's user:\n%s", out)
	}
	if _, _, code := d.ctl("org", "show", "intruder"); code != 3 {
		t.Error("the outsider's org exists")
	}
}

// refusingKernel answers every change with a failed reconcile.
type refusingKernel struct{}

func (refusingKernel) Apply(store.Changes) <-chan error {
	ch := make(chan error, 1)
	ch <- errors.New("apply firewall: iptables-restore: exit status 4")
	return ch
}

// TestNotInForce: a change the kernel refused fails the command, but an
// issued peer's config is still printed, since its private key exists
// nowhere else.
func TestNotInForce(t *testing.T) {
	d := startDaemonWith(t, "vpn.example.com:51820", "", refusingKernel{})
	_, errOut, code := d.ctl("org", "create", "acme", "--grant", "10.1.0.0/16")
	if code != 1 || !strings.Contains(errOut, "not in force") {
		t.Errorf("org create: exit %d, %s", code, errOut)
	}
	out, errOut, code := d.ctl("peer", "issue", "acme/laptop")
	if code != 1 || !strings.Contains(out, "PrivateKey = ") || !strings.Contains(errOut, "not in force") {
		t.Errorf("peer issue: exit %d, config printed %v, stderr %s", code, strings.Contains(out, "PrivateKey = "), errOut)
	}
}

// TestOutFailureLosesNoKey: a private key the gateway made exists only in
// the config handed over, so `--out` (and `--qr-png`) are checked before
// anything is issued or rotated, and a write that fails after all prints
// the config rather than losing it.
func TestOutFailureLosesNoKey(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	d.must("org", "create", "acme", "--grant", "10.20.0.0/24")
	d.must("peer", "issue", "acme/laptop")
	keyOf := func(id string) string {
		var p api.Peer
		if err := json.Unmarshal([]byte(d.must("peer", "show", id, "-o", "json")), &p); err != nil {
			t.Fatal(err)
		}
		return p.PublicKey
	}
	key := keyOf("acme/laptop")
	missing := filepath.Join(d.dir, "no-such-dir", "x.conf")
	// A named pipe stands for /dev/null and other files that are not
	// regular; a reader keeps the open from waiting.
	pipe := filepath.Join(d.dir, "pipe.conf")
	if err := syscall.Mkfifo(pipe, 0o644); err != nil {
		t.Fatal(err)
	}
	reader, err := os.OpenFile(pipe, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	for _, args := range [][]string{
		{"peer", "issue", "acme/x", "--out", missing},
		{"peer", "issue", "acme/x", "--out", d.dir},
		{"peer", "issue", "acme/x", "--out", pipe},
		{"peer", "issue", "acme/x", "--qr-png", missing},
		{"peer", "rotate", "acme/laptop", "--out", missing},
		{"peer", "rotate", "acme/laptop", "--out", d.dir},
	} {
		out, errOut, code := d.ctl(args...)
		if code != 2 || out != "" || !strings.Contains(errOut, args[4]) || !strings.Contains(errOut, "nothing was") {
			t.Errorf("%v: exit %d, stdout %d bytes, stderr %q; want exit 2, naming the file and saying nothing was done", args, code, len(out), errOut)
		}
	}
	if _, _, code := d.ctl("peer", "show", "acme/x"); code != 3 {
		t.Error("acme/x was issued for a file that cannot be written")
	}
	if keyOf("acme/laptop") != key {
		t.Error("acme/laptop was rotated for a file that cannot be written")
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused --out left %s behind: %v", filepath.Dir(missing), err)
	}
	if fi, err := os.Stat(pipe); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("a refused --out changed the mode of %s: %v %v", pipe, fi.Mode(), err)
	}

	// A file that opens but cannot take the config (here, a file size
	// limit of zero): the peer is issued, so its config goes to standard
	// output, the command says why and fails.
	limited := func(args ...string) (string, string, int) {
		cmd := exec.Command("sh", append([]string{"-c", `ulimit -f 0 && exec "$0" "$@"`, ctlBin}, args...)...)
		cmd.Env = append(os.Environ(), "EXTRANET_SOCKET="+d.sock)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}
	for _, tc := range []struct {
		args []string
		id   string
	}{
		{[]string{"peer", "issue", "acme/y", "--out", filepath.Join(d.dir, "y.conf")}, "acme/y"},
		{[]string{"peer", "rotate", "acme/laptop", "--out", filepath.Join(d.dir, "laptop.conf")}, "acme/laptop"},
	} {
		out, errOut, code := limited(tc.args...)
		if code != 1 || !strings.Contains(out, "PrivateKey = ") || !strings.Contains(errOut, tc.args[4]) || !strings.Contains(errOut, "standard output") {
			t.Errorf("%v with no room for the file: exit %d, config printed %v, stderr %q; want exit 1, the config on stdout and why on stderr", tc.args, code, strings.Contains(out, "PrivateKey = "), errOut)
		}
		if _, err := os.Stat(tc.args[4]); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v: the file that could not be written is still there: %v", tc.args, err)
		}
	}
	if _, _, code := d.ctl("peer", "show", "acme/y"); code != 0 {
		t.Error("acme/y was not issued")
	}

	// An existing file is still replaced, and made private.
	old := filepath.Join(d.dir, "old.conf")
	if err := os.WriteFile(old, []byte("stale\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.must("peer", "issue", "acme/z", "--out", old)
	raw, err := os.ReadFile(old)
	if err != nil || strings.Contains(string(raw), "stale") || !strings.Contains(string(raw), "PrivateKey = ") {
		t.Errorf("--out on an existing file: %v\n%s", err, raw)
	}
	if fi, err := os.Stat(old); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("--out on an existing file: mode %v, %v; want 600", fi.Mode().Perm(), err)
	}
}

// flowBook is a fake activity log: it keeps the flows of the organisation
// a query names (every one without), of those the caller may see, and
// remembers the last query.
type flowBook struct {
	mu    sync.Mutex
	flows []api.Flow
	last  activity.Query
}

func (b *flowBook) Read(q activity.Query) ([]api.Flow, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last = q
	var out []api.Flow
	for _, f := range b.flows {
		if (q.Org == "" || f.Org == q.Org) && (q.Orgs == nil || slices.Contains(q.Orgs, f.Org)) && !f.Closed.Before(q.Since) {
			out = append(out, f)
		}
	}
	return out, nil
}

func (b *flowBook) Each(q activity.Query, fn func(api.Flow)) error {
	flows, err := b.Read(q)
	for _, f := range flows {
		fn(f)
	}
	return err
}

func (b *flowBook) query() activity.Query {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

func (b *flowBook) add(f api.Flow) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flows = append(b.flows, f)
}

// TestActivityFollow: -f prints what is recorded after the first answer,
// each flow once, and ends on an interrupt.
func TestActivityFollow(t *testing.T) {
	book := &flowBook{flows: testFlows()[:1]}
	d := startDaemonWith(t, "vpn.example.com:51820", "", nil, book)
	cmd := exec.Command(ctlBin, "activity", "-f", "-o", "json")
	cmd.Env = append(os.Environ(), "EXTRANET_SOCKET="+d.sock)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() (api.Flow, bool) {
		select {
		case l, ok := <-lines:
			var f api.Flow
			return f, ok && json.Unmarshal([]byte(l), &f) == nil
		case <-time.After(10 * time.Second):
			return api.Flow{}, false
		}
	}
	if f, ok := next(); !ok || f.Peer != "acme/laptop" {
		t.Fatalf("the first answer: %+v, %v", f, ok)
	}
	later := testFlows()[1]
	later.Closed = time.Now().UTC().Add(time.Hour)
	book.add(later)
	if f, ok := next(); !ok || f.Peer != later.Peer || !f.Closed.Equal(later.Closed) {
		t.Fatalf("the flow recorded later: %+v, %v", f, ok)
	}
	// Two more polls, and nothing new: nothing is printed twice.
	select {
	case l := <-lines:
		t.Errorf("printed again: %s", l)
	case <-time.After(5 * time.Second):
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("-f after an interrupt: %v", err)
	}
}

func testFlows() []api.Flow {
	at := func(hms string) time.Time {
		t, err := time.Parse(time.RFC3339, "2026-11-02T"+hms+"Z")
		if err != nil {
			panic(err)
		}
		return t
	}
	return []api.Flow{
		{Opened: at("10:00:00"), Closed: at("10:01:30"), Org: "acme", Group: "default", Peer: "acme/laptop", Address: "100.64.1.1",
			Proto: "tcp", Dest: "10.20.0.10", Port: 443, BytesOut: 1536, BytesIn: 2 << 20, PacketsOut: 12, PacketsIn: 1500, End: api.FlowClosed},
		{Opened: at("10:02:00"), Closed: at("10:05:00"), Org: "acme", Group: "support", Peer: "acme/phone", Address: "fd00:64::2",
			Proto: "udp", Dest: "fd00:20::53", Port: 53, BytesOut: 80, BytesIn: 200, PacketsOut: 1, PacketsIn: 1, End: api.FlowTimedOut},
		{Opened: at("10:06:00"), Closed: at("10:06:00"), Org: "globex", Group: "default", Peer: "globex/laptop", Address: "100.64.2.1",
			Proto: "icmp", Dest: "10.30.0.10", PacketsOut: 1, End: api.FlowKilled},
	}
}

// TestActivity: the table and NDJSON of `activity`, its filters as the
// daemon receives them, its errors, and an activity log that is off.
func TestActivity(t *testing.T) {
	book := &flowBook{flows: testFlows()}
	d := startDaemonWith(t, "vpn.example.com:51820", "", nil, book)

	out := d.must("activity")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 || strings.Join(strings.Fields(lines[0]), " ") != "CLOSED PEER GROUP PROTO DEST OUT IN DURATION END" {
		t.Fatalf("activity table:\n%s", out)
	}
	for i, want := range []string{
		"2026-11-02T10:01:30Z acme/laptop default tcp 10.20.0.10:443 1.5 KiB 2.0 MiB 1m30s closed",
		"2026-11-02T10:05:00Z acme/phone support udp [fd00:20::53]:53 80 B 200 B 3m0s timed out",
		"2026-11-02T10:06:00Z globex/laptop default icmp 10.30.0.10 0 B 0 B 0s killed",
	} {
		if got := strings.Join(strings.Fields(lines[i+1]), " "); got != want {
			t.Errorf("activity row %d: %q, want %q", i+1, got, want)
		}
	}

	lines = strings.Split(strings.TrimSpace(d.must("activity", "-o", "json")), "\n")
	if len(lines) != 3 {
		t.Fatalf("activity -o json: want one JSON object per line for 3 flows, got %d lines", len(lines))
	}
	for i, l := range lines {
		var f api.Flow
		if err := json.Unmarshal([]byte(l), &f); err != nil || f != testFlows()[i] {
			t.Errorf("activity -o json line %d: %v\n got %+v\nwant %+v", i, err, f, testFlows()[i])
		}
	}

	// Every filter reaches the log, read as the log reads it.
	before := time.Now()
	d.must("activity", "--org", "acme", "--peer", "acme/laptop", "--dest", "10.20.0.5/24", "--port", "443", "--proto", "6",
		"--end", "timed out", "--since", "24h", "--until", "2026-11-02", "--limit", "5")
	q := book.query()
	if q.Orgs != nil || q.Org != "acme" || q.Peer != "acme/laptop" || q.Dest != netip.MustParsePrefix("10.20.0.0/24") || q.Port != 443 ||
		q.Proto != "tcp" || q.End != api.FlowTimedOut || q.Limit != 5 || !q.Until.Equal(time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)) ||
		q.Since.Before(before.Add(-24*time.Hour-time.Second)) || q.Since.After(time.Now().Add(-24*time.Hour)) {
		t.Errorf("activity with every filter: the log was asked %+v", q)
	}
	d.must("activity", "--dest", "fd00:20::53")
	if q := book.query(); q.Dest != netip.MustParsePrefix("fd00:20::53/128") {
		t.Errorf("--dest with an address: the log was asked for %s", q.Dest)
	}

	if out := d.must("activity", "--org", "initech"); out != "No flows matched.\n" {
		t.Errorf("activity with nothing to show: %q", out)
	}
	if out := d.must("activity", "--org", "initech", "-o", "json"); out != "" {
		t.Errorf("activity -o json with nothing to show: %q", out)
	}

	for _, tc := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"--dest", "10.20.0.300"}, 2, `dest="10.20.0.300"`},
		{[]string{"--port", "0"}, 2, "--port 0"},
		{[]string{"--port", "65536"}, 2, "65536"},
		{[]string{"--proto", "sctpx"}, 2, `proto="sctpx"`},
		{[]string{"--end", "finished"}, 2, `end="finished"`},
		{[]string{"--since", "yesterday"}, 2, "yesterday"},
		{[]string{"--peer", "acme"}, 2, "ORG/NAME"},
		{[]string{"--org", "Bad_Name"}, 2, "Bad_Name"},
		{[]string{"--limit", "-1"}, 2, "--limit -1"},
	} {
		_, errOut, code := d.ctl(append([]string{"activity"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.contains) {
			t.Errorf("activity %v: exit %d, stderr %q; want exit %d naming %q", tc.args, code, errOut, tc.code, tc.contains)
		}
	}

	off := startDaemon(t, "vpn.example.com:51820")
	if _, errOut, code := off.ctl("activity"); code != cli.ExitNotFound || !strings.Contains(errOut, "activity logging is off") {
		t.Errorf("activity without a log: exit %d, %q", code, errOut)
	}
}

// TestActivityTop: top's lists as tables, its window as the daemon gets
// it, and its JSON.
func TestActivityTop(t *testing.T) {
	flows := append(testFlows(),
		api.Flow{Closed: time.Date(2026, 11, 2, 11, 0, 0, 0, time.UTC), Org: "acme", Peer: "acme/phone", Proto: "tcp", Dest: "10.20.0.10", Port: 3389, Flows: 40, End: api.FlowRefused, Reason: api.DenyNotGranted},
		api.Flow{Closed: time.Date(2026, 11, 2, 11, 0, 0, 0, time.UTC), Address: "100.64.9.9", Proto: "tcp", Dest: "10.20.0.10", Port: 3389, Flows: 2, End: api.FlowRefused, Reason: api.DenyNotAPeer})
	book := &flowBook{flows: flows}
	d := startDaemonWith(t, "vpn.example.com:51820", "", nil, book)

	out := d.must("activity", "top", "--since", "2026-11-01")
	want := `5 records from 2026-11-01T00:00:00Z to now.

Destinations by bytes:
DEST TCP
10.20.0.10:443 tcp 1.5 KiB 2.0 MiB 1 1
[fd00:20::53]:53 udp 80 B 200 B 1 1
10.30.0.10 icmp 0 B 0 B 1 1

Peers by bytes:
PEER OUT IN FLOWS
acme/laptop 1.5 KiB 2.0 MiB 1
acme/phone 80 B 200 B 1
globex/laptop 0 B 0 B 1

Destinations refused:
DEST PROTO ATTEMPTS PEERS
10.20.0.10:3389 tcp 42 2

Peers refused:
PEER ATTEMPTS
acme/phone 40
100.64.9.9 (no peer) 2`
	want = strings.Replace(want, "DEST TCP", "DEST PROTO OUT IN FLOWS PEERS", 1)
	var got []string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		got = append(got, strings.Join(strings.Fields(l), " "))
	}
	if strings.Join(got, "\n") != want {
		t.Errorf("activity top:\n%s\nwant (spaces aside)\n%s", out, want)
	}
	if q := book.query(); !q.Since.Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) || q.Limit != 0 {
		t.Errorf("activity top: the log was asked %+v; want every record since 2026-11-01", q)
	}

	var top api.ActivityTop
	if err := json.Unmarshal([]byte(d.must("activity", "top", "--since", "2026-11-01", "--limit", "1", "-o", "json")), &top); err != nil ||
		top.Records != 5 || len(top.Destinations) != 1 || len(top.RefusedPeers) != 1 || top.RefusedPeers[0].Flows != 40 {
		t.Errorf("activity top -o json --limit 1: %+v, %v", top, err)
	}
	if out := d.must("activity", "top", "--org", "initech"); !strings.Contains(out, "Destinations by bytes: none") {
		t.Errorf("activity top with nothing to add up:\n%s", out)
	}
	if _, errOut, code := d.ctl("activity", "top", "--limit", "101"); code != 2 || !strings.Contains(errOut, "--limit 101") {
		t.Errorf("activity top --limit 101: exit %d, %q", code, errOut)
	}
}

// TestActivitySponsor: a sponsor reads its own organisation's activity
// alone, through the real socket and its peer credentials.
func TestActivitySponsor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run commands as another user")
	}
	grp, err := user.LookupGroup("daemon")
	if err != nil {
		t.Skip("no group named daemon on this host")
	}
	gid, _ := strconv.Atoi(grp.Gid)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user named nobody on this host")
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	// Flows of the organisations made below, so after their making.
	flows := testFlows()
	for i := range flows {
		flows[i].Opened, flows[i].Closed = time.Now().Add(time.Hour), time.Now().Add(time.Hour+time.Minute)
	}
	book := &flowBook{flows: flows}
	d := startDaemonWith(t, "vpn.example.com:51820", "daemon", nil, book)
	d.must("org", "create", "acme")
	d.must("role", "assign", "nobody", "sponsor", "--org", "acme")
	asSponsor := func(args ...string) (string, string, int) {
		cmd := exec.Command(ctlBin, append([]string{"--socket", d.sock, "activity"}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}
	out, errOut, code := asSponsor()
	if code != 0 || !strings.Contains(out, "acme/laptop") || strings.Contains(out, "globex") {
		t.Errorf("activity as acme's sponsor: exit %d, %s%s", code, out, errOut)
	}
	if q := book.query(); !slices.Equal(q.Orgs, []string{"acme"}) {
		t.Errorf("activity as acme's sponsor: the log was asked for the organisations %q, want acme", q.Orgs)
	}
	if _, errOut, code := asSponsor("--org", "globex"); code != cli.ExitForbidden || !strings.Contains(errOut, "sponsor of globex") {
		t.Errorf("activity --org globex as acme's sponsor: exit %d, %s", code, errOut)
	}
	if _, errOut, code := asSponsor("--peer", "globex/laptop"); code != cli.ExitForbidden || !strings.Contains(errOut, "sponsor of globex") {
		t.Errorf("activity --peer globex/laptop as acme's sponsor: exit %d, %s", code, errOut)
	}
}
