package firewall

import (
	"strings"
	"testing"
	"time"
)

// TestRunHasATimeLimit: a command that hangs fails within the limit
// instead of holding up the reconcile.
func TestRunHasATimeLimit(t *testing.T) {
	defer func(d time.Duration) { cmdTimeout = d }(cmdTimeout)
	cmdTimeout = 200 * time.Millisecond
	start := time.Now()
	_, err := run("", "sleep", "30")
	if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Errorf("a hanging command: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a hanging command held the caller for %v", d)
	}
	if out, err := run("x\n", "cat"); err != nil || out != "x\n" {
		t.Errorf("a quick command: %q, %v", out, err)
	}
}
