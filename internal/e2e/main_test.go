// Package e2e holds the end-to-end tests: the real extranetd and extranetctl
// binaries, real bbolt, a real WireGuard interface, real iptables and ipsets,
// and partners running the stock wg-quick client, all inside network
// namespaces each test builds and removes. The root namespace is never
// touched. They need root and skip without it.
//
// The environment chooses how they run:
//
//	EXTRANET_E2E_WIREGUARD=userspace|kernel  where WireGuard runs, for the
//	    gateway and the partners alike (default userspace: embedded
//	    wireguard-go, and Debian's wireguard-go under wg-quick)
//	EXTRANET_E2E_BIN=DIR      prebuilt extranetd and extranetctl, so that
//	    nothing is compiled (scripts/vm-run.sh runs the tests in a VM)
//	EXTRANET_E2E_TIMESCALE=F  multiplies every time limit, for slow
//	    machines such as that VM's software emulation
//	EXTRANET_E2E_PARALLEL=0   runs one rig test at a time, not two
package e2e

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// bin holds the binaries built once for the whole run.
var bin string

// skipReason is set when the environment cannot run these tests.
var skipReason string

// wgMode is where WireGuard runs: "userspace" or "kernel".
var wgMode = "userspace"

// timeScale multiplies the tests' time limits.
var timeScale = 1.0

// parallel runs the tests that build a rig two at a time (unless
// EXTRANET_E2E_PARALLEL=0). A test spends most of its time waiting on
// timers, handshakes and the daemon's passes, so two at a time take little
// longer than one (the native suite 190 s instead of 320 s, the VM's about
// 60% of one at a time); every rig's names are random, so two share
// nothing.
var parallel = true

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if dir := os.Getenv(etcdDirEnv); dir != "" {
		return serveEtcd(dir, os.Getenv(etcdHostEnv))
	}
	if err := readEnv(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if os.Geteuid() != 0 {
		skipReason = "end-to-end tests need root to build network namespaces; run `sudo make test`"
		return m.Run()
	}
	tools := []string{"ip", "iptables", "ipset", "wg", "wg-quick", "ping"}
	if wgMode == "userspace" {
		tools = append(tools, "wireguard-go")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			skipReason = fmt.Sprintf("%s is not installed; run scripts/install-deps.sh", tool)
			return m.Run()
		}
	}
	if wgMode == "kernel" && !kernelWireGuard() {
		// Asked for by name, so a missing module fails the run: a skip
		// would let CI pass without ever testing the kernel path.
		fmt.Fprintln(os.Stderr, "EXTRANET_E2E_WIREGUARD=kernel, but this kernel cannot create WireGuard interfaces")
		return 1
	}
	if dir := os.Getenv("EXTRANET_E2E_BIN"); dir != "" {
		bin = dir
		return m.Run()
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

func readEnv() error {
	switch m := os.Getenv("EXTRANET_E2E_WIREGUARD"); m {
	case "", "userspace":
	case "kernel":
		wgMode = m
	default:
		return fmt.Errorf("EXTRANET_E2E_WIREGUARD=%q: use userspace or kernel", m)
	}
	if s := os.Getenv("EXTRANET_E2E_TIMESCALE"); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < 1 || math.IsInf(f, 0) {
			return fmt.Errorf("EXTRANET_E2E_TIMESCALE=%q: use a number of at least 1", s)
		}
		timeScale = f
	}
	switch p := os.Getenv("EXTRANET_E2E_PARALLEL"); p {
	case "", "1":
	case "0":
		parallel = false
	default:
		return fmt.Errorf("EXTRANET_E2E_PARALLEL=%q: use 1 or 0", p)
	}
	if dir := os.Getenv("EXTRANET_E2E_BIN"); dir != "" {
		for _, name := range []string{"extranetd", "extranetctl"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("EXTRANET_E2E_BIN=%s: %w", dir, err)
			}
		}
	}
	return nil
}

// kernelWireGuard tells whether the kernel can make a WireGuard interface,
// trying in a namespace of its own.
func kernelWireGuard() bool {
	ns := fmt.Sprintf("exkmod%d", os.Getpid())
	if exec.Command("ip", "netns", "add", ns).Run() != nil {
		return false
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	return exec.Command("ip", "-n", ns, "link", "add", "wgprobe", "type", "wireguard").Run() == nil
}

// scaled is a time limit of the tests, stretched for slow machines. What a
// limit promises (a revoke kills a flow within 1 s) is measured natively;
// under emulation only the outcome is checked.
func scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * timeScale)
}

func needRig(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// inParallel lets a test that builds a rig run beside another when
// EXTRANET_E2E_PARALLEL=0 does not forbid it, once however many rigs it builds.
// Subtests share their test's rig, so they stay in order.
func inParallel(t *testing.T) {
	if !parallel || strings.Contains(t.Name(), "/") {
		return
	}
	if _, marked := markedParallel.LoadOrStore(t, true); !marked {
		t.Parallel()
		// Two, whatever -parallel and the cores say: the time limits
		// were measured with two rigs at a time on two cores.
		rigSlots <- struct{}{}
		t.Cleanup(func() { <-rigSlots })
	}
}

var (
	markedParallel sync.Map
	rigSlots       = make(chan struct{}, 2)
)

// needMode skips a test that only means something where WireGuard runs in
// mode.
// controlPlane marks a test of what the WireGuard mode cannot change (the
// state file, the API, the socket, roles): it runs in the native suite,
// and the kernel-mode run skips it, which keeps the VM suite, where every
// test costs five times as long, within CI's time.
func controlPlane(t *testing.T) {
	t.Helper()
	if wgMode == "kernel" {
		t.Skip("control plane only: nothing here depends on the WireGuard mode, and the native suite runs it")
	}
}

func needMode(t *testing.T, mode string) {
	t.Helper()
	needRig(t)
	if wgMode != mode {
		t.Skipf("tests WireGuard in %s mode; this run uses %s (EXTRANET_E2E_WIREGUARD)", mode, wgMode)
	}
}
