package daemon

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// unitLines returns the KEY=VALUE lines of a shipped unit file.
func unitLines(t *testing.T, name string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile("../../systemd/" + name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, l := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && !strings.HasPrefix(l, "#") {
			out[k] = append(out[k], v)
		}
	}
	return out
}

// TestExpireUnitNeverStartsTheDaemon: the daily timer must not start a
// daemon an admin stopped for maintenance or a restore. The expire job
// runs only while the daemon's socket exists, and is skipped otherwise.
func TestExpireUnitNeverStartsTheDaemon(t *testing.T) {
	u := unitLines(t, "extranet-expire.service")
	for _, dep := range []string{"Requires", "Wants", "BindsTo", "Upholds", "Requisite"} {
		for _, v := range u[dep] {
			if strings.Contains(v, "extranetd") {
				t.Errorf("extranet-expire.service has %s=%s: running the timer would start (or fail on) a stopped daemon", dep, v)
			}
		}
	}
	cond := "ConditionPathExists"
	if got := strings.Join(u[cond], " "); got != Defaults().Socket {
		t.Errorf("%s=%q, want the daemon's default socket %s", cond, got, Defaults().Socket)
	}
}

// unitValue is the one value of key in a unit, failing the test on none or
// several.
func unitValue(t *testing.T, u map[string][]string, key string) string {
	t.Helper()
	if len(u[key]) != 1 {
		t.Fatalf("%s: %q, want exactly one", key, u[key])
	}
	return u[key][0]
}

// TestUnitPinsTheNamespaceInTheHostsMountNamespace: systemd gives even a
// "+" command of a sandboxed unit a mount namespace of its own, so the pin
// ExecStartPre makes must be made in PID 1's, or the daemon finds an empty
// file, makes a namespace only it sees, and a new one at every start.
func TestUnitPinsTheNamespaceInTheHostsMountNamespace(t *testing.T) {
	u := unitLines(t, "extranetd.service")
	start := unitValue(t, u, "ExecStart")
	pre := unitValue(t, u, "ExecStartPre")
	want := "+/usr/bin/nsenter --mount=/proc/1/ns/mnt -- " + start + " netns"
	if pre != want {
		t.Errorf("ExecStartPre=%s\nwant ExecStartPre=%s", pre, want)
	}
}

// TestUnitClosesTheLinkUnlessRestarted: every way the daemon ends runs the
// stop hook, with the same config as the daemon: its own ExecStopPost, and
// extranetd-close.service where systemd runs none (it gave up restarting, or
// a stop came during an automatic restart). The hook keeps the link on an
// unclean exit because Restart=on-failure restarts it, and a crash loop must
// end in a failed unit for OnFailure= to close it.
func TestUnitClosesTheLinkUnlessRestarted(t *testing.T) {
	u := unitLines(t, "extranetd.service")
	start := unitValue(t, u, "ExecStart")
	if got, want := unitValue(t, u, "ExecStopPost"), "+"+start+" stop-hook --unit %n"; got != want {
		t.Errorf("ExecStopPost=%s, want %s", got, want)
	}
	for _, k := range []string{"OnFailure", "OnSuccess"} {
		if got := strings.Join(u[k], " "); got != "extranetd-close.service" {
			t.Errorf("%s=%s, want extranetd-close.service", k, got)
		}
	}
	if got := unitValue(t, u, "Restart"); got != "on-failure" {
		t.Errorf("Restart=%s: the stop hook keeps the link on an unclean exit because Restart=on-failure restarts the daemon", got)
	}
	seconds := func(k string) int {
		n, err := strconv.Atoi(strings.TrimSuffix(unitValue(t, u, k), "s"))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return n
	}
	if burst, every, within := seconds("StartLimitBurst"), seconds("RestartSec"), seconds("StartLimitIntervalSec"); burst*every >= within {
		t.Errorf("StartLimitBurst=%d starts %d s apart never fit in StartLimitIntervalSec=%d: a crash loop would never end in a failed unit", burst, every, within)
	}

	c := unitLines(t, "extranetd-close.service")
	bin, _, _ := strings.Cut(start, " ")
	if got, want := unitValue(t, c, "ExecStart"), start+" stop-hook --unit extranetd.service"; got != want {
		t.Errorf("extranetd-close.service ExecStart=%s, want %s", got, want)
	}
	if got := unitValue(t, c, "ConditionFileIsExecutable"); got != bin {
		t.Errorf("extranetd-close.service ConditionFileIsExecutable=%s, want %s", got, bin)
	}
	if got := unitValue(t, c, "Type"); got != "oneshot" {
		t.Errorf("extranetd-close.service Type=%s, want oneshot", got)
	}
}

// TestUnitsDenyMountsWithAnError: neither the daemon nor the hook mounts
// anything under the units (the pin is made outside), and a mount tried by
// mistake is an error the program reports, not a SIGSYS crash loop.
func TestUnitsDenyMountsWithAnError(t *testing.T) {
	for _, name := range []string{"extranetd.service", "extranetd-close.service"} {
		u := unitLines(t, name)
		if got := strings.Join(u["SystemCallFilter"], " "); got != "~@mount" {
			t.Errorf("%s: SystemCallFilter=%s, want ~@mount", name, got)
		}
		if got := strings.Join(u["SystemCallErrorNumber"], " "); got != "EPERM" {
			t.Errorf("%s: SystemCallErrorNumber=%s, want EPERM", name, got)
		}
	}
}
