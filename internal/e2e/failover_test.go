package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extranetgw/extranet/pkg/api"
)

// The failover topology: one LAN, a bridge in a namespace of its own, on
// which two gateways, a partner, an internal server and etcd meet. The
// address partners dial moves between the gateways.
const (
	lanEtcd   = "192.168.60.1"
	lanVIP    = "192.168.60.10"
	lanServer = "192.168.60.200"
	lanPrefix = "/24"
)

// lan builds the bridge and a port on it for each namespace, with its
// address, and removes the bridge's namespace when t ends.
func lan(t *testing.T, r *Rig, ports map[string]string) string {
	t.Helper()
	ns := "ex" + r.id + "ln"
	r.must("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	r.must("ip", "-n", ns, "link", "set", "lo", "up")
	r.must("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
	r.must("ip", "-n", ns, "addr", "add", lanEtcd+lanPrefix, "dev", "br0")
	r.must("ip", "-n", ns, "link", "set", "br0", "up")
	i := 0
	for member, addr := range ports {
		i++
		port := fmt.Sprintf("p%d", i)
		r.must("ip", "-n", ns, "link", "add", port, "type", "veth", "peer", "name", "lan0", "netns", member)
		r.must("ip", "-n", ns, "link", "set", port, "master", "br0")
		r.must("ip", "-n", ns, "link", "set", port, "up")
		r.must("ip", "-n", member, "addr", "add", addr+lanPrefix, "dev", "lan0")
		r.must("ip", "-n", member, "link", "set", "lan0", "up")
	}
	return ns
}

// prober sends a datagram through the tunnel every 20 ms and records when
// answers come, to time how long partners go unanswered.
type prober struct {
	mu      sync.Mutex
	answers []time.Time
	conn    net.Conn
	done    chan struct{}
}

func startProbe(t *testing.T, ns, addr string) *prober {
	t.Helper()
	p := &prober{done: make(chan struct{})}
	if err := inNS(ns, func() error {
		var err error
		p.conn, err = net.Dial("udp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		// At most ten minutes of probes, whatever the test does.
		for i := 0; i < 30000; i++ {
			select {
			case <-stop:
				return
			case <-t.C:
				p.conn.Write([]byte("probe"))
			}
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 64)
		for {
			if _, err := p.conn.Read(buf); err != nil {
				return
			}
			p.mu.Lock()
			p.answers = append(p.answers, time.Now())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		p.conn.Close()
		wg.Wait()
	})
	return p
}

// silence waits up to limit for an answer after until, and returns the
// longest the partner went without one from since to that answer.
func (p *prober) silence(t *testing.T, since, until time.Time, limit time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		answers := append([]time.Time(nil), p.answers...)
		p.mu.Unlock()
		if len(answers) > 0 && answers[len(answers)-1].After(until) {
			longest, last := time.Duration(0), since
			for _, at := range answers {
				if at.Before(since) {
					last = at
					continue
				}
				longest = max(longest, at.Sub(last))
				last = at
				if at.After(until) {
					break
				}
			}
			return longest
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the partner got no answer within %v", limit)
	return 0
}

// clusterStatus is extranetctl cluster status -o json on r.
func (r *Rig) clusterStatus() api.ClusterStatus {
	r.t.Helper()
	var c api.ClusterStatus
	if err := json.Unmarshal([]byte(r.MustCTL("cluster", "status", "-o", "json")), &c); err != nil {
		r.t.Fatal(err)
	}
	return c
}

// answering tells whether r's gateway answers partners: its WireGuard link
// up, and the shared address on its LAN port.
func (r *Rig) answering() (bool, error) {
	link, err := r.run(r.NS, "ip", "-o", "link", "show", r.Iface)
	if err != nil {
		// A userspace interface is gone with its daemon.
		return false, nil
	}
	addrs, err := r.run(r.GW, "ip", "-o", "-4", "addr", "show", "dev", "lan0")
	if err != nil {
		return false, err
	}
	up := strings.Contains(link, ",UP")
	held := strings.Contains(addrs, " "+lanVIP+"/")
	if up != held {
		return false, fmt.Errorf("link up %v but address held %v", up, held)
	}
	return up, nil
}

// pair is two gateways of one cluster on one LAN, taking turns answering
// a stock partner, which probes its grant through the tunnel and holds a
// TCP connection open.
type pair struct {
	t      *testing.T
	a, b   *Rig
	etcd   *etcdProc
	args   map[*Rig][]string
	active *Rig
	flow   *Conn
	probe  *prober
}

func newPair(t *testing.T) *pair {
	a := NewRig(t)
	b := NewRig(t)
	lanNS := lan(t, a, map[string]string{a.GW: "192.168.60.11", b.GW: "192.168.60.12", a.PA: "192.168.60.100", a.IN1: lanServer})
	a.Serve(a.IN1, lanServer, "srv", []int{22}, []int{5005})
	etcdp := runEtcd(t, lanNS, lanEtcd)
	etcd := etcdp.flags
	for _, r := range []*Rig{a, b} {
		r.Endpoint = lanVIP + ":51820"
	}

	a.StartDaemon()
	a.MustCTL("org", "create", "acme", "--grant", lanServer+"/32")
	a.StopDaemon()
	if out, err := a.Extranetd(append(append(a.DaemonArgs(), "cluster", "init"), etcd...)...).CombinedOutput(); err != nil {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	// The lease, and with it every time of the failover, stretches with
	// the machine: under emulation 2 s would be a fraction of the time a
	// question between two gateways takes.
	ttl := fmt.Sprintf("%ds", int(scaled(2*time.Second).Round(time.Second).Seconds()))
	ha := func(name, addr string) []string {
		return append([]string{"--cluster-name", name, "--vip", lanVIP + lanPrefix, "--vip-interface", "lan0", "--cluster-listen", addr + ":51821", "--role-ttl", ttl}, etcd...)
	}
	p := &pair{t: t, a: a, b: b, etcd: etcdp, args: map[*Rig][]string{a: ha("gw-a", "192.168.60.11"), b: ha("gw-b", "192.168.60.12")}}

	// A gateway joins with the cluster's key, or not at all: partners'
	// configs name it.
	join := func() (string, error) {
		out, err := b.Extranetd(append(append(b.DaemonArgs(), p.args[b]...), "cluster", "join")...).CombinedOutput()
		return string(out), err
	}
	if out, err := join(); err == nil || !strings.Contains(out, "copy it from a gateway of the cluster") {
		t.Errorf("cluster join without a key: %v %q; want a refusal that says to copy it", err, out)
	}
	if err := os.MkdirAll(filepath.Join(b.Dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(b.Dir, "state", "gateway.key")
	if err := os.WriteFile(keyPath, []byte(strings.TrimSpace(a.Must(a.GW, "wg", "genkey"))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := join(); err == nil || !strings.Contains(out, "not the cluster's") {
		t.Errorf("cluster join with another key: %v %q; want a refusal", err, out)
	}
	start := b.Extranetd(append(b.DaemonArgs(), p.args[b]...)...)
	timer := time.AfterFunc(scaled(30*time.Second), func() {
		if start.Process != nil {
			start.Process.Kill()
		}
	})
	out, err := start.CombinedOutput()
	timer.Stop()
	if err == nil || !strings.Contains(string(out), "not the cluster's") {
		t.Errorf("extranetd with another key: %v %q; want it not to start", err, out)
	}
	key, err := os.ReadFile(filepath.Join(a.Dir, "state", "gateway.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := join(); err != nil || !strings.Contains(out, "holds a copy of the cluster's state") {
		t.Fatalf("cluster join: %v\n%s", err, out)
	}
	a.StartDaemon(p.args[a]...)
	b.StartDaemon(p.args[b]...)
	rigs := map[string]*Rig{"gw-a": a, "gw-b": b}

	// Exactly one answers, and both know which.
	Eventually(t, 10*time.Second, "one gateway is active", func() error {
		c := a.clusterStatus()
		if rigs[c.Active] == nil || b.clusterStatus().Active != c.Active {
			return fmt.Errorf("gw-a says %q is active, gw-b disagrees", c.Active)
		}
		p.active = rigs[c.Active]
		return checkOneAnswers(p.active, p.other(p.active))
	})

	a.PartnerUp(a.PA, "pa"+a.id, p.active.Issue("acme/laptop"))
	reaches(t, a.PA, hostPort(lanServer, 22), "srv")
	p.flow = openFlow(t, a.PA, hostPort(lanServer, 22))
	p.probe = startProbe(t, a.PA, hostPort(lanServer, 5005))
	// The active records where the partner is, for the next one.
	Eventually(t, 5*time.Second, "the partner's endpoint is recorded", func() error {
		if ep := p.other(p.active).peerJSON("acme/laptop").Endpoint; ep == "" {
			return fmt.Errorf("no endpoint recorded yet")
		}
		return nil
	})
	// A standby takes the role once it has reached etcd for twice the
	// longest lease: a failure before that is waited out, and is not
	// what the failovers measure.
	Eventually(t, 15*time.Second, "the standby is ready to take over", func() error {
		if c := p.other(p.active).clusterStatus(); c.Role != "standby" || !c.Ready {
			return fmt.Errorf("role %q, ready %v", c.Role, c.Ready)
		}
		return nil
	})
	return p
}

func (p *pair) other(r *Rig) *Rig {
	if r == p.a {
		return p.b
	}
	return p.a
}

// failure is one way the active stops answering, and how the gateway comes
// back afterwards, as a standby.
type failure struct {
	name    string
	fail    func(p *pair, r *Rig)
	recover func(p *pair, r *Rig)
}

var failures = []failure{
	{"kill -9", func(p *pair, r *Rig) {
		r.KillDaemon()
		// What systemd runs once the daemon is dead (ExecStopPost).
		if out, err := r.Extranetd(append(append(r.DaemonArgs(), p.args[r]...), "stop-hook")...).CombinedOutput(); err != nil {
			p.t.Fatalf("stop-hook: %v\n%s", err, out)
		}
	}, func(p *pair, r *Rig) { r.StartDaemon(p.args[r]...) }},

	{"switchover", func(p *pair, r *Rig) {
		// Asked through the standby: any gateway of the cluster will do.
		// One that just started is not ready yet, and says so.
		Eventually(p.t, 10*time.Second, "a switchover", func() error {
			out, stderr, code := p.other(r).CTL("cluster", "switchover")
			switch {
			case code != 0 && strings.Contains(stderr, "no other gateway is ready"):
				return errors.New(stderr)
			case code != 0 || !strings.Contains(out, "handed partners over to"):
				p.t.Fatalf("switchover: exit %d, %q %q", code, out, stderr)
			}
			return nil
		})
	}, func(*pair, *Rig) {}},

	{"cut off from etcd", func(p *pair, r *Rig) {
		r.Must(r.GW, "iptables", "-I", "OUTPUT", "-d", lanEtcd, "-j", "DROP")
	}, func(p *pair, r *Rig) {
		// It took itself off the partners' path before the other took
		// over; it stays a standby once it reaches etcd again.
		if up, err := r.answering(); up || err != nil {
			p.t.Errorf("the gateway cut off from etcd still answers partners (%v)", err)
		}
		r.Must(r.GW, "iptables", "-D", "OUTPUT", "-d", lanEtcd, "-j", "DROP")
	}},

	{"power loss", func(p *pair, r *Rig) {
		// Every link of the active goes: the partners', etcd's, the
		// other gateway's.
		r.Must(r.GW, "ip", "link", "set", "lan0", "down")
	}, func(p *pair, r *Rig) {
		if up, err := r.answering(); up || err != nil {
			p.t.Errorf("the gateway that lost its links still answers partners (%v)", err)
		}
		r.Must(r.GW, "ip", "link", "set", "lan0", "up")
	}},
}

// failover makes the active fail as f says, and returns how long the
// partner went without an answer. The other gateway must then answer alone,
// at the same address, with the open connection carrying on; the one that
// failed comes back as a standby.
func (p *pair) failover(f failure) time.Duration {
	t := p.t
	t.Helper()
	old := p.active
	began := time.Now()
	f.fail(p, old)
	p.active = p.other(old)
	Eventually(t, 10*time.Second, f.name+": the other gateway answers partners", func() error {
		return checkOneAnswers(p.active, old)
	})
	gap := p.probe.silence(t, began, time.Now(), scaled(10*time.Second))
	if gap > scaled(3*time.Second) {
		t.Errorf("%s: the partner went %v without an answer; want under 3 s", f.name, gap)
	}
	if got := p.a.Must(p.a.PA, "wg", "show", "pa"+p.a.id, "endpoints"); !strings.Contains(got, lanVIP+":51820") {
		t.Errorf("%s: the partner's endpoint is %q; want the shared address %s:51820", f.name, strings.TrimSpace(got), lanVIP)
	}
	if got, err := p.flow.Echo("after "+f.name, scaled(5*time.Second)); err != nil || got != "srv:after "+f.name {
		t.Errorf("%s: the open connection answered %q, %v; want it to carry on", f.name, got, err)
	}
	f.recover(p, old)
	Eventually(t, 15*time.Second, f.name+": the old active is a standby, ready to take over", func() error {
		if c := old.clusterStatus(); c.Role != "standby" || !c.Ready {
			return fmt.Errorf("role %q, ready %v", c.Role, c.Ready)
		}
		return checkOneAnswers(p.active, old)
	})
	return gap
}

// TestClusterFailover: two gateways on one LAN take turns answering
// partners at one address. The partner's stock config works whichever
// answers; when the active dies (kill -9, with the stop hook systemd runs
// after it), is cut off from etcd, loses every link, or hands over on
// purpose, the other takes the address and the link and starts the
// handshake itself, so the partner is answered again within 3 s, an open
// TCP connection carries on, and the two never answer at once.
func TestClusterFailover(t *testing.T) {
	p := newPair(t)
	for _, f := range failures {
		t.Logf("%s: the partner went %v without an answer", f.name, p.failover(f).Round(time.Millisecond))
	}
	p.etcdGone()

	c := p.active.clusterStatus()
	if len(c.Failovers) < 5 || c.Failovers[0].To != c.Active {
		t.Errorf("cluster status lists failovers %+v; want the last four and the first promotion", c.Failovers)
	} else if f := c.Failovers[0]; f.From == "" {
		t.Errorf("the last failover %+v does not say which gateway it was from", f)
	}
	p.active.MustCTL("audit", "verify")
	if log := p.active.MustCTL("audit", "--action", "cluster.switchover"); !strings.Contains(log, "cluster.switchover") {
		t.Errorf("the switchover is not in the audit log:\n%s", log)
	}
}

// TestBenchFailover times EXTRANET_BENCH_FAILOVER rounds of every failure,
// for docs/performance.md (scripts/bench-failover.sh).
func TestBenchFailover(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("EXTRANET_BENCH_FAILOVER"))
	if rounds <= 0 {
		t.Skip("set EXTRANET_BENCH_FAILOVER to a number of rounds (scripts/bench-failover.sh)")
	}
	p := newPair(t)
	// A change's latency through etcd, as an admin sees it: `peer issue`
	// through the CLI, on the active and on a standby.
	for _, r := range []*Rig{p.active, p.other(p.active)} {
		role := "active"
		if r != p.active {
			role = "standby"
		}
		var took []time.Duration
		for i := 0; i < 30; i++ {
			began := time.Now()
			r.MustCTL("peer", "issue", fmt.Sprintf("acme/bench-%s-%d", role, i), "--out", filepath.Join(r.Dir, "bench.conf"))
			took = append(took, time.Since(began))
		}
		slices.Sort(took)
		fmt.Printf("peer issue through the CLI on the %s: p50 %.1f ms, p90 %.1f ms (30 issues)\n", role, took[15].Seconds()*1000, took[27].Seconds()*1000)
	}
	gaps := map[string][]time.Duration{}
	for i := 0; i < rounds; i++ {
		for _, f := range failures {
			gaps[f.name] = append(gaps[f.name], p.failover(f))
		}
	}
	fmt.Printf("| failure | rounds | median | min | max |\n|---|---|---|---|---|\n")
	for _, f := range failures {
		g := gaps[f.name]
		slices.Sort(g)
		ms := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
		fmt.Printf("| %s | %d | %s | %s | %s |\n", f.name, len(g), ms(g[len(g)/2]), ms(g[0]), ms(g[len(g)-1]))
	}
}

// checkOneAnswers says why not unless active answers partners and standby
// does not.
func checkOneAnswers(active, standby *Rig) error {
	if up, err := active.answering(); !up || err != nil {
		return fmt.Errorf("the active does not answer partners (%v)", err)
	}
	if up, err := standby.answering(); up || err != nil {
		return fmt.Errorf("the standby answers partners too (%v)", err)
	}
	return nil
}

// etcdGone kills etcd (as its quorum's loss would leave it, for every
// gateway): the active keeps answering partners, since the other says it
// cannot reach etcd either; changes are refused; and once etcd is back,
// one gateway answers.
func (p *pair) etcdGone() {
	t := p.t
	began := time.Now()
	p.etcd.kill()
	time.Sleep(scaled(5 * time.Second))
	if gap := p.probe.silence(t, began, time.Now(), scaled(5*time.Second)); gap > scaled(time.Second) {
		t.Errorf("with etcd gone the partner went %v without an answer; want the active to keep answering", gap)
	}
	back := time.Now()
	if err := checkOneAnswers(p.active, p.other(p.active)); err != nil {
		t.Errorf("with etcd gone: %v", err)
	}
	if _, stderr, code := p.active.CTL("org", "create", "globex", "--grant", "10.9.9.0/24"); code == 0 || !strings.Contains(stderr, "etcd") {
		t.Errorf("a change with etcd gone: exit %d, %q; want a refusal that names etcd", code, stderr)
	}
	p.etcd.restart()
	Eventually(t, 20*time.Second, "one gateway answers once etcd is back", func() error {
		c := p.a.clusterStatus()
		if c.Active == "" || p.b.clusterStatus().Active != c.Active {
			return fmt.Errorf("gw-a says %q is active, gw-b disagrees", c.Active)
		}
		if c.Active == "gw-a" {
			p.active = p.a
		} else {
			p.active = p.b
		}
		return checkOneAnswers(p.active, p.other(p.active))
	})
	// etcd was killed and started again, which a cluster's quorum is
	// not: its leases may have ended by then, and a gateway is promoted
	// anew once it reached etcd long enough. Measured, not asserted.
	t.Logf("etcd gone for %v: the partner went at most %v without an answer while it was, and %v after it came back", back.Sub(began).Round(time.Second),
		p.probe.silence(t, began, back, scaled(5*time.Second)).Round(time.Millisecond), p.probe.silence(t, back, time.Now(), scaled(5*time.Second)).Round(time.Millisecond))

}
