package daemon

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/extranetgw/extranet/internal/gwns"
)

// TestKeepLink: the stop hook closes the link on every way extranetd ends
// for good and keeps it on every way systemd runs it again, so that a
// restart and kill -9 keep partners' sessions and nothing else leaves an
// unenforced gateway open.
func TestKeepLink(t *testing.T) {
	for _, tc := range []struct {
		name     string
		st       unitState
		known    bool
		result   string
		stopping bool
		keep     bool
	}{
		{"systemctl stop", unitState{"stop", "deactivating"}, true, "success", true, false},
		{"systemctl stop, daemon killed after the stop timeout", unitState{"stop", "deactivating"}, true, "timeout", true, false},
		{"systemctl restart", unitState{"restart", "deactivating"}, true, "success", true, true},
		{"package upgrade: try-restart", unitState{"try-restart", "deactivating"}, true, "success", true, true},
		{"kill -9: Restart=on-failure follows", unitState{"", "deactivating"}, true, "signal", true, true},
		{"crash at start: Restart=on-failure follows", unitState{"", "deactivating"}, true, "exit-code", true, true},
		{"SIGTERM by hand: a clean exit, not restarted", unitState{"", "deactivating"}, true, "success", true, false},
		{"systemctl unreachable in ExecStopPost, clean exit", unitState{}, false, "success", true, false},
		{"systemctl unreachable in ExecStopPost, crash", unitState{}, false, "signal", true, true},
		{"OnFailure: systemd gave up (start-limit-hit)", unitState{"", "failed"}, true, "", false, false},
		{"OnSuccess: stopped during an automatic restart", unitState{"", "inactive"}, true, "", false, false},
		{"OnSuccess: the stop half of a restart", unitState{"start", "inactive"}, true, "", false, true},
		{"OnSuccess: the restart is already up", unitState{"", "active"}, true, "", false, true},
		{"OnSuccess: started again meanwhile", unitState{"", "activating"}, true, "", false, true},
		{"OnFailure: systemctl unreachable", unitState{}, false, "", false, false},
	} {
		keep, why := keepLink(tc.st, tc.known, tc.result, tc.stopping)
		if keep != tc.keep || why == "" {
			t.Errorf("%s: keep=%v (%s), want %v", tc.name, keep, why, tc.keep)
		}
	}
}

// TestJobType reads systemctl list-jobs as systemd 252 prints it.
func TestJobType(t *testing.T) {
	out := "120 extranetd.service restart running\n121 extranetd-close.service start waiting\n"
	if got := jobType(out, "extranetd.service"); got != "restart" {
		t.Errorf("job of extranetd.service = %q, want restart", got)
	}
	if got := jobType("", "extranetd.service"); got != "" {
		t.Errorf("no jobs gave %q", got)
	}
}

// TestCloseLinkTakesTheInterfaceDown: the hook's action, on a link in a
// throwaway gateway namespace; a missing interface or namespace is nothing
// to close, not an error.
func TestCloseLinkTakesTheInterfaceDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a network namespace")
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "exhook" + hex.EncodeToString(b)
	ns, _, err := gwns.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gwns.Delete(name) })
	defer ns.Close()
	// A veth pair stands in for the WireGuard interface: the kernel here
	// may have neither the wireguard nor the dummy module.
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "wgtest"
	if err := ns.Netlink().LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "wgtestpeer"}); err != nil {
		t.Fatal(err)
	}
	link, err := ns.Netlink().LinkByName("wgtest")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Netlink().LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	up := func() bool {
		l, err := ns.Netlink().LinkByName("wgtest")
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Flags&net.FlagUp != 0
	}

	if done, err := closeLink(name, "wgtest"); err != nil || !strings.Contains(done, "taken down") || up() {
		t.Errorf("close: %q, %v; up afterwards: %v", done, err, up())
	}
	if done, err := closeLink(name, "wgtest"); err != nil || !strings.Contains(done, "already down") {
		t.Errorf("second close: %q, %v", done, err)
	}
	if done, err := closeLink(name, "wgnone"); err != nil || !strings.Contains(done, "no interface") {
		t.Errorf("missing interface: %q, %v", done, err)
	}
	if done, err := closeLink(name+"x", "wgtest"); err != nil || !strings.Contains(done, "no network namespace") {
		t.Errorf("missing namespace: %q, %v", done, err)
	}
}
