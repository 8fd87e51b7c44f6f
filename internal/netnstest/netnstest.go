// Package netnstest runs test code inside a throwaway network namespace, so
// that tests of kernel-touching code never change the host's own firewall,
// routes or interfaces.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// Run creates a network namespace, runs fn on a thread switched into it
// (commands fn executes and sockets it opens live there too), and removes
// the namespace afterwards, also when fn fails. Without root it skips.
func Run(t testing.TB, fn func(name string)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace; run `sudo make test`")
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "extest" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	Do(t, name, func() { fn(name) })
}

// Sh runs a command and returns its output, failing the test if it fails.
// Called inside Run, the command runs in the test's namespace.
func Sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return string(out)
}

// Do runs fn on a thread switched into the named namespace.
func Do(t testing.TB, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: Go retires it with the goroutine,
			// so nothing else ever runs in the wrong namespace.
			t.Errorf("restore network namespace: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	exec.Command("ip", "link", "set", "lo", "up").Run()
	fn()
}
