package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/daemon"
	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/client"
	"github.com/extranetgw/extranet/pkg/wgconfig"
)

// TestBench measures the gateway at scale against the naive way (a script
// running `wg set` and `iptables -A` per peer and grant). It is a harness,
// not a pass/fail test: scripts/bench.sh runs it and docs/performance.md
// holds a run. It never asserts timings.
func TestBench(t *testing.T) {
	if os.Getenv("EXTRANET_BENCH") == "" {
		t.Skip("a measurement, not a test: run scripts/bench.sh")
	}
	needRig(t)
	nOrgs, perOrg, groups := envInt("BENCH_ORGS", 1000), envInt("BENCH_PEERS_PER_ORG", 10), envInt("BENCH_GROUPS", 5)
	b := &bench{t: t}
	r := NewRig(t)
	r.Serve(r.IN1, in1Addr, "in1", []int{22}, nil)
	iperf := exec.Command("ip", "netns", "exec", r.IN1, "iperf3", "-s", "-B", in1Addr)
	if err := iperf.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iperf.Process.Kill(); iperf.Wait() })
	// The rig's host routes between its own networks, as the router the
	// naive gateways of figure 6 are: the daemon keeps a host that did not
	// forward from forwarding anything but partner traffic, which would
	// drop their path.
	r.Must(r.GW, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// Production intervals, not the rig's quick ones: at 10,000 peers a
	// statistics poll every 500 ms would keep a core busy.
	def := daemon.Defaults()
	flags := []string{"--tunnel-network", "100.64.0.0/12", "--log-level", "info",
		"--reconcile-interval", def.ReconcileInterval.String(), "--stats-interval", def.StatsInterval.String()}
	prof := newProfiler(t, r)
	if prof != nil {
		flags = append(flags, "--pprof-listen", pprofAddr)
	}

	// The state a large gateway has: orgs × peers, five grants each, and
	// access groups in every org.
	state := filepath.Join(r.Dir, "state")
	last := seed(t, state, nOrgs, perOrg, groups)
	fi, _ := os.Stat(filepath.Join(state, "extranet.db"))

	coldProfile := prof.cpu("cold-start", 4*time.Second)
	start := time.Now()
	r.StartDaemon(flags...)
	cold := time.Since(start)
	coldProfile()
	prof.fetch("heap-started", "heap")
	b.row("1. cold start to reconciled", fmt.Sprintf("%d peers, %d orgs", nOrgs*perOrg, nOrgs), ms(cold), naiveColdStart(t, r, nOrgs*perOrg), "")
	memNote := fmt.Sprintf("db %.1f MB", float64(fi.Size())/1e6)
	if wgMode == "kernel" {
		memNote += "; the kernel's WireGuard memory is not the daemon's and is not counted"
	}
	b.row("7. resident memory", fmt.Sprintf("%d peers", nOrgs*perOrg), fmt.Sprintf("%.0f MB", rssMB(t, r)), "", memNote)

	// 2. Issue latency through the real CLI, and throughput through the API.
	var lat []time.Duration
	for i := 0; i < envInt("BENCH_CLI_ISSUES", 100); i++ {
		s := time.Now()
		r.MustCTL("peer", "issue", fmt.Sprintf("%s/cli%d", last, i), "-o", "json")
		lat = append(lat, time.Since(s))
	}
	b.row("2. peer issue via CLI", fmt.Sprintf("%d peers present", nOrgs*perOrg), "p50 "+ms(pct(lat, 50))+", p99 "+ms(pct(lat, 99)), naiveIssue(t, r, nOrgs*perOrg), "")
	apiProfile := prof.cpu("api-issue", 4*time.Second)
	rate := apiIssueRate(t, r, nOrgs, 8, envInt("BENCH_API_ISSUES", 1600))
	apiProfile()
	prof.fetch("heap-after-issues", "heap")
	b.row("2. peer issue via API", "8 concurrent clients", fmt.Sprintf("%.0f issues/s", rate), "", "")

	// 4. Expire over every live peer (nothing due, so it scans all).
	s := time.Now()
	r.MustCTL("expire", "--idle", "30d", "--unused", "30d")
	b.row("4. expire, live gateway", fmt.Sprintf("%d peers", nOrgs*perOrg), ms(time.Since(s)), "", "through the CLI, nothing due")

	// A partner in the last org: its jump is the last of all, the worst
	// case; and in its last group, whose member set the org's chain tests
	// last.
	r.MustCTL("org", "grant", last, "10.10.1.0/24")
	lastGroup := []string{}
	if groups > 1 {
		g := fmt.Sprintf("g%d", groups-1)
		r.MustCTL("group", "grant", last+"/"+g, "10.10.1.0/24")
		lastGroup = []string{"--group", g}
	}
	cfg := r.Issue(last+"/bench", lastGroup...)
	conf := r.PartnerUp(r.PA, "pa"+r.id, cfg)
	// A second peer of that org, whose address stands in for the partner
	// in the rules-alone measurement (see rulesOnly).
	r.Issue(last+"/rules", lastGroup...)
	rp := r.peerJSON(last + "/rules")
	// A peer of the first organisation, whose address floods in figure 11.
	flooder := r.peerJSON("org0001/p0")
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")

	// 3. Revoke to flow-dead.
	dead, took := revokeToDead(t, r, last)
	b.row("3. revoke to flow dead", "open TCP flow", ms(dead), "", "revoke command returned in "+ms(took))

	// 5. New connections and throughput: the full ruleset against one
	// organisation, and the naive per-peer ruleset in front of ours.
	//
	// The bench puts rules of its own into the gateway namespace (the naive
	// chain, the rules-alone jumps), whose filter table is the daemon's
	// whole: its drift check replaces the table on any difference from
	// what it applied, the bench's rules included, at every
	// --reconcile-interval (10 s in this bench), and so does any change of
	// the organisations or of the host's addresses. So every daemon that
	// carries such rules runs with an interval of an hour, far past the
	// measurements on it, the rules go in after its last change of the
	// organisations, and each daemon started gets them anew.
	long := append(slices.Clone(flags), "--reconcile-interval", "1h")
	p := r.peerJSON(last + "/bench")
	src := rp.Address
	r.PartnerDown(r.PA, conf)
	r.StopDaemon()
	r.StartDaemon(long...)
	conf = r.PartnerUp(r.PA, "pa"+r.id, cfg)
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	naiveRules(t, r, nOrgs*perOrg*5)
	naive := bestOf(3, func() float64 { return connRate(t, r.PA, hostPort(in1Addr, 22), 2*time.Second) })
	naiveBW := bestOf(3, func() float64 { return iperfMbps(t, r, r.PA) })
	// Still there, so it was the naive chain that was measured.
	r.Must(r.NS, "iptables", "-C", "FORWARD", "-i", r.Iface, "-j", "NAIVE")
	r.Must(r.NS, "iptables", "-D", "FORWARD", "-i", r.Iface, "-j", "NAIVE")
	r.Must(r.NS, "iptables", "-F", "NAIVE")
	r.Must(r.NS, "iptables", "-X", "NAIVE")
	// … and the full and the one-org gateway (same keys, so the partner's
	// config stays valid) take turns, each round starting each daemon
	// afresh: a machine that slows down part way through slows both alike,
	// and the figure is the median of the rounds' ratios, with their range.
	r.PartnerDown(r.PA, conf)
	r.StopDaemon()
	stateOne := filepath.Join(r.Dir, "state-one")
	copyDir(t, state, stateOne)
	oneOrg(t, r, stateOne, last, []api.Peer{p, rp}, cfg, nOrgs*perOrg)
	// The same gateway without groups: every peer in its org's default
	// group, the same keys, addresses and organisations.
	stateFlat := filepath.Join(r.Dir, "state-flat")
	copyDir(t, state, stateFlat)
	flatten(t, stateFlat)
	rounds := envInt("BENCH_ROUNDS", 5)
	activityCost(t, b, r, prof, state, long, cfg, src, rounds)
	floodCost(t, b, r, state, long, cfg, src, flooder.Address, rounds)

	type sample struct{ conn, rules, bw float64 }
	measure := func(dir, name string, round int) sample {
		// The daemon refuses a namespace holding links it did not make,
		// and the rules-alone veth is the bench's (rulesOnly makes it
		// again).
		r.run(r.NS, "ip", "link", "del", rulesNSVeth)
		r.StartDaemon(append(slices.Clone(long), "--state-dir", dir)...)
		rulesOnly(t, r, src)
		conf = r.PartnerUp(r.PA, "pa"+r.id, cfg)
		reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
		done := func() {}
		if round == 0 {
			done = prof.cpu("conn-"+name, 4*time.Second)
		}
		var s sample
		s.conn = connRate(t, r.PA, hostPort(in1Addr, 22), 2*time.Second)
		done()
		s.rules = connRateFrom(t, r.PB, src, hostPort(in1Addr, 22), 2*time.Second)
		s.bw = iperfMbps(t, r, r.PA)
		return s
	}
	// Indexed by state: the full gateway, the same without groups, one org.
	var conns, rules, bws [3][]float64
	for i := 0; i < rounds; i++ {
		for k, dir := range []string{state, stateFlat, stateOne} {
			s := measure(dir, []string{"full", "flat", "one"}[k], i)
			conns[k], rules[k], bws[k] = append(conns[k], s.conn), append(rules[k], s.rules), append(bws[k], s.bw)
			// The one-org gateway of the last round stays up for what follows.
			if k < 2 || i < rounds-1 {
				r.PartnerDown(r.PA, conf)
				r.StopDaemon()
			}
		}
	}
	oneBW := median(bws[2])
	// Who is busy while the tunnel is full: the gateway, or the partner's
	// own WireGuard.
	tunnelProfile := prof.cpu("tunnel-iperf", 3*time.Second)
	busy := "partner on kernel WireGuard, whose CPU time is the kernel's, not a process's"
	if wgMode == "userspace" {
		gw, partner := daemonPID(r), pidOf(t, "wireguard-go pa"+r.id)
		gw0, partner0, began := procTicks(gw), procTicks(partner), time.Now()
		iperfMbps(t, r, r.PA)
		busy = fmt.Sprintf("partner on Debian's wireguard-go; CPU during it: gateway %.0f%%, partner's wireguard-go %.0f%% of one core",
			cpuPercent(procTicks(gw)-gw0, time.Since(began)), cpuPercent(procTicks(partner)-partner0, time.Since(began)))
	}
	tunnelProfile()
	vsOne := func(v [3][]float64) [2][]float64 { return [2][]float64{v[0], v[2]} }
	vsFlat := func(v [3][]float64) [2][]float64 { return [2][]float64{v[0], v[1]} }
	at := fmt.Sprintf("%d orgs × %d groups vs 1 org, %d peers each", nOrgs, groups, nOrgs*perOrg)
	b.row("5. new connections/s, one partner", at, compared(vsOne(conns), rounds, ""),
		fmt.Sprintf("%.0f (%.2f)", naive, naive/median(conns[2])), fmt.Sprintf("naive: %d per-peer rules in the gateway namespace, best of 3", nOrgs*perOrg*5))
	b.row("5. new connections/s, rules alone", at, compared(vsOne(rules), rounds, ""),
		"", "a veth of its own into the gateway namespace, into the same chains, no WireGuard")
	b.row("5. TCP throughput, one partner", at, compared(vsOne(bws), rounds, " Mbit/s"),
		fmt.Sprintf("%.0f Mbit/s (%.2f)", naiveBW, naiveBW/oneBW), "")
	at = fmt.Sprintf("%d orgs × %d groups vs × 1 group, %d peers", nOrgs, groups, nOrgs*perOrg)
	b.row("9. new connections/s, groups", at, compared(vsFlat(conns), rounds, ""), "", "partner in its org's last group; the same gateway with every peer in its default group")
	b.row("9. new connections/s, groups, rules alone", at, compared(vsFlat(rules), rounds, ""), "", "")

	// 6. The tunnel against plain veth through the same gateway host: PB
	// reaches in1 through the host alone, where the tunnel's packets also
	// cross the gateway namespace.
	r.Must(r.PB, "ip", "route", "replace", "10.10.1.0/24", "via", "198.18.2.1")
	plain := bestOf(3, func() float64 { return iperfMbps(t, r, r.PB) })
	b.row("6. TCP throughput, tunnel vs plain veth", "same namespaces", fmt.Sprintf("%.0f vs %.0f Mbit/s (%.2f)", oneBW, plain, oneBW/plain), "", busy)
	r.PartnerDown(r.PA, conf)

	// Debian's wireguard-go (2022) moves one packet per syscall and bounds
	// the figure above. A partner on the wireguard-go the gateway embeds
	// shows what the gateway itself can do, and a bare wireguard-go in the
	// gateway's place shows what extranetd costs on top of it.
	cur := os.Getenv("EXTRANET_BENCH_WIREGUARD_GO")
	withCur := cur != "" && wgMode == "userspace"
	var curBW float64
	if withCur {
		r.WireGuardGo = cur
		conf = r.PartnerUp(r.PA, "pa"+r.id, cfg)
		reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
		curBW = bestOf(3, func() float64 { return iperfMbps(t, r, r.PA) })
		if prof != nil {
			currentProfile := prof.cpu("tunnel-current", 3*time.Second)
			iperfMbps(t, r, r.PA)
			currentProfile()
		}
		r.PartnerDown(r.PA, conf)
	}

	// From here on there is no daemon: bare WireGuard takes its place, with
	// its key and port and the partner's peer alone, no firewall.
	removeGateway(t, r)
	impl := "" // the kernel's
	if wgMode == "userspace" {
		impl = "wireguard-go"
		if cur != "" {
			impl = cur
		}
	}
	if withCur {
		bare := bareGatewayMbps(t, r, impl, p, cfg)
		b.row("6. TCP throughput, tunnel vs plain veth", "partner on wireguard-go "+wireGuardGoVersion(t, cur), fmt.Sprintf("%.0f vs %.0f Mbit/s (%.2f)", curBW, plain, curBW/plain), "", "the same version as the gateway's")
		b.row("6. TCP throughput, extranetd vs bare wireguard-go", "same partner, same path", fmt.Sprintf("%.0f vs %.0f Mbit/s (%.2f)", curBW, bare, curBW/bare), "", "bare: one peer, no firewall, no daemon; its interface in the host, as before the gateway namespace")
	}

	// 8. What the gateway namespace's veth hop costs: the same bare
	// WireGuard with its interface behind a veth pair (the layout now)
	// and in the host (the layout before), in turns.
	hopConns, hopBWs := vethHop(t, r, impl, p, cfg, rounds)
	hopAt := "bare wireguard-go, one peer, no firewall"
	hopNote := "interface in a namespace behind a veth vs in the host; in turns, fresh each round"
	switch {
	case wgMode == "kernel":
		hopAt = "bare kernel WireGuard, one peer, no firewall"
	case cur != "":
		hopNote += "; partner and gateway on wireguard-go " + wireGuardGoVersion(t, cur)
	default:
		hopNote += "; partner and gateway on Debian's wireguard-go"
	}
	b.row("8. new connections/s, veth hop", hopAt, compared(hopConns, rounds, ""), "", hopNote)
	b.row("8. TCP throughput, veth hop", hopAt, compared(hopBWs, rounds, " Mbit/s"), "", hopNote)

	b.print()
}

// activityCost is figure 10: what the activity log costs the full
// gateway. The same gateway with the log on and off takes turns, each
// round a fresh daemon. The kernel forgets a reset connection after 10 s
// and a closed one after 2 minutes, so in a run of seconds the log would
// write nothing: in the gateway namespace the bench has it forget a
// reset connection within a second, and the log writes a record for
// each new connection while the next ones come, as on a gateway in its
// steady state. The rules-alone path (no WireGuard) opens the most
// connections a second, for the daemon's CPU under load.
func activityCost(t *testing.T, b *bench, r *Rig, prof *profiler, state string, flags []string, cfg, src string, rounds int) {
	t.Helper()
	var conns, rules [2][]float64
	var cpu, rate []float64
	var recorded, flows, written uint64
	for i := 0; i < rounds; i++ {
		for k, on := range []bool{true, false} {
			r.run(r.NS, "ip", "link", "del", rulesNSVeth)
			r.StartDaemon(append(slices.Clone(flags), "--state-dir", state, fmt.Sprintf("--activity-log=%v", on))...)
			r.Must(r.NS, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_close=1")
			rulesOnly(t, r, src)
			conf := r.PartnerUp(r.PA, "pa"+r.id, cfg)
			reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
			conns[k] = append(conns[k], connRate(t, r.PA, hostPort(in1Addr, 22), 5*time.Second))
			rec0, flows0 := activityCounts(t, r)
			size0 := activitySize(state)
			pid, ticks, began := daemonPID(r), procTicks(daemonPID(r)), time.Now()
			done := func() {}
			if i == 0 && on {
				done = prof.cpu("activity-on", 4*time.Second)
			}
			n := connRateFrom(t, r.PB, src, hostPort(in1Addr, 22), 5*time.Second)
			done()
			if on {
				cpu, rate = append(cpu, cpuPercent(procTicks(pid)-ticks, time.Since(began))), append(rate, n)
				// The last of them are forgotten within a second or two.
				time.Sleep(2 * time.Second)
				rec1, flows1 := activityCounts(t, r)
				recorded, flows = recorded+rec1-rec0, flows+flows1-flows0
				written += uint64(activitySize(state) - size0)
			}
			rules[k] = append(rules[k], n)
			r.PartnerDown(r.PA, conf)
			r.StopDaemon()
		}
	}
	at := "full gateway, log on vs off"
	note := "each connection ends (a reset) and is forgotten within a second, so the log writes while connections come"
	b.row("10. new connections/s, activity log", at, compared(conns, rounds, ""), "", note)
	b.row("10. new connections/s, activity log, rules alone", at, compared(rules, rounds, ""), "", "")
	perRecord, perFlow := "-", "-"
	if recorded > 0 && flows > 0 {
		perRecord, perFlow = fmt.Sprintf("%.0f", float64(written)/float64(recorded)), fmt.Sprintf("%.1f", float64(written)/float64(flows))
	}
	b.row("10. daemon CPU, activity log on", fmt.Sprintf("%.0f new connections/s from one partner (rules alone)", median(rate)),
		fmt.Sprintf("%.0f%% of one core (median of %d rounds)", median(cpu), rounds), "",
		fmt.Sprintf("%d flows in %d records (the rest summarised: one partner's budget is 20 a second): %s bytes on disk per record, %s per flow", flows, recorded, perRecord, perFlow))
}

// activityCounts are the records the daemon's activity log wrote since it
// started, and the flows they stand for (summarised ones included).
func activityCounts(t *testing.T, r *Rig) (records, flows uint64) {
	t.Helper()
	var st api.Status
	if err := json.Unmarshal([]byte(r.MustCTL("status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Activity == nil {
		return 0, 0
	}
	return st.Activity.Recorded, st.Activity.Recorded + st.Activity.Summarised
}

// activitySize is the bytes the activity log's files under state hold.
func activitySize(state string) int64 {
	var n int64
	filepath.WalkDir(filepath.Join(state, "activity"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// removeGateway stops extranetd and removes what it made, the gateway
// namespace and its veth pair included, as `extranetd cleanup` does on a
// real host; the state directory stays.
func removeGateway(t *testing.T, r *Rig) {
	t.Helper()
	r.StopDaemon()
	if out, err := r.Extranetd("cleanup", "--interface", r.Iface, "--netns", r.NS).CombinedOutput(); err != nil {
		t.Fatalf("extranetd cleanup: %v\n%s", err, out)
	}
}

// bareGatewayMbps puts a bare WireGuard (impl) on the gateway's interface
// name, key and port, in the host as before the gateway namespace, with the
// partner's peer alone and no firewall, and measures the partner's
// throughput through it. The daemon must be gone (removeGateway).
func bareGatewayMbps(t *testing.T, r *Rig, impl string, p api.Peer, cfg string) float64 {
	t.Helper()
	remove := bareGateway(t, r, impl, p, cfg, false)
	defer remove()
	conf := r.PartnerUp(r.PA, "pa"+r.id, cfg)
	defer r.PartnerDown(r.PA, conf)
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	return bestOf(3, func() float64 { return iperfMbps(t, r, r.PA) })
}

// Names of the bare gateway's namespace link, the daemon's defaults: the
// daemon is gone when a bare gateway runs, and with it its own pair.
const (
	bareHostVeth = "extranet0"
	bareNSVeth   = "uplink"
	bareHostAddr = "169.254.100.1"
	bareNSAddr   = "169.254.100.2"
)

// bareGateway puts a bare WireGuard where extranetd was: impl (a
// wireguard-go program; the kernel's WireGuard when empty) on the
// gateway's interface name, key and port, with the partner's peer alone
// and no firewall. With behindVeth, the interface then moves into a
// namespace of its own joined to the host (GW) by a veth pair, as the
// daemon's gateway namespace is: WireGuard's UDP socket stays in the host
// where it was made, the namespace routes everything out by the veth, and
// the host routes the partner's address in. Otherwise the interface stays
// in the host, as before the gateway namespace. The function returned
// removes it all; nothing else runs until it did, so that the next bare
// gateway finds the interface name and the port free.
func bareGateway(t *testing.T, r *Rig, impl string, p api.Peer, cfg string, behindVeth bool) func() {
	t.Helper()
	c, err := wgconfig.Parse([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	psk := os.DevNull // wg's way of saying none
	if c.Peer.PresharedKey != "" {
		psk = filepath.Join(r.Dir, "bench.psk")
		if err := os.WriteFile(psk, []byte(c.Peer.PresharedKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, port, err := net.SplitHostPort(r.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	pid := 0
	if impl == "" {
		r.Must(r.GW, "ip", "link", "add", r.Iface, "type", "wireguard")
	} else {
		r.Must(r.GW, "env", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", impl, r.Iface)
		// wireguard-go has gone to the background under the same
		// command line.
		pid = pidOf(t, impl+" "+r.Iface)
	}
	// Deleting the link ends a wireguard-go with it (and the rig's
	// teardown deletes every namespace, should the test stop first).
	where, bh := r.GW, "ex"+r.id+"bh"
	var once sync.Once
	remove := func() {
		once.Do(func() {
			if behindVeth {
				r.run(r.GW, "ip", "link", "del", bareHostVeth)
			}
			r.run(where, "ip", "link", "del", r.Iface)
			if behindVeth {
				exec.Command("ip", "netns", "del", bh).Run()
			}
			waitGone(t, pid)
		})
	}
	t.Cleanup(remove)
	// Configured in the host, where the interface was made: the kernel's
	// is configured through the namespace it is in.
	r.Must(r.GW, "wg", "set", r.Iface, "private-key", filepath.Join(r.Dir, "state", daemon.KeyFile), "listen-port", port,
		"peer", p.PublicKey, "preshared-key", psk, "allowed-ips", p.Address+"/32")
	if behindVeth {
		where = bh
		r.must("ip", "netns", "add", where)
		r.must("ip", "-n", where, "link", "set", "lo", "up")
		r.link(r.GW, bareHostVeth, bareHostAddr+"/30", where, bareNSVeth, bareNSAddr+"/30")
		r.Must(where, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		r.must("ip", "-n", where, "route", "add", "default", "via", bareHostAddr)
		// Moved while down: a userspace wireguard-go, whose netlink
		// socket stays in the host, sees the link come up in the
		// namespace by polling its TUN (within a second) and opens its
		// UDP socket in the host, as the daemon's embedded one does.
		r.must("ip", "-n", r.GW, "link", "set", r.Iface, "netns", where)
		r.must("ip", "-n", r.GW, "route", "add", p.Address+"/32", "via", bareNSAddr)
	}
	r.must("ip", "-n", where, "link", "set", r.Iface, "up")
	r.must("ip", "-n", where, "route", "add", p.Address+"/32", "dev", r.Iface)
	return remove
}

// waitGone waits up to 5 s for process pid (0: none) to end, then kills
// it: the next bare gateway needs its interface name and UDP port.
func waitGone(t *testing.T, pid int) {
	if pid == 0 {
		return
	}
	for i := 0; i < 250 && alive(pid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(pid) {
		t.Logf("bare wireguard-go %d outlived its interface; killed", pid)
		syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 50 && alive(pid); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// alive tells whether process pid exists and is not a zombie (a zombie
// holds no socket and no device).
func alive(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// vethHop measures the gateway namespace's extra hop: new connections per
// second and TCP throughput from PA to in1 through a bare WireGuard
// (bareGateway) with its interface behind a veth pair ([0], the layout
// now) and in the host ([1], the layout before), taking turns for rounds
// rounds, each gateway and the partner's tunnel brought up afresh each
// time, the order swapped every other round so that neither always goes
// first. Nothing differs between the two but the hop: no firewall, no
// daemon, the same key, port and partner. The daemon must be gone.
func vethHop(t *testing.T, r *Rig, impl string, p api.Peer, cfg string, rounds int) (conns, bws [2][]float64) {
	t.Helper()
	for i := 0; i < rounds; i++ {
		order := []int{0, 1}
		if i%2 == 1 {
			order = []int{1, 0}
		}
		for _, k := range order {
			remove := bareGateway(t, r, impl, p, cfg, k == 0)
			conf := r.PartnerUp(r.PA, "pa"+r.id, cfg)
			reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
			conns[k] = append(conns[k], connRate(t, r.PA, hostPort(in1Addr, 22), 2*time.Second))
			bws[k] = append(bws[k], iperfMbps(t, r, r.PA))
			r.PartnerDown(r.PA, conf)
			remove()
		}
	}
	return conns, bws
}

// wireGuardGoVersion is what impl --version says, e.g. "v0.0.20250522".
func wireGuardGoVersion(t *testing.T, impl string) string {
	out, err := exec.Command(impl, "--version").Output()
	if f := strings.Fields(string(out)); err == nil && len(f) > 1 {
		return f[1]
	}
	t.Fatalf("%s --version: %v", impl, err)
	return ""
}

// pprofAddr is where the bench daemon serves its profiler, inside the
// gateway namespace.
const pprofAddr = "127.0.0.1:6060"

// profiler saves the daemon's profiles into $EXTRANET_BENCH_PPROF, for `go
// tool pprof`. A nil profiler (the variable unset) does nothing.
type profiler struct {
	t   *testing.T
	r   *Rig
	dir string
}

func newProfiler(t *testing.T, r *Rig) *profiler {
	dir := os.Getenv("EXTRANET_BENCH_PPROF")
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &profiler{t: t, r: r, dir: dir}
}

// fetch saves /debug/pprof/<what> as <name>.pprof.
func (p *profiler) fetch(name, what string) error {
	if p == nil {
		return nil
	}
	out := filepath.Join(p.dir, name+".pprof")
	_, err := p.r.run(p.r.GW, "curl", "-sf", "--max-time", "60", "-o", out, "http://"+pprofAddr+"/debug/pprof/"+what)
	return err
}

// cpu starts a CPU profile of d in the background, retrying for a few
// seconds until the daemon listens, and returns a function that waits for
// the profile to be saved.
func (p *profiler) cpu(name string, d time.Duration) func() {
	if p == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		what := fmt.Sprintf("profile?seconds=%d", int(d.Seconds()))
		for i := 0; i < 300; i++ {
			if p.fetch(name, what) == nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		p.t.Logf("no %s profile: the daemon's profiler never answered", name)
	}()
	return func() { <-done }
}

type bench struct {
	t    *testing.T
	rows [][]string
}

func (b *bench) row(cols ...string) {
	b.rows = append(b.rows, cols)
	b.t.Logf("%s", strings.Join(cols, " | "))
}

// print writes the table as Markdown to $EXTRANET_BENCH_OUT or the log.
func (b *bench) print() {
	var s strings.Builder
	s.WriteString("| figure | at | extranet | naive | note |\n|---|---|---|---|---|\n")
	for _, r := range b.rows {
		s.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	if out := os.Getenv("EXTRANET_BENCH_OUT"); out != "" {
		os.WriteFile(out, []byte(s.String()), 0o644)
	}
	b.t.Logf("\n%s", s.String())
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func ms(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100]
}

var benchGrants = []string{"10.10.0.0/16:tcp/443", "10.20.0.0/24", "10.30.5.10/32:udp/5000-5010", "10.40.0.0/16:icmp", "10.50.0.0/16:tcp/1000-9000"}

// seed writes orgs and peers straight into a state file, as years of
// `peer issue` would have, and returns the last org's name.
func seed(t *testing.T, dir string, nOrgs, perOrg, groups int) string {
	t.Helper()
	os.MkdirAll(dir, 0o700)
	db, err := store.Open(filepath.Join(dir, "extranet.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/12"), 24)
	gs, _ := grant.ParseAll(benchGrants)
	now := time.Now().UTC().Truncate(time.Second)
	var name string
	err = db.Update(func(tx *store.Tx) error {
		for o := 1; o <= nOrgs; o++ {
			id, err := tx.NextOrgID()
			if err != nil {
				return err
			}
			name = fmt.Sprintf("org%04d", o)
			block := plan.Block(o)
			org := &store.Org{ID: id, Name: name, State: api.StateActive, Grants: gs, Blocks: []netip.Prefix{block}, CreatedAt: now, UpdatedAt: now, CreatedBy: "bench"}
			// The default group and groups g1… with one of the org's
			// grants each.
			for g := 0; g < max(groups, 1); g++ {
				gid, err := tx.NextGroupID()
				if err != nil {
					return err
				}
				grp := store.Group{ID: gid, Name: store.DefaultGroup, CreatedAt: now, UpdatedAt: now, CreatedBy: "bench"}
				if g > 0 {
					grp.Name, grp.Grants = fmt.Sprintf("g%d", g), gs[g%len(gs):g%len(gs)+1]
				}
				org.Groups = append(org.Groups, grp)
			}
			if err := tx.PutOrg(org); err != nil {
				return err
			}
			addr, _ := ipam.Hosts(block)
			for i := 0; i < perOrg; i++ {
				k, _ := wgtypes.GeneratePrivateKey()
				psk, _ := wgtypes.GenerateKey()
				p := &store.Peer{Org: name, Name: fmt.Sprintf("p%d", i), PublicKey: k.PublicKey().String(), PresharedKey: psk.String(),
					Address: addr, Group: org.Groups[i%len(org.Groups)].Name, State: api.StateActive, KeyOrigin: api.KeyGenerated, CreatedAt: now, UpdatedAt: now, CreatedBy: "bench"}
				if err := tx.PutPeer(p); err != nil {
					return err
				}
				tx.ClaimKey(p.PublicKey, p.ID())
				tx.ClaimAddr(addr, p.ID())
				addr = addr.Next()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// oneOrg replaces the state with a single org holding the peers keep (same
// keys and addresses, and the gateway key is kept) and others up to total,
// so that only the number of organisations and rules differs from the full
// gateway, not the number of peers the daemon and WireGuard carry. Every
// peer gets the preshared key of cfg, the first kept peer's config.
func oneOrg(t *testing.T, r *Rig, dir, org string, keep []api.Peer, cfg string, total int) {
	t.Helper()
	os.Remove(filepath.Join(dir, "extranet.db"))
	db, err := store.Open(filepath.Join(dir, "extranet.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	psk := secretRE.FindAllStringSubmatch(cfg, -1)[1][1]
	gs, _ := grant.ParseAll(append([]string{"10.10.1.0/24"}, benchGrants...))
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/12"), 24)
	own := netip.PrefixFrom(netip.MustParseAddr(keep[0].Address), 24).Masked()
	err = db.Update(func(tx *store.Tx) error {
		id, _ := tx.NextOrgID()
		blocks := []netip.Prefix{own}
		for _, p := range keep {
			addr := netip.MustParseAddr(p.Address)
			if !own.Contains(addr) {
				return fmt.Errorf("kept peer %s is outside %s", p.ID(), own)
			}
			tx.ClaimAddr(addr, p.ID())
			tx.ClaimKey(p.PublicKey, p.ID())
			if err := tx.PutPeer(&store.Peer{Org: org, Name: p.Name, PublicKey: p.PublicKey, PresharedKey: psk, Address: addr, State: api.StateActive, Group: store.DefaultGroup}); err != nil {
				return err
			}
		}
		// The others fill blocks from the bottom of the tunnel network.
		for i, b := 0, 1; i < total-len(keep); b++ {
			block := plan.Block(b)
			if block == own {
				continue
			}
			blocks = append(blocks, block)
			a, last := ipam.Hosts(block)
			for ; i < total-len(keep) && a.Compare(last) <= 0; a, i = a.Next(), i+1 {
				k, _ := wgtypes.GeneratePrivateKey()
				peer := &store.Peer{Org: org, Name: fmt.Sprintf("o%d", i), PublicKey: k.PublicKey().String(), PresharedKey: psk, Address: a, State: api.StateActive, Group: store.DefaultGroup}
				if err := tx.PutPeer(peer); err != nil {
					return err
				}
				tx.ClaimAddr(a, peer.ID())
			}
		}
		gid, err := tx.NextGroupID()
		if err != nil {
			return err
		}
		return tx.PutOrg(&store.Org{ID: id, Name: org, State: api.StateActive, Grants: gs, Blocks: blocks, Groups: []store.Group{{ID: gid, Name: store.DefaultGroup}}})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// flatten puts every peer of the state in dir into its organisation's
// default group and removes the other groups: the same gateway, peers and
// keys, without groups.
func flatten(t *testing.T, dir string) {
	t.Helper()
	db, err := store.Open(filepath.Join(dir, "extranet.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *store.Tx) error {
		var orgs []*store.Org
		var peers []*store.Peer
		tx.Orgs(func(o *store.Org) error { orgs = append(orgs, o); return nil })
		tx.Peers("", func(p *store.Peer) error { peers = append(peers, p); return nil })
		for _, o := range orgs {
			o.Groups = o.Groups[:1]
			if err := tx.PutOrg(o); err != nil {
				return err
			}
		}
		for _, p := range peers {
			p.Group = store.DefaultGroup
			if err := tx.PutPeer(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func daemonPID(r *Rig) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.daemon.Process.Pid
}

// pidOf returns the process whose command line is exactly cmdline.
func pidOf(t *testing.T, cmdline string) int {
	out, err := exec.Command("pgrep", "-x", "-f", cmdline).Output()
	pid, perr := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || perr != nil {
		t.Fatalf("no process %q: %v", cmdline, err)
	}
	return pid
}

// procTicks is the user and system CPU time a process has used, in clock
// ticks (1/100 s on Linux).
func procTicks(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces, end in ")".
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

func cpuPercent(ticks int, wall time.Duration) float64 {
	return float64(ticks) / wall.Seconds()
}

func rssMB(t *testing.T, r *Rig) float64 {
	pid := daemonPID(r)
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

func apiIssueRate(t *testing.T, r *Rig, nOrgs, workers, total int) float64 {
	c := client.New(r.Socket)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < total; i += workers {
				org := fmt.Sprintf("org%04d", 1+i%nOrgs)
				if _, err := c.IssuePeer(context.Background(), org, api.IssuePeerRequest{Name: fmt.Sprintf("api%d", i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	return float64(total) / time.Since(start).Seconds()
}

// revokeToDead opens a flow from a second partner, keeps echoing over it
// while revoking that partner, and returns how long after the start of the
// revoke command the flow stopped answering, and how long the command took.
func revokeToDead(t *testing.T, r *Rig, org string) (time.Duration, time.Duration) {
	conf := r.PartnerUp(r.PB, "pb"+r.id, r.Issue(org+"/victim"))
	defer r.PartnerDown(r.PB, conf)
	reaches(t, r.PB, hostPort(in1Addr, 22), "in1")
	c, err := DialTCP(r.PB, hostPort(in1Addr, 22))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	died := make(chan time.Time, 1)
	go func() {
		for i := 0; i < 100000; i++ {
			if _, err := c.Echo("x", 50*time.Millisecond); err != nil {
				died <- time.Now()
				return
			}
		}
	}()
	start := time.Now()
	r.MustCTL("peer", "revoke", org+"/victim", "--yes")
	took := time.Since(start)
	select {
	case at := <-died:
		return at.Sub(start), took
	case <-time.After(10 * time.Second):
		t.Fatal("flow still alive 10s after revoke")
	}
	return 0, 0
}

// naiveColdStart times what a script would run to bring n peers up: one
// `wg set` per peer (all of them) and one `iptables -A` per peer and grant
// (a sample of 1,000 rules, scaled up linearly, which flatters the naive
// way: appending slows as the chain grows). It runs in the partner-b
// namespace, which has no part in the measurements before it.
func naiveColdStart(t *testing.T, r *Rig, n int) string {
	ns := r.PB
	dev := "nv" + r.id
	sock := "/var/run/wireguard/" + dev + ".sock"
	t.Cleanup(func() { os.Remove(sock) })
	// The naive script's WireGuard runs where the gateway's does.
	cmd := exec.Command("ip", "netns", "exec", ns, "ip", "link", "add", dev, "type", "wireguard")
	if wgMode == "userspace" {
		cmd = exec.Command("ip", "netns", "exec", ns, "wireguard-go", dev)
		cmd.Env = append(os.Environ(), "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("create the naive %s WireGuard device: %v %s", wgMode, err, out)
	}
	pskFile := filepath.Join(r.Dir, "naive.psk")
	k, _ := wgtypes.GenerateKey()
	os.WriteFile(pskFile, []byte(k.String()), 0o600)
	var wg strings.Builder
	for i := 0; i < n; i++ {
		pk, _ := wgtypes.GeneratePrivateKey()
		fmt.Fprintf(&wg, "wg set %s peer %s preshared-key %s allowed-ips 100.%d.%d.%d/32\n", dev, pk.PublicKey(), pskFile, 64+i>>16, (i>>8)&255, i&255)
	}
	wgTime := runScript(t, r, ns, wg.String())
	const sample = 1000
	var ipt strings.Builder
	for i := 0; i < sample; i++ {
		fmt.Fprintf(&ipt, "iptables -A FORWARD -i %s -s 100.64.%d.%d/32 -d 10.%d.0.0/16 -j ACCEPT\n", dev, i/250, i%250, 10+i%5)
	}
	iptTime := runScript(t, r, ns, ipt.String()) * time.Duration(n*5) / sample
	r.nvDev = dev
	return fmt.Sprintf("%s (wg set ×%d: %s; iptables -A ×%d: ≈%s, scaled from %d)", ms(wgTime+iptTime), n, ms(wgTime), n*5, ms(iptTime), sample)
}

func runScript(t *testing.T, r *Rig, ns, script string) time.Duration {
	path := filepath.Join(r.Dir, "naive.sh")
	os.WriteFile(path, []byte("set -e\n"+script), 0o700)
	start := time.Now()
	if out, err := r.run(ns, "sh", path); err != nil {
		t.Fatalf("naive script: %v\n%s", err, tail(out, 5))
	}
	return time.Since(start)
}

// naiveIssue times a naive issue on a gateway that already has n peers:
// one `wg set` and five `iptables -A` on a chain of n×5 rules.
func naiveIssue(t *testing.T, r *Rig, n int) string {
	ns, dev := r.PB, r.nvDev
	var rules strings.Builder
	rules.WriteString("*filter\n")
	for i := 0; i < n*5; i++ {
		fmt.Fprintf(&rules, "-A FORWARD -i %s -s 100.%d.%d.%d/32 -d 10.%d.0.0/16 -j ACCEPT\n", dev, 64+i>>16, (i>>8)&255, i&255, 10+i%5)
	}
	rules.WriteString("COMMIT\n")
	restore := exec.Command("ip", "netns", "exec", ns, "iptables-restore")
	restore.Stdin = strings.NewReader(rules.String())
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("load naive rules: %v %s", err, out)
	}
	pskFile := filepath.Join(r.Dir, "naive.psk")
	var lat []time.Duration
	for i := 0; i < 20; i++ {
		pk, _ := wgtypes.GeneratePrivateKey()
		var s strings.Builder
		fmt.Fprintf(&s, "wg set %s peer %s preshared-key %s allowed-ips 100.99.0.%d/32\n", dev, pk.PublicKey(), pskFile, i+1)
		for g := 0; g < 5; g++ {
			fmt.Fprintf(&s, "iptables -A FORWARD -i %s -s 100.99.0.%d/32 -d 10.%d.0.0/16 -j ACCEPT\n", dev, i+1, 10+g)
		}
		lat = append(lat, runScript(t, r, ns, s.String()))
	}
	r.Must(ns, "iptables", "-F", "FORWARD")
	r.Must(ns, "ip", "link", "del", dev)
	return "p50 " + ms(pct(lat, 50)) + ", p99 " + ms(pct(lat, 99)) + " (no process start of a CLI)"
}

// naiveRules puts a naive per-peer chain of count rules in front of ours,
// with the bench partner's rule last, as a script that appends rules per
// peer would leave it. It goes where partner packets are filtered now, the
// gateway namespace's FORWARD, first, ahead of the daemon's jumps: so the
// partner's new flows walk it through the same tunnel and the same veth
// hop as the gateway it is compared with, and the figure measures what it
// measured before the namespace, the per-peer chain. A bare setup of its
// own (no namespace) would have compared two layouts as well as two
// rulesets. The daemon's drift check would replace it (see TestBench).
func naiveRules(t *testing.T, r *Rig, count int) {
	partner := r.peerJSON(lastOrg(r) + "/bench").Address
	var rules strings.Builder
	rules.WriteString("*filter\n:NAIVE - [0:0]\n")
	for i := 0; i < count; i++ {
		fmt.Fprintf(&rules, "-A NAIVE -s 100.%d.%d.%d/32 -d 10.%d.0.0/16 -j ACCEPT\n", 64+i>>16, (i>>8)&255, i&255, 10+i%5)
	}
	fmt.Fprintf(&rules, "-A NAIVE -s %s/32 -d 10.10.1.0/24 -j ACCEPT\nCOMMIT\n", partner)
	restore := exec.Command("ip", "netns", "exec", r.NS, "iptables-restore", "--noflush")
	restore.Stdin = strings.NewReader(rules.String())
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("load naive chain: %v %s", err, out)
	}
	r.Must(r.NS, "iptables", "-I", "FORWARD", "1", "-i", r.Iface, "-j", "NAIVE")
}

// The rules-alone link: a veth pair from PB straight into the gateway
// namespace, on a network of its own.
const (
	rulesNSVeth = "rules0"
	rulesPBVeth = "ro0"
	rulesNSAddr = "198.18.3.1"
	rulesPBAddr = "198.18.3.2"
	// rulesTable is PB's routing table for flows from the stand-in
	// address.
	rulesTable = "100"
)

// rulesOnly routes src, the address of a peer in force that no client
// holds, in the bench partner's org, through the gateway's rules without
// WireGuard. A partner's packet enters the gateway namespace from the
// WireGuard interface and leaves by the uplink to the host; PB stands in
// for it with a veth pair of its own into the gateway namespace (the same
// number of hops, no hairpin through the host), flows from src only (PB's
// own address still reaches in1 through the host, for figure 6), and two
// jumps at the top of the namespace's FORWARD, above the anti-spoofing
// rule that would drop this tunnel source that did not come out of the
// tunnel: src's packets into EXTRANET-MARK and EXTRANET-FWD exactly as if
// they had, and the
// answers into EXTRANET-TOPEER as if they went into it. So each new flow
// walks the rules a partner's does (the peer check included), and nothing
// else of the tunnel's cost hides them. The namespace routes src back by
// that veth, not into the tunnel, where the peer of that address has no
// endpoint.
//
// The jumps live in the daemon's table, so each daemon start removes them
// and so would its drift check (see TestBench): call it after every start,
// with the drift check far off. Idempotent; the link stays for the
// namespace's life.
func rulesOnly(t *testing.T, r *Rig, src string) {
	t.Helper()
	if _, err := r.run(r.NS, "ip", "link", "show", rulesNSVeth); err != nil {
		r.link(r.NS, rulesNSVeth, rulesNSAddr+"/30", r.PB, rulesPBVeth, rulesPBAddr+"/30")
	}
	r.Must(r.PB, "ip", "addr", "replace", src+"/32", "dev", rulesPBVeth)
	r.run(r.PB, "ip", "rule", "del", "from", src, "table", rulesTable)
	r.Must(r.PB, "ip", "rule", "add", "from", src, "table", rulesTable)
	r.Must(r.PB, "ip", "route", "replace", "default", "via", rulesNSAddr, "table", rulesTable)
	r.Must(r.NS, "ip", "route", "replace", src+"/32", "via", rulesPBAddr, "dev", rulesNSVeth)
	// The marking of new flows by group too, as for the tunnel's packets.
	for _, jump := range [][]string{
		{"filter", "FORWARD", "-o", rulesNSVeth, "-d", src + "/32", "-j", "EXTRANET-TOPEER"},
		{"filter", "FORWARD", "-i", rulesNSVeth, "-s", src + "/32", "-j", "EXTRANET-FWD"},
		{"mangle", "PREROUTING", "-i", rulesNSVeth, "-s", src + "/32", "-j", "EXTRANET-MARK"},
	} {
		r.run(r.NS, append([]string{"iptables", "-t", jump[0], "-D"}, jump[1:]...)...)
		r.Must(r.NS, append([]string{"iptables", "-t", jump[0], "-I", jump[1], "1"}, jump[2:]...)...)
	}
}

func lastOrg(r *Rig) string { return fmt.Sprintf("org%04d", envInt("BENCH_ORGS", 1000)) }

// bestOf returns the highest of n measurements. On two cores shared by
// both WireGuard ends, iperf3 and the daemon's own timers, a single run
// varies by ±15%; interference only ever slows a run down, so the best run
// is the one closest to what the rules allow.
// median of xs (not empty).
func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// compared writes two configurations measured in turns: the medians of
// each, and the median and range of the rounds' ratios.
func compared(v [2][]float64, rounds int, unit string) string {
	ratios := make([]float64, len(v[0]))
	for i := range v[0] {
		ratios[i] = v[0][i] / v[1][i]
	}
	lo, hi := slices.Min(ratios), slices.Max(ratios)
	return fmt.Sprintf("%.0f vs %.0f%s (median ratio %.2f, %.2f-%.2f over %d rounds)", median(v[0]), median(v[1]), unit, median(ratios), lo, hi, rounds)
}

// copyDir copies the files of a state directory, modes and all.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), raw, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

func bestOf(n int, measure func() float64) float64 {
	best := 0.0
	for i := 0; i < n; i++ {
		best = max(best, measure())
	}
	return best
}

func connRate(t *testing.T, ns, addr string, d time.Duration) float64 {
	return connRateFrom(t, ns, "", addr, d)
}

// connRateFrom counts TCP connections per second from ns to addr, from the
// source address src when it is not empty.
func connRateFrom(t *testing.T, ns, src, addr string, d time.Duration) float64 {
	dialer := net.Dialer{Timeout: time.Second}
	if src != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	n := 0
	err := inNS(ns, func() error {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			c, err := dialer.Dial("tcp4", addr)
			if err != nil {
				return err
			}
			// Close with a reset: tens of thousands of connections left
			// in TIME_WAIT would exhaust the partner's ports and slow
			// whichever measurement runs last.
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return float64(n) / d.Seconds()
}

func iperfMbps(t *testing.T, r *Rig, ns string) float64 {
	// A path that drops the SYN fails the run, rather than hanging it.
	out, err := r.run(ns, "iperf3", "-c", in1Addr, "-t", "3", "-J", "--connect-timeout", "5000")
	if err != nil {
		t.Fatalf("iperf3: %v\n%s", err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	return res.End.SumReceived.BitsPerSecond / 1e6
}
