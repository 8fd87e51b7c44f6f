package gwns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// childEnv names the namespace a re-executed test binary opens from a mount
// namespace of its own.
const childEnv = "GWNS_TEST_PRIVATE_MOUNTS_OPEN"

// TestPrivateMountNamespaceNeverPinsAlone: a daemon in a mount namespace
// other than the host's (systemd's sandbox, `ip netns exec`) that finds no
// pin must fail and say how to pin it, not make a namespace pinned where
// only it can see it: the host's tools, cleanup and the next start would
// never find that one, and the host would be left with an empty file. A
// pin the host already has is adopted from there as from anywhere.
func TestPrivateMountNamespaceNeverPinsAlone(t *testing.T) {
	if name := os.Getenv(childEnv); name != "" {
		ns, created, err := Open(name)
		if err == nil {
			ns.Close()
		}
		fmt.Printf("open: created=%v err=%v\n", created, err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to make mount and network namespaces")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "expin" + hex.EncodeToString(b)
	path := filepath.Join(Dir, name)
	t.Cleanup(func() { Delete(name) })
	// What systemd does for a unit's sandbox: a mount namespace that gets
	// the host's mounts and gives back none.
	openPrivately := func() string {
		t.Helper()
		cmd := exec.Command("unshare", "--mount", "--propagation", "slave", os.Args[0], "-test.run", "^TestPrivateMountNamespaceNeverPinsAlone$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"="+name)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the child failed: %v\n%s", err, out)
		}
		return string(out)
	}

	out := openPrivately()
	if !strings.Contains(out, "open: created=false err=") || strings.Contains(out, "err=<nil>") {
		t.Errorf("a namespace was made and pinned in a private mount namespace:\n%s", out)
	}
	if !strings.Contains(out, "nsenter --mount=/proc/1/ns/mnt") {
		t.Errorf("the error does not say how to pin it in the host's mount namespace:\n%s", out)
	}
	if _, err := os.Lstat(path); err == nil {
		t.Errorf("the host was left with %s, which pins nothing it can see", path)
	}

	ns, created, err := Open(name)
	if err != nil || !created {
		t.Fatalf("open %s in the host's mount namespace: created %v, %v", name, created, err)
	}
	ns.Close()
	if out := openPrivately(); !strings.Contains(out, "open: created=false err=<nil>") {
		t.Errorf("the host's pin was not adopted from a private mount namespace:\n%s", out)
	}
}

// TestSlaveMount reads mountinfo as the kernel writes it: the mount that
// holds /run/netns is the last one on the longest mount point above it.
func TestSlaveMount(t *testing.T) {
	const host = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:23 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw
30 25 0:23 /netns /run/netns rw,nosuid,nodev shared:12 - tmpfs tmpfs rw
31 25 0:24 / /run/netnsx rw master:3 - tmpfs tmpfs rw
`
	const sandbox = `40 39 254:0 / / ro,relatime shared:20 master:1 - ext4 /dev/vda rw
41 40 0:23 / /run rw,nosuid,nodev shared:21 master:5 - tmpfs tmpfs rw
`
	const private = `27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
`
	for _, tc := range []struct {
		name, info, at string
		slave          bool
	}{
		{"host under systemd: /run/netns shared", host, "/run/netns", false},
		{"sandbox: /run a slave, no /run/netns mount yet", sandbox, "/run", true},
		{"host without systemd: everything private", private, "/", false},
		{"a later mount on the same point wins", host + "50 30 0:23 /netns /run/netns rw master:12 - tmpfs tmpfs rw\n", "/run/netns", true},
	} {
		at, slave := slaveMount(tc.info, "/run/netns")
		if at != tc.at || slave != tc.slave {
			t.Errorf("%s: got %s slave=%v, want %s slave=%v", tc.name, at, slave, tc.at, tc.slave)
		}
	}
}
