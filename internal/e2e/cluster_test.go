package e2e

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/cluster/etcdtest"
)

// The test binary runs etcd itself when these are set: started with `ip
// netns exec`, its etcd serves inside a test's namespace, as a gateway
// cluster's would on its private network.
const (
	etcdDirEnv  = "EXTRANET_E2E_ETCD_DIR"
	etcdHostEnv = "EXTRANET_E2E_ETCD_HOST"
	// etcdTLSEnv is the directory of the server's certificate and key and
	// the CA (etcdtest.WriteCerts): etcd then serves over TLS and asks
	// for a client certificate, as a production one should.
	etcdTLSEnv = "EXTRANET_E2E_ETCD_TLS"
)

// etcdPortsEnv, when set ("CLIENT,PEER"), has serveEtcd listen on those
// ports: an etcd killed and started again, where its clients knew it.
const etcdPortsEnv = "EXTRANET_E2E_ETCD_PORTS"

// serveEtcd runs a single-member etcd until SIGTERM, printing its client
// and peer URLs on a line of their own once it serves.
func serveEtcd(dir, host string) int {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	certs := os.Getenv(etcdTLSEnv)
	var client, peer int
	fmt.Sscanf(os.Getenv(etcdPortsEnv), "%d,%d", &client, &peer)
	s, err := etcdtest.StartTLSOn(dir, host, client, peer, etcdtest.TLS{
		CAFile:   filepath.Join(certs, "ca.pem"),
		CertFile: filepath.Join(certs, "server.pem"),
		KeyFile:  filepath.Join(certs, "server-key.pem"),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(s.URL, s.PeerURL())
	<-stop
	s.Stop()
	return 0
}

// etcdProc is an etcd the test binary runs in a namespace of the test's.
type etcdProc struct {
	t          *testing.T
	ns, host   string
	dir, certs string
	flags      []string
	ports      string
	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{}
}

// startEtcd runs etcd in ns, listening on host over TLS, until the test
// ends or stop is called. It returns the flags a gateway reaches it with.
func startEtcd(t *testing.T, ns, host string) (flags []string, stop func()) {
	p := runEtcd(t, ns, host)
	return p.flags, p.stop
}

func runEtcd(t *testing.T, ns, host string) *etcdProc {
	t.Helper()
	p := &etcdProc{t: t, ns: ns, host: host, dir: t.TempDir(), certs: t.TempDir()}
	_, client, err := etcdtest.WriteCerts(p.certs, host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	clientURL, peerURL := p.launch()
	p.flags = []string{"--etcd-endpoints", clientURL, "--etcd-ca-file", client.CAFile, "--etcd-cert-file", client.CertFile, "--etcd-key-file", client.KeyFile}
	// Started again, it listens where it did.
	cu, _ := url.Parse(clientURL)
	pu, _ := url.Parse(peerURL)
	p.ports = cu.Port() + "," + pu.Port()
	return p
}

// launch starts the process and waits until it serves.
func (p *etcdProc) launch() (clientURL, peerURL string) {
	t := p.t
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", p.ns, self)
	cmd.Env = append(os.Environ(), etcdDirEnv+"="+p.dir, etcdHostEnv+"="+p.host, etcdTLSEnv+"="+p.certs)
	if p.ports != "" {
		cmd.Env = append(cmd.Env, etcdPortsEnv+"="+p.ports)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			urls <- strings.TrimSpace(sc.Text())
		}
		close(urls)
	}()
	select {
	case u, ok := <-urls:
		if !ok {
			t.Fatal("etcd exited before it served")
		}
		clientURL, peerURL, _ = strings.Cut(u, " ")
		return clientURL, peerURL
	case <-time.After(scaled(30 * time.Second)):
		t.Fatal("etcd did not serve within 30 s")
	}
	return "", ""
}

// stop ends etcd as an admin would (SIGTERM), and kill as a crash would;
// restart starts it again on its data, where it listened.
func (p *etcdProc) stop() { p.signal(syscall.SIGTERM) }
func (p *etcdProc) kill() { p.signal(syscall.SIGKILL) }
func (p *etcdProc) restart() {
	p.t.Helper()
	p.launch()
}

func (p *etcdProc) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// TestClusterSharesState: two gateways share one state through etcd. A
// single gateway's state becomes the cluster's without loss; what an admin
// changes through either gateway is in force on the other's data plane (a
// peer issued through one reaches its grant through the other, a revoke
// through one kills the flow on the other), and both show one audit chain.
func TestClusterSharesState(t *testing.T) {
	a := NewRig(t)
	b := NewRig(t)
	a.Serve(a.IN1, in1Addr, "in1", tcpPorts, nil)

	// A single gateway with some state of its own.
	a.StartDaemon()
	a.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	a.StopDaemon()

	// The gateways' private network, where etcd serves.
	a.link(a.GW, "to-peergw", "192.168.77.1/30", b.GW, "to-peergw", "192.168.77.2/30")
	etcd, stopEtcd := startEtcd(t, a.GW, "192.168.77.1")

	if out, err := a.Extranetd(append(append(a.DaemonArgs(), "cluster", "init"), etcd...)...).CombinedOutput(); err != nil {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	if out, err := a.Extranetd(append(append(a.DaemonArgs(), "cluster", "init"), etcd...)...).CombinedOutput(); err == nil || !strings.Contains(string(out), "already holds a state") {
		t.Errorf("a second cluster init: %v %q, want a refusal", err, out)
	}
	// One gateway key for the cluster: configs work whichever gateway
	// answers.
	key, err := os.ReadFile(filepath.Join(a.Dir, "state", "gateway.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(b.Dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.Dir, "state", "gateway.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	a.StartDaemon(append(etcd, "--cluster-name", "gw-a", "--metrics-listen", "127.0.0.1:9586")...)
	b.StartDaemon(append(etcd, "--cluster-name", "gw-b")...)
	Eventually(t, 10*time.Second, "cluster status lists both gateways, the copy up to date", func() error {
		out := b.MustCTL("cluster", "status")
		if !strings.Contains(out, "gw-a") || !strings.Contains(out, "gw-b (this one)") || !strings.Contains(out, "the cluster's newest") || !strings.Contains(out, " ok (since") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	Eventually(t, 10*time.Second, "the other gateway's metrics say it follows", func() error {
		_, body, err := httpGet(a.GW, "127.0.0.1:9586", "/metrics")
		if err != nil {
			return err
		}
		if !strings.Contains(body, "extranet_cluster_following 1") {
			return fmt.Errorf("no extranet_cluster_following 1 in /metrics")
		}
		return nil
	})

	if out := b.MustCTL("org", "list"); !strings.Contains(out, "acme") {
		t.Fatalf("the second gateway does not have the first one's organisation:\n%s", out)
	}
	// Issued through b, in force on a: a's partner reaches the grant.
	a.PartnerUp(a.PA, "pa"+a.id, b.Issue("acme/laptop"))
	reaches(t, a.PA, hostPort(in1Addr, 22), "in1")

	// Issued through a, in force on a; it must outlive etcd's loss.
	a.PartnerUp(a.PB, "pb"+a.id, a.Issue("acme/phone"))
	reaches(t, a.PB, hostPort(in1Addr, 22), "in1")

	// Revoked through b: the flow on a dies.
	c := openFlow(t, a.PA, hostPort(in1Addr, 22))
	b.MustCTL("peer", "revoke", "acme/laptop", "--yes")
	took := dies(t, c, time.Second, "a revoke through the other gateway")
	t.Logf("the flow on the other gateway died within %v of the revoke's return", took.Round(time.Millisecond))

	// One audit chain, whichever gateway wrote each event.
	for _, r := range []*Rig{a, b} {
		r.MustCTL("audit", "verify")
		log := r.MustCTL("audit")
		for _, action := range []string{"org.create", "peer.issue", "peer.revoke"} {
			if !strings.Contains(log, action) {
				t.Errorf("the audit log misses %s:\n%s", action, log)
			}
		}
	}

	// Without etcd the gateways fail static: changes are refused with an
	// error that names etcd, and a gateway that restarts comes back on its
	// last copy of the state, with what it had in force.
	laptop, phone := a.peerJSON("acme/laptop").PublicKey, a.peerJSON("acme/phone").PublicKey
	stopEtcd()
	if _, stderr, code := b.CTL("org", "create", "globex", "--grant", "10.10.2.0/24"); code == 0 || !strings.Contains(stderr, "etcd") {
		t.Errorf("a change without etcd: exit %d, %q; want a refusal that names etcd", code, stderr)
	}
	a.StopDaemon()
	a.StartDaemon(append(etcd, "--cluster-name", "gw-a")...)
	if out := a.MustCTL("cluster", "status"); !strings.Contains(out, "etcd did not answer") {
		t.Errorf("cluster status without etcd:\n%s", out)
	}
	if peers := a.wgPeers(); !strings.Contains(peers, phone) || strings.Contains(peers, laptop) {
		t.Errorf("a gateway restarted without etcd holds peers %q; want the phone's key and not the revoked laptop's", peers)
	}
	if out := a.MustCTL("org", "list"); !strings.Contains(out, "acme") {
		t.Errorf("a gateway restarted without etcd lost its copy:\n%s", out)
	}
}
