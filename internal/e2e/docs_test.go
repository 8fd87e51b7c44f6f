package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/doctest"
)

// TestDocs runs every worked example of README.md and docs/ (the fenced
// blocks marked <!-- example -->) as written, and fails where a command
// fails, or prints other than what the document shows. With
// EXTRANET_DOCS_UPDATE=1 it writes what the commands printed into the
// documents instead, keeping what already matched.
//
// Each document runs in a sandbox of its own: a PID and mount namespace in
// which /etc is a copy, /run and /tmp are empty and /var/lib an overlay
// whose writes stay in the sandbox, so that the
// examples use the paths and names an installed gateway has (the socket in
// /run/extranet, the namespace "extranet", users made with useradd) and
// none of it reaches the host; its network namespace is its own too, and
// stands for the machine the reader types on. The examples of one
// document are one story, run in one shell in order.
func TestDocs(t *testing.T) {
	controlPlane(t)
	needRig(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	docs = append([]string{filepath.Join(root, "README.md")}, docs...)
	for _, path := range docs {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blocks, err := doctest.Parse(string(raw))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var examples []doctest.Block
		for _, b := range blocks {
			if b.Kind == doctest.Example || b.Kind == doctest.Hidden {
				examples = append(examples, b)
			}
		}
		if len(examples) == 0 {
			continue
		}
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			runDoc(t, root, path, string(raw), examples)
		})
	}
}

func runDoc(t *testing.T, root, path, doc string, examples []doctest.Block) {
	name := filepath.Base(path)
	sandbox, err := os.MkdirTemp("", "extranet-docs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sandbox) })
	// Readable by the documents' users, who run the binaries from here.
	if err := os.Chmod(sandbox, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"bin", "cmd", "out", "layers"} {
		if err := os.Mkdir(filepath.Join(sandbox, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{"extranetd", "extranetctl"} {
		raw, err := os.ReadFile(filepath.Join(bin, b))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sandbox, "bin", b), raw, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	nonce := make([]byte, 8)
	rand.Read(nonce)
	marker := "@@doctest-" + hex.EncodeToString(nonce) + "@@"

	var script strings.Builder
	fmt.Fprintf(&script, "S=%s\nROOT=%s\nM=%s\nT=%g\n", shellQuote(sandbox), shellQuote(root), marker, timeScale)
	script.WriteString(sandboxPrelude)
	// From the checkout, as README.md's examples are typed; a setup may go
	// elsewhere.
	script.WriteString("cd \"$ROOT\" || fail \"cd $ROOT\"\n")
	if setup, err := os.ReadFile(filepath.Join("testdata", "docs", name+".sh")); err == nil {
		script.WriteString("# the document's setup\n")
		script.Write(setup)
		script.WriteString("\n")
	} else if !os.IsNotExist(err) {
		t.Fatal(err)
	}
	script.WriteString("__rc=0\n")
	var steps [][]doctest.Step
	var all []doctest.Step
	for _, b := range examples {
		bs := b.Steps()
		steps = append(steps, bs)
		all = append(all, bs...)
	}
	n := 0
	for _, bs := range steps {
		for _, s := range bs {
			// Each command's output lands in a file of its own, out/N,
			// which a hidden step after it reads as $P; then it is shown.
			cmd := s.Command
			refs := doctest.Refs(all, n)
			if (s.User != "" && strings.TrimSpace(cmd) != "echo $?") || len(refs) > 0 {
				file := filepath.Join(sandbox, "cmd", strconv.Itoa(n)+".sh")
				if err := os.WriteFile(file, []byte(cmd+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				// An id the document showed an earlier command print is
				// the one that command really printed at that place.
				for _, r := range refs {
					fmt.Fprintf(&script, "__id=$(perl -ne 'if ($. == %d) { my @m = /%s/g; print $m[%d] }' \"$S/out/%d\")\nsed -i \"s|%s|$__id|g\" \"$S/cmd/%d.sh\"\n",
						r.Line, doctest.IDPerl, r.Nth-1, r.Step, r.Value, n)
				}
				if s.User != "" {
					// A login's groups, as the person would have them.
					cmd = fmt.Sprintf("runuser -u %s -- env PATH=\"$PATH\" bash \"$S/cmd/%d.sh\"", s.User, n)
				} else {
					cmd = fmt.Sprintf("eval \"$(cat \"$S/cmd/%d.sh\")\"", n)
				}
			}
			fmt.Fprintf(&script, "printf '%%s %d\\n' \"$M\"\nP=\"$S/out/%d\"\n(exit $__rc)\n", n, n-1)
			if s.Script {
				// A script line may be several commands ("a; b"): each
				// must succeed, not only the last.
				script.WriteString("__err=0\ntrap '__err=$?' ERR\n")
			}
			fmt.Fprintf(&script, "{ %s\n} >\"$S/out/%d\" 2>&1 </dev/null\n__rc=$?\n", cmd, n)
			if s.Script {
				script.WriteString("trap - ERR\n[ \"$__err\" = 0 ] || __rc=$__err\n")
			}
			fmt.Fprintf(&script, "cat \"$S/out/%d\"\nprintf '\\n%%s rc %%d\\n' \"$M\" \"$__rc\"\n", n)
			n++
		}
	}
	file := filepath.Join(sandbox, "run.sh")
	if err := os.WriteFile(file, []byte(script.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scaled(4*time.Minute))
	defer cancel()
	// --kill-child: whatever ends unshare ends the sandbox's PID 1, and
	// with it every process the examples started.
	cmd := exec.CommandContext(ctx, "unshare", "--net", "--mount", "--propagation", "private", "--pid", "--fork",
		"--mount-proc", "--kill-child", "bash", file)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Whatever ends this test ends the sandbox too (the signal follows the
	// thread that started it, so the thread stays this goroutine's).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runErr := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within %v:\n%s", name, scaled(4*time.Minute), tail(out.String(), 40))
	}
	got, codes, prelude := splitRun(out.String(), marker, n)
	if len(got) != n {
		t.Fatalf("%s: %d of %d commands ran (%v); the sandbox printed:\n%s", name, len(got), n, runErr, tail(prelude+out.String(), 60))
	}

	update := os.Getenv("EXTRANET_DOCS_UPDATE") == "1"
	newDoc := doc
	i := 0
	for bi, b := range examples {
		var blockGot []string
		for _, s := range steps[bi] {
			g, code := got[i], codes[i]
			blockGot = append(blockGot, g)
			i++
			who := "#"
			if s.User != "" {
				who = s.User + "$"
			}
			switch {
			case s.WantsFailure() && code == 0:
				t.Errorf("%s:%d: %s %s\nsucceeded, but the document shows it refused:\n%s", name, s.Line, who, s.Command, g)
			case !s.WantsFailure() && code != 0:
				t.Errorf("%s:%d: %s %s\nexit %d:\n%s", name, s.Line, who, s.Command, code, g)
			case b.Kind == doctest.Hidden:
			case !s.Script && !doctest.Match(s.Want, g) && !update:
				t.Errorf("%s:%d: %s %s\nprinted:\n%s\nthe document shows:\n%s(EXTRANET_DOCS_UPDATE=1 writes what it printed)", name, s.Line, who, s.Command, g, s.Want)
			}
		}
		if update && b.Kind == doctest.Example {
			newDoc = strings.Replace(newDoc, b.Text, b.Rewrite(steps[bi], blockGot), 1)
		}
	}
	if update && newDoc != doc {
		if err := os.WriteFile(path, []byte(newDoc), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: wrote what the examples printed", name)
	}
	if t.Failed() {
		t.Logf("the sandbox's own output, before the first example:\n%s", tail(prelude, 30))
	}
}

// splitRun cuts a sandbox's output at the markers into what each command
// printed and its exit code; prelude is what came before the first one.
func splitRun(out, marker string, n int) (got []string, codes []int, prelude string) {
	parts := strings.Split(out, marker)
	prelude = parts[0]
	for _, p := range parts[1:] {
		p = strings.TrimPrefix(p, " ")
		if rest, ok := strings.CutPrefix(p, "rc "); ok {
			line, _, _ := strings.Cut(rest, "\n")
			code, _ := strconv.Atoi(strings.TrimSpace(line))
			codes = append(codes, code)
			continue
		}
		// "N\n" and then the command's output, up to the newline the
		// end marker is printed after.
		_, body, _ := strings.Cut(p, "\n")
		body = strings.TrimSuffix(body, "\n")
		got = append(got, body)
	}
	if len(codes) < len(got) {
		got = got[:len(codes)]
	}
	return got, codes, prelude
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sandboxPrelude makes the sandbox: it runs as PID 1 of fresh PID and mount
// namespaces, so nothing it mounts or starts outlives it.
const sandboxPrelude = `
set -u -o pipefail
fail() { echo "sandbox: $*"; exit 97; }
mount -t tmpfs -o mode=755 tmpfs /run || fail "a private /run"
# What the examples write lands in layers on a tmpfs of the sandbox's: the
# host's files show through, read-only in effect (dpkg still sees what is
# installed, make finds the checkout), and nothing is left on the host.
L="$S/layers"
mount -t tmpfs -o mode=700 tmpfs "$L" || fail "the sandbox's layers"
private() {
	local n=${1//\//_}
	mkdir -p "$L/$n/upper" "$L/$n/work" &&
		mount -t overlay overlay -o "lowerdir=$1,upperdir=$L/$n/upper,workdir=$L/$n/work" "$1" || fail "a private $1"
}
# The checkout moves to /run first: it may be under /tmp, emptied below.
mkdir /run/doctest-src && mount --bind "$ROOT" /run/doctest-src || fail "the checkout"
ROOT=/run/doctest-src
for d in /etc /usr /var /root /home "$ROOT"; do
	if [ -d "$d" ]; then private "$d"; fi
done
# No state of the host's own gateway shows through.
rm -rf /var/lib/extranet /var/backups/extranet-*
mkdir /run/doctest && mount --bind "$S" /run/doctest || fail "the sandbox's files"
S=/run/doctest
PATH="$S/bin:$PATH"
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "a private /tmp"
# wait_for SECONDS CMD... runs CMD until it succeeds, and fails after
# SECONDS (stretched by EXTRANET_E2E_TIMESCALE).
wait_for() {
	local tries
	tries=$(awk -v s="$1" -v t="$T" 'BEGIN { printf "%d", s * t * 10 }')
	shift
	for ((i = 0; i < tries; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	echo "wait_for: $* did not succeed in time"
	return 1
}
mkdir -p /run/netns /run/lock
# What the package's postinst makes.
groupadd --system extranet || fail groupadd
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --gid extranet extranet-expire || fail useradd
mkdir -m 700 /var/lib/extranet
# Root needs no sudo; Debian's minimal install has none.
printf '#!/bin/sh\n[ "$1" = -E ] && shift\nexec "$@"\n' >"$S/bin/sudo" && chmod 755 "$S/bin/sudo"

# The sandbox's network namespace is the machine the reader types on.
ip link set lo up || fail "lo"

# gateway starts extranetd as the package does, with the package's defaults
# (state in /var/lib/extranet, socket /run/extranet/extranetd.sock for the
# group extranet, the gateway namespace "extranet"), on this machine, and
# waits until it answers. gateway_at NETNS starts it in a network namespace
# NETNS made for it instead, where the machine is another (a partner's).
gateway() { start_gateway "" "$@"; }
gateway_at() {
	ip netns add "$1" && ip -n "$1" link set lo up || fail "the gateway's namespace $1"
	start_gateway "$@"
}
start_gateway() {
	local at=$1
	shift
	if [ -n "$at" ]; then
		nsenter --net="/run/netns/$at" extranetd --endpoint vpn.example.com:51820 "$@" >>/run/extranetd.log 2>&1 &
	else
		extranetd --endpoint vpn.example.com:51820 "$@" >>/run/extranetd.log 2>&1 &
	fi
	extranetctl status --wait "$(awk -v t="$T" 'BEGIN { print 10 * t }')s" >/dev/null 2>&1 && return 0
	cat /run/extranetd.log
	fail "extranetd did not answer within 10 s"
}
`
