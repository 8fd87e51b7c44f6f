package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestAddressPlanIsKept: a restart under another --org-block-bits would cut
// new blocks over old ones; the daemon refuses it and says how to move.
func TestAddressPlanIsKept(t *testing.T) {
	controlPlane(t)
	r := standardRig(t)
	for _, org := range []string{"acme", "globex", "initech"} {
		r.MustCTL("org", "create", org, "--grant", "10.10.1.0/24")
		r.Issue(org + "/laptop")
	}
	r.StopDaemon()
	ctx, cancel := context.WithTimeout(context.Background(), scaled(30*time.Second))
	defer cancel()
	cmd := r.Extranetd(append(r.DaemonArgs(), "--org-block-bits", "23")...)
	out, err := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--org-block-bits 24") {
		t.Fatalf("restart under another address plan: err %v\n%s", err, out)
	}
	r.StartDaemon()
	r.MustCTL("org", "create", "umbrella")
	r.Issue("umbrella/laptop")
	if got := r.peerJSON("umbrella/laptop").Address; !strings.HasPrefix(got, "100.64.4.") {
		t.Errorf("the fourth org's peer got %s, want one in 100.64.4.0/24", got)
	}
}
