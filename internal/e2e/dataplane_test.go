package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/pkg/api"
)

// Ports of the echo servers on internal hosts.
var (
	tcpPorts = []int{22, 443, 8080}
	udpPorts = []int{5005, 6000}
)

// standardRig builds the topology, starts echo servers on both internal
// hosts and starts the daemon.
func standardRig(t *testing.T, daemonArgs ...string) *Rig {
	r := NewRig(t)
	r.Serve(r.IN1, in1Addr, "in1", tcpPorts, udpPorts)
	r.Serve(r.IN2, in2Addr, "in2", tcpPorts, udpPorts)
	r.StartDaemon(daemonArgs...)
	return r
}

func hostPort(ip string, port int) string { return fmt.Sprintf("%s:%d", ip, port) }

// reaches polls until a TCP echo from ns to addr answers with want's tag.
func reaches(t *testing.T, ns, addr, tag string) {
	t.Helper()
	Eventually(t, 10*time.Second, ns+" reaches "+addr, func() error {
		got, err := TCPEcho(ns, addr)
		if err != nil {
			return err
		}
		if got != tag+":hello" {
			return fmt.Errorf("answer %q, want %q", got, tag+":hello")
		}
		return nil
	})
}

func (r *Rig) peerJSON(id string) api.Peer {
	r.t.Helper()
	var p api.Peer
	if err := json.Unmarshal([]byte(r.MustCTL("peer", "show", id, "-o", "json")), &p); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// wgPeers lists the public keys configured on the gateway's interface, as
// the stock `wg` tool sees them.
func (r *Rig) wgPeers() string {
	return r.Must(r.NS, "wg", "show", r.Iface, "peers")
}

func TestDataPlane(t *testing.T) {
	r := standardRig(t)
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	cfg := r.Issue("acme/laptop")
	laptop := r.PartnerUp(r.PA, "pa"+r.id, cfg)

	t.Run("handshake and TCP and UDP echo", func(t *testing.T) {
		reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
		got, err := UDPEcho(r.PA, hostPort(in1Addr, 5005))
		if err != nil || got != "in1:hello" {
			t.Fatalf("UDP echo: %q, %v", got, err)
		}
		Eventually(t, 5*time.Second, "peer shows online with traffic", func() error {
			p := r.peerJSON("acme/laptop")
			if p.LastHandshake == nil || p.RxBytes == 0 || p.TxBytes == 0 || p.Endpoint == "" {
				return fmt.Errorf("peer %+v", p)
			}
			return nil
		})
		if out := r.MustCTL("peer", "list"); !strings.Contains(out, "online,") {
			t.Errorf("peer list does not show the peer online:\n%s", out)
		}
		st := r.MustCTL("status")
		for _, want := range []string{r.Iface + " (" + wgMode + ")", "1 active, 1 online", "Result:", "ok"} {
			if !strings.Contains(st, want) {
				t.Errorf("status lacks %q:\n%s", want, st)
			}
		}
	})

	pub := r.peerJSON("acme/laptop").PublicKey

	t.Run("suspend removes the peer and resume restores it", func(t *testing.T) {
		r.MustCTL("peer", "suspend", "acme/laptop")
		if strings.Contains(r.wgPeers(), pub) {
			t.Fatal("suspended peer is still on the interface")
		}
		if _, err := TCPEcho(r.PA, hostPort(in1Addr, 22)); err == nil {
			t.Fatal("suspended peer still reaches its grant")
		}
		r.MustCTL("peer", "resume", "acme/laptop")
		reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	})

	t.Run("a peer removed by hand comes back", func(t *testing.T) {
		r.Must(r.NS, "wg", "set", r.Iface, "peer", pub, "remove")
		Eventually(t, 5*time.Second, "peer re-added by the reconciler", func() error {
			if !strings.Contains(r.wgPeers(), pub) {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
		if out := r.MustCTL("audit", "--action", "dataplane.repair"); !strings.Contains(out, "extranetd") {
			t.Errorf("repair not in the audit log:\n%s", out)
		}
	})

	t.Run("restart keeps every peer working", func(t *testing.T) {
		r.StopDaemon()
		r.StartDaemon()
		if !strings.Contains(r.wgPeers(), pub) {
			t.Fatal("peer missing after restart")
		}
		reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	})

	t.Run("rotate: the old config stops, the new one works", func(t *testing.T) {
		newCfg := r.MustCTL("peer", "rotate", "acme/laptop")
		if strings.Contains(r.wgPeers(), pub) {
			t.Fatal("old key still on the interface after rotate")
		}
		if _, err := TCPEcho(r.PA, hostPort(in1Addr, 22)); err == nil {
			t.Fatal("old config still connects after rotate")
		}
		r.PartnerDown(r.PA, laptop)
		r.PartnerUp(r.PA, "pb"+r.id, newCfg)
		reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	})
}

func TestGatewayKeyAndFiles(t *testing.T) {
	controlPlane(t)
	r := standardRig(t)
	state := filepath.Join(r.Dir, "state")
	for path, want := range map[string]os.FileMode{
		state:                               0o700,
		filepath.Join(state, "extranet.db"): 0o600,
		filepath.Join(state, "gateway.key"): 0o600,
		r.Socket:                            0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
	var st api.Status
	json.Unmarshal([]byte(r.MustCTL("status", "-o", "json")), &st)
	if st.PublicKey == "" || !strings.Contains(r.Must(r.NS, "wg", "show", r.Iface, "public-key"), st.PublicKey) {
		t.Fatalf("status public key %q does not match the interface's", st.PublicKey)
	}
	r.StopDaemon()
	r.StartDaemon()
	var st2 api.Status
	json.Unmarshal([]byte(r.MustCTL("status", "-o", "json")), &st2)
	if st2.PublicKey != st.PublicKey {
		t.Errorf("gateway key changed across restart: %s -> %s", st.PublicKey, st2.PublicKey)
	}
	// SIGHUP repairs at once, without waiting for the (here long) interval.
	r.StopDaemon()
	r.StartDaemon("--reconcile-interval", "10m")
	broken := time.Now()
	r.Must(r.NS, "iptables", "-F", "FORWARD")
	r.HUP()
	Eventually(t, 3*time.Second, "repair on SIGHUP", func() error {
		if st := r.status(); st.LastRepair == nil || !st.LastRepair.After(broken) {
			return fmt.Errorf("not repaired: %s", st.Firewall)
		}
		if !strings.Contains(r.Must(r.NS, "iptables", "-S", "FORWARD"), "-j EXTRANET-FWD") {
			return fmt.Errorf("jump still missing")
		}
		return nil
	})
	// The only listener is the unix socket: no TCP port of the daemon's.
	if ss := r.Must(r.GW, "ss", "-Hltnp"); strings.Contains(ss, "extranetd") {
		t.Errorf("extranetd listens on TCP:\n%s", ss)
	}
	// A second daemon on the same state directory fails at once.
	start := time.Now()
	outb, err := r.Extranetd(append(r.DaemonArgs(), "--socket", filepath.Join(r.Dir, "other.sock"))...).CombinedOutput()
	out := string(outb)
	if err == nil || !strings.Contains(out, "another extranetd") {
		t.Errorf("second daemon: err %v, output %s", err, out)
	}
	if d := time.Since(start); d > scaled(5*time.Second) {
		t.Errorf("second daemon took %v to give up", d)
	}
}

// TestBusyListenPort: a gateway that cannot have its UDP port must say so
// and stop, not report ready while answering no one.
func TestBusyListenPort(t *testing.T) {
	needRig(t)
	r := NewRig(t)
	r.Serve(r.GW, "0.0.0.0", "squatter", nil, []int{51820})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := r.Extranetd(append(r.DaemonArgs(), "--listen-port", "51820")...)
	out, err := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...).CombinedOutput()
	if err == nil || ctx.Err() != nil || !strings.Contains(string(out), "UDP port 51820") || !strings.Contains(string(out), "already in use") {
		t.Fatalf("daemon with its port taken: err %v (timeout: %v)\n%s", err, ctx.Err(), out)
	}
	// Nothing is left that could pass a packet.
	for _, ns := range []string{r.GW, r.NS} {
		if _, err := r.run(ns, "ip", "link", "show", r.Iface); err == nil {
			t.Errorf("the interface outlived the failed start, in %s", ns)
		}
	}
}
