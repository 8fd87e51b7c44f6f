package daemon

import (
	"os"
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
