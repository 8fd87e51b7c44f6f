// Package e2e holds the end-to-end tests: the real extranetd and extranetctl
// binaries, real bbolt, a real WireGuard interface, real iptables and ipsets,
// and partners running the stock wg-quick client, all inside network
// namespaces each test builds and removes. The root namespace is never
// touched. They need root and skip without it.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin holds the binaries built once for the whole run.
var bin string

// skipReason is set when the environment cannot run these tests.
var skipReason string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		skipReason = "end-to-end tests need root to build network namespaces; run `sudo make test`"
		return m.Run()
	}
	for _, tool := range []string{"ip", "iptables", "ipset", "wg", "wg-quick", "wireguard-go", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipReason = fmt.Sprintf("%s is not installed; run scripts/install-deps.sh", tool)
			return m.Run()
		}
	}
	dir, err := os.MkdirTemp("", "extranet-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/extranetd", "./cmd/extranetctl")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		return 1
	}
	bin = dir
	return m.Run()
}

func needRig(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
