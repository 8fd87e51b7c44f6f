package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the README's first quick-start command, `make demo`, as a
// newcomer would (no terminal: its closing "press Enter" reads nothing and
// it removes its sandbox), and checks that it showed the product working
// and left no namespace behind.
func TestDemo(t *testing.T) {
	controlPlane(t)
	needRig(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scaled(3*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "demo")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if err != nil {
		t.Fatalf("make demo: %v\n%s", err, tail(out.String(), 60))
	}
	for _, want := range []string{" allowed", " denied", "request approve", "peer.revoke", "demo: removed the sandbox"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("make demo did not print %q:\n%s", want, tail(out.String(), 60))
		}
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), "exdemo") {
		t.Errorf("make demo left namespaces behind:\n%s", ns)
	}
}
