package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs the README's first quick-start command, `make demo`, as a
// newcomer would (no terminal: its closing "press Enter" reads nothing and
// it removes its sandbox), and checks that it showed the product working
// and left no namespace behind.
func TestDemo(t *testing.T) {
	out := runDemo(t, "demo")
	for _, want := range []string{" allowed", " denied", "request approve", "peer.revoke", "$ extranetctl activity", "demo: removed the sandbox"} {
		if !strings.Contains(out, want) {
			t.Errorf("make demo did not print %q:\n%s", want, tail(out, 60))
		}
	}
	// The demo's own flows and refusals, in a table whose columns are as
	// wide as what it holds.
	for _, want := range []string{`acme/laptop +default +tcp`, `acme/tablet +support +tcp +10\.10\.1\.2:443 \(\d+ attempts\) .* refused: not-granted`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("make demo's activity has no line matching %q:\n%s", want, tail(out, 60))
		}
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), "exdemo") {
		t.Errorf("make demo left namespaces behind:\n%s", ns)
	}
}

// TestDemoCluster runs `make demo-cluster` as TestDemo runs `make demo`: two
// gateways, a stock partner, a kill -9 of the active and a switchover,
// each survived within seconds, and nothing left behind.
func TestDemoCluster(t *testing.T) {
	out := runDemo(t, "demo-cluster")
	for _, want := range []string{"Endpoint = 192.168.60.10:51820", "took over; the partner went", "handed partners over to", "demo-cluster: removed the sandbox"} {
		if !strings.Contains(out, want) {
			t.Errorf("make demo-cluster did not print %q:\n%s", want, tail(out, 60))
		}
	}
	// Each gap is the demo's to show, under the 3 s a failover may take.
	for _, m := range regexp.MustCompile(`went ([0-9.]+) s without an answer`).FindAllStringSubmatch(out, -1) {
		if s, _ := strconv.ParseFloat(m[1], 64); s >= scaled(3*time.Second).Seconds() {
			t.Errorf("make demo-cluster: the partner %s", m[0])
		}
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), "excl") {
		t.Errorf("make demo-cluster left namespaces behind:\n%s", ns)
	}
}

// runDemo runs `make TARGET` as a newcomer would (no terminal: a closing
// "press Enter" reads nothing, and the sandbox is removed), and returns
// what it printed.
func runDemo(t *testing.T, target string) string {
	t.Helper()
	controlPlane(t)
	needRig(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// A demo installs what is missing; a test must not.
	if out, err := exec.Command(filepath.Join(root, "scripts", "install-deps.sh"), "--check").CombinedOutput(); err != nil {
		t.Skipf("make %s would install packages (%s): run scripts/install-deps.sh first", target, strings.TrimSpace(string(out)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), scaled(3*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", target)
	cmd.Dir = root
	// On a timeout the whole group goes, so that the demo's own trap
	// cleans up what it made (a SIGTERM, not a kill, for the trap to run).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("make %s: %v\n%s", target, err, tail(out.String(), 60))
	}
	return out.String()
}
