package flowlog

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netns"

	ct "github.com/extranetgw/extranet/internal/conntrack"
	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/netnstest"
	"github.com/extranetgw/extranet/internal/policy"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

type dir map[netip.Addr]Who

func (d dir) Lookup(a netip.Addr) (Who, bool) { w, ok := d[a]; return w, ok }

func TestRecord(t *testing.T) {
	a := netip.MustParseAddr
	opened := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	f := Record(Tuple{Proto: 6, Src: a("100.64.1.5"), Dst: a("10.10.1.2"), SPort: 40000, DPort: 443},
		opened, opened.Add(time.Minute), conntrack.Counter{Packets: 3, Bytes: 180}, conntrack.Counter{Packets: 2, Bytes: 1500},
		api.FlowClosed, dir{a("100.64.1.5"): {Org: "acme", Name: "laptop", Group: "support"}})
	want := api.Flow{Opened: opened, Closed: opened.Add(time.Minute), Org: "acme", Group: "support", Peer: "acme/laptop",
		Address: "100.64.1.5", Proto: "tcp", Dest: "10.10.1.2", Port: 443, BytesOut: 180, PacketsOut: 3, BytesIn: 1500, PacketsIn: 2, End: api.FlowClosed}
	if f != want {
		t.Errorf("Record:\n%+v\nwant\n%+v", f, want)
	}
	icmp := Record(Tuple{Proto: 1, Src: a("100.64.9.9"), Dst: a("10.10.1.2"), DPort: 7}, opened, opened, conntrack.Counter{}, conntrack.Counter{}, api.FlowTimedOut, dir{})
	if icmp.Proto != "icmp" || icmp.Port != 0 || icmp.Peer != "" {
		t.Errorf("an ICMP flow of an address nobody holds: %+v", icmp)
	}
}

func TestEnding(t *testing.T) {
	for state, want := range map[uint8]string{3: api.FlowTimedOut, 1: api.FlowTimedOut, tcpTimeWait: api.FlowClosed, tcpClose: api.FlowClosed, tcpLastAck: api.FlowClosed} {
		if got := ending(ended{tuple: Tuple{Proto: 6}, tcp: true, tcpState: state}); got != want {
			t.Errorf("TCP state %d: %s, want %s", state, got, want)
		}
	}
	if ending(ended{tuple: Tuple{Proto: 17}}) != api.FlowTimedOut {
		t.Errorf("UDP ends by timing out")
	}
}

func TestKills(t *testing.T) {
	var k Kills
	tu := Tuple{Proto: 6, Src: netip.MustParseAddr("100.64.1.5"), Dst: netip.MustParseAddr("10.10.1.2"), SPort: 1, DPort: 2}
	k.Killed(6, tu.Src, tu.Dst, 1, 2)
	if k.take(tu) {
		t.Fatal("a kill marked while no listener runs is kept (nobody would take it)")
	}
	k.on.Store(true)
	if k.take(tu) {
		t.Fatal("an unmarked flow counts as killed")
	}
	k.Killed(6, tu.Src, tu.Dst, 1, 2)
	if !k.take(tu) || k.take(tu) {
		t.Error("a kill is taken once")
	}
}

func TestStoreDirectoryOfAnEmptyStore(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "s.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d := NewStoreDirectory(db)
	if _, ok := d.Lookup(netip.MustParseAddr("100.64.1.1")); ok {
		t.Error("an empty store names a peer")
	}
}

// TestListenerRecordsFlows: real flows in a throwaway namespace, the real
// event socket: a flow that ends by itself and one the sweep kills.
func TestListenerRecordsFlows(t *testing.T) {
	netnstest.Run(t, func(name string) {
		kills := &Kills{}
		l, records := listenIn(t, name, Options{Kills: kills})

		// UDP: 3 datagrams out, 1 back, then silence.
		srv, c := udpPair(t)
		for i := 0; i < 3; i++ {
			c.Write([]byte("0123456789"))
		}
		buf := make([]byte, 64)
		srv.SetReadDeadline(time.Now().Add(time.Second))
		if _, from, err := srv.ReadFrom(buf); err == nil {
			srv.WriteTo([]byte("pong"), from)
		}
		// TCP, then the sweep kills it: its access is gone.
		tl, err := net.Listen("tcp4", "10.10.1.2:7777")
		if err != nil {
			t.Fatal(err)
		}
		defer tl.Close()
		tc, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("100.64.1.5")}}).Dial("tcp4", "10.10.1.2:7777")
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		gs, _ := grant.ParseAll([]string{"10.10.1.0/24:udp/7000"})
		p := &policy.Policy{TunnelNet: netip.MustParsePrefix("100.64.0.0/16"),
			Orgs:  []policy.Org{{ID: 1, Blocks: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, Groups: []policy.Group{{ID: 1, Grants: gs}}}},
			Peers: map[netip.Addr]policy.Peer{netip.MustParseAddr("100.64.1.5"): {Group: 1}}}
		if n, err := (ct.Kernel{Killed: kills.Killed}).Sweep(p.TunnelNet, p); err != nil || n != 1 {
			t.Fatalf("sweep: %d, %v; want the TCP flow", n, err)
		}

		// The kernel reaps a timed-out entry when its collector comes by
		// (up to a minute on an idle table) or when a packet of the same
		// flow looks it up: the latter, here.
		time.Sleep(1500 * time.Millisecond)
		c.Write([]byte("late"))

		var udp, tcp *api.Flow
		var got []api.Flow
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && (udp == nil || tcp == nil); time.Sleep(100 * time.Millisecond) {
			got = records()
			for i := range got {
				switch got[i].Proto {
				case "udp":
					if udp == nil {
						udp = &got[i]
					}
				case "tcp":
					tcp = &got[i]
				}
			}
		}
		if udp == nil || tcp == nil {
			out, _ := exec.Command("conntrack", "-L").CombinedOutput()
			t.Fatalf("recorded %+v; want a UDP and a TCP flow\nconntrack -L:\n%s", got, out)
		}
		if udp.Peer != "acme/laptop" || udp.Port != 7000 || udp.PacketsOut != 3 || udp.BytesOut != 3*38 || udp.PacketsIn != 1 || udp.End != api.FlowTimedOut || udp.Opened.IsZero() {
			t.Errorf("the UDP flow: %+v", *udp)
		}
		if tcp.End != api.FlowKilled || tcp.Port != 7777 {
			t.Errorf("the killed TCP flow: %+v", *tcp)
		}
		if st := l.Stats(); st.Recorded < 2 || st.Lost != 0 {
			t.Errorf("stats: %+v", st)
		}
	})
}

// listenIn readies the namespace name of netnstest.Run for the listener
// tests (a partner's and a server's address on loopback, new flows let in,
// UDP flows forgotten a second after their last packet) and runs a
// Listener there with o and the partner acme/laptop, until the test ends.
// records returns what it recorded so far.
func listenIn(t *testing.T, name string, o Options) (l *Listener, records func() []api.Flow) {
	t.Helper()
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", "100.64.1.5/32", "dev", "lo"},
		{"ip", "addr", "add", "10.10.1.2/32", "dev", "lo"},
		{"iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"},
		{"sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=1"},
	} {
		netnstest.Sh(t, args...)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []api.Flow
	o.Tunnel, o.Do, o.Logger = netip.MustParsePrefix("100.64.0.0/16"), inNS(h), slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Directory = dir{netip.MustParseAddr("100.64.1.5"): {Org: "acme", Name: "laptop", Group: "default"}}
	o.Record = func(f api.Flow) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, f)
		return nil
	}
	l = New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; h.Close() })
	time.Sleep(200 * time.Millisecond) // the socket joins its group
	return l, func() []api.Flow {
		mu.Lock()
		defer mu.Unlock()
		return append([]api.Flow(nil), got...)
	}
}

// udpPair is a server at 10.10.1.2:7000 and the partner's socket to it,
// in listenIn's namespace, closed when the test ends.
func udpPair(t *testing.T) (srv net.PacketConn, c net.Conn) {
	t.Helper()
	srv, err := net.ListenPacket("udp4", "10.10.1.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, err = (&net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("100.64.1.5")}}).Dial("udp4", "10.10.1.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return srv, c
}

// inNS runs fn on a thread of its own in h.
func inNS(h netns.NsHandle) func(func() error) error {
	return func(fn func() error) error {
		ch := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			// The thread is left locked: Go retires it with the goroutine,
			// so nothing else runs in the test's namespace.
			if err := netns.Set(h); err != nil {
				ch <- err
				return
			}
			ch <- fn()
		}()
		return <-ch
	}
}

// TestBudgetSummarisesAFlood: a peer opening flows beyond its budget gets
// them added up, one summary a minute, and its neighbours keep theirs.
func TestBudgetSummarisesAFlood(t *testing.T) {
	var got []api.Flow
	l := New(Options{Record: func(f api.Flow) error { got = append(got, f); return nil },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	a, b := netip.MustParseAddr("100.64.1.5"), netip.MustParseAddr("100.64.1.6")
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	flow := func(addr netip.Addr) api.Flow {
		return api.Flow{Peer: "acme/" + addr.String(), Address: addr.String(), Proto: "tcp", Dest: "10.10.1.2", Port: 443, Opened: now, Closed: now, BytesOut: 10, PacketsOut: 1}
	}
	admitted := 0
	for i := 0; i < budgetBurst+500; i++ {
		if l.admit(a, flow(a), now) {
			admitted++
		}
	}
	if admitted != budgetBurst {
		t.Errorf("a burst of %d admitted %d records, want the budget %d", budgetBurst+500, admitted, budgetBurst)
	}
	if !l.admit(b, flow(b), now) {
		t.Error("another peer's flow was refused by the first one's flood")
	}
	if l.admit(a, flow(a), now.Add(10*time.Millisecond)) {
		t.Error("a flood refilled faster than its rate")
	}
	if !l.admit(a, flow(a), now.Add(time.Second)) {
		t.Error("a second later the budget had not refilled")
	}
	killed := flow(a)
	killed.End = api.FlowKilled
	if !l.admit(a, killed, now.Add(time.Second)) {
		t.Error("a killed flow went into a summary")
	}
	l.flushSummaries(now.Add(time.Minute))
	if len(got) != 1 || got[0].End != api.FlowSummarised || got[0].Flows != 501 || got[0].BytesOut != 5010 || got[0].Peer != "acme/100.64.1.5" || got[0].Dest != "10.10.1.2" || got[0].Port != 443 {
		t.Fatalf("summaries: %+v", got)
	}
	if st := l.Stats(); st.Summarised != 501 || st.Recorded != 1 {
		t.Errorf("stats: %+v", st)
	}
	l.flushSummaries(now.Add(2 * time.Minute))
	if len(got) != 1 {
		t.Errorf("an empty summary was recorded: %+v", got[1:])
	}
	// A sweep of destinations: each of the first summaryKeys its own
	// summary, the rest in one.
	got = nil
	later := now.Add(time.Hour)
	for i := 0; i < budgetBurst+summaryKeys+10; i++ {
		f := flow(a)
		f.Closed, f.Port = later, uint16(1000+i)
		l.admit(a, f, later)
	}
	l.flushSummaries(later.Add(time.Minute))
	other := 0
	for _, f := range got {
		if f.Dest == "" {
			other++
			if f.Flows != 10 {
				t.Errorf("the summary of the other destinations: %+v", f)
			}
		}
	}
	if len(got) != summaryKeys+1 || other != 1 {
		t.Errorf("%d summaries, %d of other destinations; want %d and 1", len(got), other, summaryKeys+1)
	}
}

func TestKillsCountPortlessFlows(t *testing.T) {
	var k Kills
	k.on.Store(true)
	a, b := netip.MustParseAddr("100.64.1.5"), netip.MustParseAddr("10.10.1.2")
	k.Killed(1, a, b, 0, 0)
	k.Killed(1, a, b, 0, 0)
	tu := Tuple{Proto: 1, Src: a, Dst: b}
	first, second, third := k.take(tu), k.take(tu), k.take(tu)
	if !first || !second || third {
		t.Errorf("two ICMP flows of one pair killed: taken %v, %v, %v; want two, then none", first, second, third)
	}
}

func TestHalfClosedKilledIsKilled(t *testing.T) {
	for state, want := range map[uint8]bool{tcpFinWait: false, tcpCloseWait: false, tcpLastAck: true, tcpTimeWait: true, tcpClose: true, 3: false} {
		if got := closedBothWays(ended{tuple: Tuple{Proto: 6}, tcp: true, tcpState: state}); got != want {
			t.Errorf("TCP state %d: closed both ways %v, want %v", state, got, want)
		}
	}
}

// TestLongFlowsGetInterimRecords: a real UDP flow kept open past Interim
// gets interim records, and its records add up to what it carried.
func TestLongFlowsGetInterimRecords(t *testing.T) {
	netnstest.Run(t, func(name string) {
		_, recorded := listenIn(t, name, Options{Interim: time.Second})

		_, c := udpPair(t)
		// 3.5 s of a datagram every 100 ms: past three interim periods.
		const sent = 35
		for i := 0; i < sent; i++ {
			c.Write([]byte("0123456789"))
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(1500 * time.Millisecond)
		c.Write([]byte("late")) // reaps the timed-out flow (a new one)

		var ended *api.Flow
		var flows []api.Flow
		var got []api.Flow
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ended == nil; time.Sleep(100 * time.Millisecond) {
			got = recorded()
			for i := range got {
				if got[i].End == api.FlowTimedOut {
					ended = &got[i]
				}
			}
			if ended != nil {
				for _, f := range got {
					if f.Opened.Equal(ended.Opened) {
						flows = append(flows, f)
					}
				}
			}
		}
		if ended == nil {
			t.Fatalf("recorded %+v; want the flow's end", got)
		}
		var packets uint64
		interims := 0
		for i, f := range flows {
			packets += f.PacketsOut
			if f.End == api.FlowOpen {
				interims++
			}
			if i > 0 && !f.Since.Equal(flows[i-1].Closed) {
				t.Errorf("record %d covers from %v; want from the previous record's %v", i, f.Since, flows[i-1].Closed)
			}
			if f.Peer != "acme/laptop" || f.Port != 7000 {
				t.Errorf("record %d: %+v", i, f)
			}
		}
		if interims < 2 || flows[len(flows)-1].End != api.FlowTimedOut || !flows[0].Since.IsZero() {
			t.Errorf("records %+v; want at least 2 interim ones (the first without since), then the end", flows)
		}
		if packets != sent {
			t.Errorf("the flow's records add up to %d packets out; want %d", packets, sent)
		}
	})
}

// TestOpenFlowsOutliveARestart: where an open flow's records stand is
// kept in OpenFile across a restart, so its end record after the restart
// has only what came since its last interim record; idle flows get none.
func TestOpenFlowsOutliveARestart(t *testing.T) {
	var got []api.Flow
	opts := Options{Tunnel: netip.MustParsePrefix("100.64.0.0/16"), Interim: 5 * time.Minute, OpenFile: filepath.Join(t.TempDir(), "open-flows.json"),
		Record: func(f api.Flow) error { got = append(got, f); return nil }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	tu := Tuple{Proto: 6, Src: netip.MustParseAddr("100.64.1.5"), Dst: netip.MustParseAddr("10.10.1.2"), SPort: 40000, DPort: 22}
	open := func(at time.Duration, packets uint64) listing {
		return listing{at: t0.Add(at), flows: []openFlow{{id: 7, tuple: tu, start: t0, out: conntrack.Counter{Packets: packets, Bytes: 100 * packets}}}}
	}
	l := New(opts)
	l.interim(open(4*time.Minute, 5)) // too soon
	l.interim(open(6*time.Minute, 10))
	l.interim(open(12*time.Minute, 10)) // idle since
	if len(got) != 1 || got[0].End != api.FlowOpen || got[0].PacketsOut != 10 || !got[0].Since.IsZero() {
		t.Fatalf("interim records %+v; want one of 10 packets", got)
	}
	l.saveOpen()

	l = New(opts)
	l.loadOpen()
	f := ended{id: 7, tuple: tu, start: t0, stop: t0.Add(13 * time.Minute), out: conntrack.Counter{Packets: 15, Bytes: 1500}}
	end, ok := l.flow(f)
	if !ok || end.PacketsOut != 5 || end.BytesOut != 500 || !end.Since.Equal(t0.Add(6*time.Minute)) {
		t.Errorf("the end record after a restart: %+v; want the 5 packets since the interim record", end)
	}
	// Another flow that got the same ID (a later one of the same tuple)
	// is not that one.
	l = New(opts)
	l.loadOpen()
	f.start = t0.Add(time.Hour)
	if later, _ := l.flow(f); later.PacketsOut != 15 || !later.Since.IsZero() {
		t.Errorf("a later flow with the same ID: %+v; want all its own packets", later)
	}
}
