package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Rig is the test topology of docs/architecture.md:
//
//	ns pa ──veth──┐                      ┌──veth── ns in1 (10.10.1.2, echo servers)
//	              ├── ns gw (extranetd) ─┤
//	ns pb ──veth──┘   198.18.0.1:51820   └──veth── ns in2 (10.10.2.2, echo servers)
//
// Every name carries a random id so runs never collide, and everything is
// removed in t.Cleanup, on failure too.
type Rig struct {
	t        *testing.T
	id       string
	Dir      string
	GW       string
	PA, PB   string
	IN1, IN2 string
	// NS is the daemon's own namespace, where its interface, rules and
	// sets are; it joins GW, the host, by the veth HostVeth.
	NS       string
	Iface    string
	Endpoint string
	Socket   string

	mu       sync.Mutex
	daemon   *exec.Cmd
	daemonCh chan error
	logPath  string
	partners []partner
	closers  []io.Closer
	// secrets are every private and preshared key the test saw; stderr is
	// everything extranetctl printed there. Neither may ever meet.
	secrets []string
	stderr  strings.Builder
	// nvDev is the naive baseline's interface in benchmarks.
	nvDev string
	// WireGuardGo is the userspace WireGuard that PartnerUp hands wg-quick;
	// empty means Debian's wireguard-go. wg-quick puts its own directory
	// first in PATH, so anything else must be an absolute path.
	WireGuardGo string
	// DaemonEnv is added to extranetd's environment, for a test that
	// starts it as systemd would (RUNTIME_DIRECTORY=).
	DaemonEnv []string
}

type partner struct{ ns, conf string }

// Addresses of the topology.
const (
	wanAddr  = "198.18.0.1"
	in1Addr  = "10.10.1.2"
	in2Addr  = "10.10.2.2"
	gwIn1    = "10.10.1.1"
	gwTunnel = "100.64.0.1"
)

// NewRig builds the namespaces and links.
func NewRig(t *testing.T) *Rig {
	t.Helper()
	needRig(t)
	inParallel(t)
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(b)
	r := &Rig{
		t: t, id: id, Dir: t.TempDir(),
		GW: "ex" + id + "gw", PA: "ex" + id + "pa", PB: "ex" + id + "pb",
		IN1: "ex" + id + "i1", IN2: "ex" + id + "i2", NS: "ex" + id + "xg",
		Iface:    "wgx" + id,
		Endpoint: wanAddr + ":51820",
	}
	r.Socket = filepath.Join(r.Dir, "extranetd.sock")
	r.logPath = filepath.Join(r.Dir, "extranetd.log")
	t.Cleanup(r.teardown)
	for _, ns := range []string{r.GW, r.PA, r.PB, r.IN1, r.IN2} {
		r.must("ip", "netns", "add", ns)
		r.must("ip", "-n", ns, "link", "set", "lo", "up")
	}
	r.must("ip", "-n", r.GW, "addr", "add", wanAddr+"/32", "dev", "lo")
	r.link(r.GW, "to-pa", "198.18.1.1/24", r.PA, "up0", "198.18.1.2/24")
	r.link(r.GW, "to-pb", "198.18.2.1/24", r.PB, "up0", "198.18.2.2/24")
	r.link(r.GW, "to-in1", gwIn1+"/24", r.IN1, "eth0", in1Addr+"/24")
	r.link(r.GW, "to-in2", "10.10.2.1/24", r.IN2, "eth0", in2Addr+"/24")
	r.must("ip", "-n", r.PA, "route", "add", wanAddr+"/32", "via", "198.18.1.1")
	r.must("ip", "-n", r.PB, "route", "add", wanAddr+"/32", "via", "198.18.2.1")
	r.must("ip", "-n", r.IN1, "route", "add", "default", "via", gwIn1)
	r.must("ip", "-n", r.IN2, "route", "add", "default", "via", "10.10.2.1")
	return r
}

// link creates a veth pair directly inside two namespaces, so that no
// interface ever exists in the root namespace.
func (r *Rig) link(ns1, if1, addr1, ns2, if2, addr2 string) {
	r.must("ip", "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2)
	r.must("ip", "-n", ns1, "addr", "add", addr1, "dev", if1)
	r.must("ip", "-n", ns2, "addr", "add", addr2, "dev", if2)
	r.must("ip", "-n", ns1, "link", "set", if1, "up")
	r.must("ip", "-n", ns2, "link", "set", if2, "up")
}

func (r *Rig) teardown() {
	r.mu.Lock()
	closers := r.closers
	partners := r.partners
	r.mu.Unlock()
	for _, c := range closers {
		c.Close()
	}
	for _, p := range partners {
		r.run(p.ns, "wg-quick", "down", p.conf)
	}
	r.StopDaemon()
	r.checkNoSecretsLeaked()
	if r.t.Failed() {
		if log, err := os.ReadFile(r.logPath); err == nil {
			r.t.Logf("extranetd log:\n%s", tail(string(log), 80))
		}
	}
	for _, ns := range []string{r.GW, r.PA, r.PB, r.IN1, r.IN2, r.NS} {
		exec.Command("ip", "netns", "del", ns).Run()
	}
	// A killed userspace daemon leaves its UAPI socket behind.
	os.Remove("/var/run/wireguard/" + r.Iface + ".sock")
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (r *Rig) must(name string, args ...string) string {
	r.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		r.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Extranetd is the daemon binary run in GW, the rig's host. Its network
// namespace only: `ip netns exec` would also give it a mount namespace of
// its own, and the gateway namespace it pins under /run/netns would be
// seen by no one else.
func (r *Rig) Extranetd(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + r.GW, "--", filepath.Join(bin, "extranetd")}, args...)...)
}

// run runs a command inside a namespace.
func (r *Rig) run(ns string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Must runs a command inside a namespace and fails the test if it fails.
func (r *Rig) Must(ns string, args ...string) string {
	r.t.Helper()
	out, err := r.run(ns, args...)
	if err != nil {
		r.t.Fatalf("in %s: %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
	return out
}

// DaemonArgs are the flags every test daemon gets.
func (r *Rig) DaemonArgs() []string {
	return []string{
		"--state-dir", filepath.Join(r.Dir, "state"),
		"--socket", r.Socket,
		"--socket-group", "",
		"--interface", r.Iface,
		"--netns", r.NS,
		"--endpoint", r.Endpoint,
		"--wireguard", wgMode,
		"--reconcile-interval", "1s",
		"--stats-interval", "500ms",
		// Under emulation a reconcile can take seconds.
		"--apply-timeout", scaled(5 * time.Second).String(),
		"--log-level", "debug",
	}
}

// StartDaemon runs extranetd in the gateway namespace and waits until its
// API answers.
func (r *Rig) StartDaemon(extra ...string) {
	r.t.Helper()
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	cmd := r.Extranetd(append(r.DaemonArgs(), extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), r.DaemonEnv...)
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() { ch <- cmd.Wait(); logf.Close() }()
	r.mu.Lock()
	r.daemon, r.daemonCh = cmd, ch
	r.mu.Unlock()
	Eventually(r.t, 15*time.Second, "extranetd answers on its socket", func() error {
		select {
		case err := <-ch:
			ch <- err
			log, _ := os.ReadFile(r.logPath)
			r.t.Fatalf("extranetd exited: %v\n%s", err, tail(string(log), 30))
		default:
		}
		_, stderr, code := r.CTL("status")
		if code != 0 {
			return errors.New(stderr)
		}
		return nil
	})
}

// StopDaemon sends SIGTERM and waits for a clean exit.
func (r *Rig) StopDaemon() {
	r.signalDaemon(syscall.SIGTERM)
}

// KillDaemon kills the daemon with SIGKILL, as a crash would.
func (r *Rig) KillDaemon() {
	r.signalDaemon(syscall.SIGKILL)
}

func (r *Rig) signalDaemon(sig syscall.Signal) {
	r.mu.Lock()
	cmd, ch := r.daemon, r.daemonCh
	r.daemon = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-ch:
	case <-time.After(scaled(10 * time.Second)):
		cmd.Process.Kill()
		<-ch
		r.t.Errorf("extranetd did not stop within %v of %v", scaled(10*time.Second), sig)
	}
}

// HUP sends SIGHUP to the daemon.
func (r *Rig) HUP() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.daemon != nil {
		r.daemon.Process.Signal(syscall.SIGHUP)
	}
}

// DaemonLog returns everything the daemon logged so far.
func (r *Rig) DaemonLog() string {
	b, _ := os.ReadFile(r.logPath)
	return string(b)
}

// CTL runs the real extranetctl against the test daemon.
func (r *Rig) CTL(args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(filepath.Join(bin, "extranetctl"), append([]string{"--socket", r.Socket}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		r.t.Fatalf("run extranetctl: %v", err)
	}
	r.mu.Lock()
	r.secrets = append(r.secrets, secretsIn(o.String())...)
	r.stderr.WriteString(e.String())
	r.mu.Unlock()
	return o.String(), e.String(), code
}

var secretRE = regexp.MustCompile(`(?m)^(?:PrivateKey|PresharedKey) = (\S+)$`)

// secretsIn finds the keys in a client config.
func secretsIn(s string) []string {
	var out []string
	for _, m := range secretRE.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// checkNoSecretsLeaked greps the daemon's log and every error the CLI
// printed for any private or preshared key seen in the test, the gateway's
// own key included.
func (r *Rig) checkNoSecretsLeaked() {
	r.mu.Lock()
	secrets := append([]string(nil), r.secrets...)
	stderr := r.stderr.String()
	r.mu.Unlock()
	if gw, err := os.ReadFile(filepath.Join(r.Dir, "state", "gateway.key")); err == nil {
		secrets = append(secrets, strings.TrimSpace(string(gw)))
	}
	logs := r.DaemonLog() + stderr
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			r.t.Errorf("a private or preshared key appears in a log or error output")
		}
	}
}

// MustCTL runs extranetctl and fails the test unless it exits 0.
func (r *Rig) MustCTL(args ...string) string {
	r.t.Helper()
	out, errOut, code := r.CTL(args...)
	if code != 0 {
		r.t.Fatalf("extranetctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// Issue issues a peer and returns its config.
func (r *Rig) Issue(id string, extra ...string) string {
	r.t.Helper()
	return r.MustCTL(append([]string{"peer", "issue", id}, extra...)...)
}

// PartnerUp brings a stock wg-quick client up in ns with config, under the
// interface name ifname (at most 15 characters). It uses WireGuard where
// the run's mode says: userspace wireguard-go, as the WireGuard apps do
// where the kernel has no module, or the kernel's.
func (r *Rig) PartnerUp(ns, ifname, config string) string {
	r.t.Helper()
	conf := filepath.Join(r.Dir, ifname+".conf")
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "wg-quick", "up", conf)
	impl := r.WireGuardGo
	if impl == "" && wgMode == "userspace" {
		impl = "wireguard-go"
	}
	cmd.Env = os.Environ()
	if impl != "" {
		cmd.Env = append(cmd.Env, "WG_QUICK_USERSPACE_IMPLEMENTATION="+impl, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("wg-quick up %s in %s: %v\n%s", conf, ns, err, out)
	}
	if impl == "" {
		// wg-quick quietly falls back to userspace where it finds one.
		if out := r.Must(ns, "ip", "-d", "link", "show", ifname); !strings.Contains(out, "wireguard") {
			r.t.Fatalf("partner %s is not on kernel WireGuard:\n%s", ifname, out)
		}
	}
	r.mu.Lock()
	r.partners = append(r.partners, partner{ns: ns, conf: conf})
	r.mu.Unlock()
	return conf
}

// PartnerDown takes a partner's tunnel down.
func (r *Rig) PartnerDown(ns, conf string) {
	r.t.Helper()
	r.Must(ns, "wg-quick", "down", conf)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range r.partners {
		if p.conf == conf {
			r.partners = append(r.partners[:i], r.partners[i+1:]...)
			break
		}
	}
}

// inNS runs fn on a thread switched into namespace ns. Sockets created by
// fn stay in ns for their whole life.
func inNS(ns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: Go retires it when this goroutine ends,
		// so no other goroutine ever runs in the wrong namespace.
		return fmt.Errorf("restore netns: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Serve starts TCP and UDP echo servers on addr's ports inside ns. Each
// answers with tag, a colon and what it received, so a test knows who answered.
func (r *Rig) Serve(ns, ip, tag string, tcpPorts, udpPorts []int) {
	r.t.Helper()
	err := inNS(ns, func() error {
		for _, p := range tcpPorts {
			l, err := net.Listen("tcp4", net.JoinHostPort(ip, fmt.Sprint(p)))
			if err != nil {
				return err
			}
			r.addCloser(l)
			go serveTCP(l, tag)
		}
		for _, p := range udpPorts {
			c, err := net.ListenPacket("udp4", net.JoinHostPort(ip, fmt.Sprint(p)))
			if err != nil {
				return err
			}
			r.addCloser(c)
			go serveUDP(c, tag)
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("echo servers in %s: %v", ns, err)
	}
}

func (r *Rig) addCloser(c io.Closer) {
	r.mu.Lock()
	r.closers = append(r.closers, c)
	r.mu.Unlock()
}

func serveTCP(l net.Listener, tag string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			s := bufio.NewScanner(c)
			for s.Scan() {
				if _, err := fmt.Fprintf(c, "%s:%s\n", tag, s.Text()); err != nil {
					return
				}
			}
		}()
	}
}

func serveUDP(c net.PacketConn, tag string) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		c.WriteTo([]byte(tag+":"+string(buf[:n])), from)
	}
}

// Conn is an open TCP connection from a namespace, for tests that watch a
// live flow die.
type Conn struct {
	c net.Conn
	r *bufio.Reader
}

// DialTCP opens a TCP connection from ns within 2 seconds.
func DialTCP(ns, addr string) (*Conn, error) {
	var c net.Conn
	err := inNS(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, scaled(2*time.Second))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, r: bufio.NewReader(c)}, nil
}

// Echo sends a line and waits up to timeout for its echo.
func (c *Conn) Echo(msg string, timeout time.Duration) (string, error) {
	c.c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintln(c.c, msg); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// openFlow opens a TCP connection from ns to addr that has carried one
// echo, for a test that watches a live flow; it is closed when t ends.
func openFlow(t *testing.T, ns, addr string) *Conn {
	t.Helper()
	c, err := DialTCP(ns, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Echo("before", scaled(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

// dies polls an open flow until it stops answering, for up to limit
// (scaled), and returns how long that took: a test that sees a change in
// the store cannot tell when the data plane followed, only that it did in
// time.
func dies(t *testing.T, c *Conn, limit time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(scaled(limit))
	for {
		if _, err := c.Echo("after", scaled(200*time.Millisecond)); err != nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the connection still answers %v later", what, time.Since(start).Round(time.Millisecond))
		}
	}
}

// TCPEcho connects from ns to addr, echoes one line and returns the answer.
func TCPEcho(ns, addr string) (string, error) {
	c, err := DialTCP(ns, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.Echo("hello", scaled(2*time.Second))
}

// UDPEcho sends a datagram from ns to addr and waits for the echo, trying a
// few times since the first packet may wait for a handshake.
func UDPEcho(ns, addr string) (string, error) {
	var c net.Conn
	if err := inNS(ns, func() error {
		var err error
		c, err = net.Dial("udp4", addr)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	var lastErr error
	for i := 0; i < 3; i++ {
		c.SetDeadline(time.Now().Add(scaled(700 * time.Millisecond)))
		if _, err := c.Write([]byte("hello")); err != nil {
			lastErr = err
			continue
		}
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		lastErr = err
	}
	return "", lastErr
}

// Ping sends one ICMP echo from ns.
func (r *Rig) Ping(ns, ip string) error {
	wait := fmt.Sprint(int(math.Ceil(scaled(time.Second).Seconds())))
	out, err := r.run(ns, "ping", "-c", "1", "-W", wait, "-n", "-q", ip)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", ip, ns, err, strings.TrimSpace(out))
	}
	return nil
}

// Eventually polls fn until it returns nil or timeout (scaled) passes.
func Eventually(t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	timeout = scaled(timeout)
	deadline := time.Now().Add(timeout)
	var err error
	for i := 0; ; i++ {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v (%d tries): %v", what, timeout, i+1, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
