package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// handshakeOf is the gateway's latest handshake with the peer pub, in
// seconds since the epoch, as `wg show` prints it.
func (r *Rig) handshakeOf(pub string) string {
	r.t.Helper()
	for _, l := range strings.Split(r.Must(r.NS, "wg", "show", r.Iface, "latest-handshakes"), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == pub {
			return f[1]
		}
	}
	r.t.Fatalf("peer %s not on %s", pub, r.Iface)
	return ""
}

// TestKernelRestartKeepsSessions: a kernel interface outlives the daemon,
// so a restart (an upgrade, say) must neither drop an open connection nor
// make the partner handshake again.
func TestKernelRestartKeepsSessions(t *testing.T) {
	needMode(t, "kernel")
	r := standardRig(t)
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	r.PartnerUp(r.PA, "pa"+r.id, r.Issue("acme/laptop"))
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	c := openFlow(t, r.PA, hostPort(in1Addr, 22))
	pub := r.peerJSON("acme/laptop").PublicKey
	hs := r.handshakeOf(pub)

	r.StopDaemon()
	if _, err := c.Echo("while stopped", scaled(2*time.Second)); err != nil {
		t.Errorf("the open connection broke while the daemon was stopped: %v", err)
	}
	r.StartDaemon()
	if got, err := c.Echo("after", scaled(2*time.Second)); err != nil || got != "in1:after" {
		t.Fatalf("the open connection did not survive the restart: %q, %v", got, err)
	}
	if now := r.handshakeOf(pub); now != hs {
		t.Errorf("the restart cost a new handshake: %s, then %s", hs, now)
	}
	if log := r.DaemonLog(); !strings.Contains(log, "adopted existing WireGuard interface") || !strings.Contains(log, "link kept up") {
		t.Errorf("the restart does not log the adoption:\n%s", tail(log, 30))
	}
}

// TestKernelUpgradeMovesTheInterface: a release that enforced on the host
// left its kernel interface there. The first start of this one takes it
// into the gateway namespace, with its socket still on the host, and the
// partner gets through again without a new config.
func TestKernelUpgradeMovesTheInterface(t *testing.T) {
	needMode(t, "kernel")
	r := standardRig(t)
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	r.PartnerUp(r.PA, "pa"+r.id, r.Issue("acme/laptop"))
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	r.StopDaemon()
	// The old layout: the interface in the host, no gateway namespace.
	r.Must(r.NS, "ip", "link", "set", r.Iface, "netns", r.GW)
	r.must("ip", "netns", "del", r.NS)
	r.StartDaemon()
	if log := r.DaemonLog(); !strings.Contains(log, "moved WireGuard interface into the gateway namespace") {
		t.Errorf("the start does not log the move:\n%s", tail(log, 30))
	}
	if _, err := r.run(r.GW, "ip", "link", "show", r.Iface); err == nil {
		t.Error("the interface is still in the host namespace")
	}
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	r.checkMatrix(t, []probe{{r.PA, "tcp", hostPort(in2Addr, 22), false}, {r.PA, "tcp", hostPort(gwIn1, 22), false}})
}

// TestKernelAdoptsForeignInterface: an interface of the daemon's name that
// someone else set up (another key and port, an address of its own, a peer
// the state does not hold, link up) is taken over: brought to the wanted
// state, down until the firewall is in, and every change logged.
func TestKernelAdoptsForeignInterface(t *testing.T) {
	needMode(t, "kernel")
	r := NewRig(t)
	r.Serve(r.IN1, in1Addr, "in1", tcpPorts, udpPorts)
	foreign, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	// Made in the host and moved into the namespace, as the daemon does;
	// the daemon then adopts both.
	r.must("ip", "netns", "add", r.NS)
	r.Must(r.GW, "ip", "link", "add", r.Iface, "type", "wireguard")
	r.Must(r.GW, "ip", "link", "set", r.Iface, "netns", r.NS)
	r.Must(r.NS, "sh", "-c", fmt.Sprintf("echo %s | wg set %s listen-port 40000 private-key /dev/stdin peer %s allowed-ips 10.10.1.0/24",
		foreign, r.Iface, stranger.PublicKey()))
	r.Must(r.NS, "ip", "addr", "add", "10.99.0.1/24", "dev", r.Iface)
	r.Must(r.NS, "ip", "link", "set", r.Iface, "up", "mtu", "1300")

	r.StartDaemon()
	st := r.status()
	if got := strings.TrimSpace(r.Must(r.NS, "wg", "show", r.Iface, "public-key")); got != st.PublicKey {
		t.Errorf("interface key %s, want the gateway's %s", got, st.PublicKey)
	}
	if got := strings.TrimSpace(r.Must(r.NS, "wg", "show", r.Iface, "listen-port")); got != "51820" {
		t.Errorf("listen port %s, want 51820", got)
	}
	if peers := r.wgPeers(); strings.Contains(peers, stranger.PublicKey().String()) {
		t.Errorf("the foreign peer is still on the interface:\n%s", peers)
	}
	addrs := r.Must(r.NS, "ip", "-o", "addr", "show", "dev", r.Iface)
	if strings.Contains(addrs, "10.99.0.1") || !strings.Contains(addrs, gwTunnel+"/") {
		t.Errorf("addresses after adoption:\n%s", addrs)
	}
	log := r.DaemonLog()
	for _, want := range []string{
		"adopted existing WireGuard interface", "private key replaced", "link taken down",
		"listen port 40000 -> 51820", "MTU 1300 -> 1420", "removed address 10.99.0.1/24",
		"removed peers of the adopted interface",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the daemon log lacks %q:\n%s", want, tail(log, 30))
		}
	}
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	r.PartnerUp(r.PA, "pa"+r.id, r.Issue("acme/laptop"))
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
}

// TestNoKernelModule: asked for kernel WireGuard on a kernel without it,
// the daemon says so and stops, leaving nothing behind.
func TestNoKernelModule(t *testing.T) {
	needRig(t)
	if kernelWireGuard() {
		t.Skip("this kernel has the WireGuard module; the test needs one without it (it runs natively where CI's kernel lacks it)")
	}
	r := NewRig(t)
	out, err := r.Extranetd(append(r.DaemonArgs(), "--wireguard", "kernel")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no WireGuard module") || !strings.Contains(string(out), "--wireguard userspace") {
		t.Fatalf("extranetd --wireguard kernel without the module: err %v\n%s", err, out)
	}
	for _, ns := range []string{r.GW, r.NS} {
		if _, err := r.run(ns, "ip", "link", "show", r.Iface); err == nil {
			t.Errorf("an interface outlived the failed start, in %s", ns)
		}
	}
}
