package wgdev

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/extranetgw/extranet/internal/netnstest"
)

// The device itself is exercised end to end (internal/e2e), where the whole
// daemon runs inside the gateway's namespace: wireguard-go opens its UDP
// sockets from its own goroutines, so a test that switched only one thread
// into a namespace would leak them into the host's.

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %o, want 600", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("the state directory holds %d files after writing the key, want only the key", len(entries))
	}
	// A key made meanwhile by someone else is never overwritten.
	if _, err := createKey(path); err == nil {
		t.Error("createKey replaced an existing key")
	}
	if k, _ := LoadOrCreateKey(path); k != k1 {
		t.Error("the key changed")
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || k2 != k1 {
		t.Fatalf("second load: %v, same key %v", err, k2 == k1)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key accepted: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("not a key\n"), 0o600)
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Error("garbage key file accepted")
	}
}

func TestIsHost(t *testing.T) {
	for _, tc := range []struct {
		n    net.IPNet
		want bool
	}{
		{net.IPNet{IP: net.IPv4(100, 64, 1, 1), Mask: net.CIDRMask(32, 32)}, true},
		{net.IPNet{IP: net.IPv4(100, 64, 1, 0), Mask: net.CIDRMask(24, 32)}, false},
		{net.IPNet{IP: net.ParseIP("fd00::1"), Mask: net.CIDRMask(128, 128)}, false},
	} {
		if got := isHost(tc.n); got != tc.want {
			t.Errorf("isHost(%v) = %v", tc.n, got)
		}
	}
}

func TestPortInUse(t *testing.T) {
	for err, want := range map[error]bool{
		nil: false,
		os.NewSyscallError("read", errors.New("wguser: errno=-98")): true, // wireguard-go via UAPI
		fmt.Errorf("configure: %w", syscall.EADDRINUSE):             true, // kernel via netlink
		os.NewSyscallError("read", errors.New("wguser: errno=-22")): false,
	} {
		if got := portInUse(err); got != want {
			t.Errorf("portInUse(%v) = %v, want %v", err, got, want)
		}
	}
}

// TestCheckPortFree: a port another program holds, on IPv4 or IPv6, is
// reported with the clear error before any interface exists.
func TestCheckPortFree(t *testing.T) {
	netnstest.Run(t, func(string) {
		for _, network := range []string{"udp4", "udp6"} {
			c, err := net.ListenUDP(network, &net.UDPAddr{})
			if err != nil {
				t.Fatalf("%s: %v", network, err)
			}
			port := c.LocalAddr().(*net.UDPAddr).Port
			err = checkPortFree(port)
			c.Close()
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("UDP port %d is already in use", port)) {
				t.Errorf("%s port %d taken: checkPortFree = %v", network, port, err)
			}
			if err := checkPortFree(port); err != nil {
				t.Errorf("%s port %d free again: checkPortFree = %v", network, port, err)
			}
		}
	})
}
