package refusals

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/firewall"
	"github.com/extranetgw/extranet/internal/flowlog"
	"github.com/extranetgw/extranet/pkg/api"
)

type dir map[netip.Addr]flowlog.Who

func (d dir) Lookup(a netip.Addr) (flowlog.Who, bool) { w, ok := d[a]; return w, ok }

var (
	laptop  = netip.MustParseAddr("100.64.1.5")
	scanner = netip.MustParseAddr("100.64.2.9")
	server  = netip.MustParseAddr("10.10.1.2")
	t0      = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	peers   = dir{laptop: {Org: "acme", Name: "laptop", Group: "default"}, scanner: {Org: "globex", Name: "nmap", Group: "ops"}}
)

func recorder(t *testing.T, scan ScanOptions) (*Recorder, *[]Scan) {
	t.Helper()
	var scans []Scan
	if scan.Mode == "" {
		scan = ScanOptions{Mode: ScanSuspend, WarnAt: DefaultWarnAt, SuspendAt: DefaultSuspendAt}
	}
	if err := scan.Check(); err != nil {
		t.Fatal(err)
	}
	r := New(Options{Directory: peers, Scan: scan, OnScan: func(s Scan) { scans = append(scans, s) }})
	return r, &scans
}

// refused is a TCP SYN refused for not-granted, or of proto and reason.
func refused(r *Recorder, src netip.Addr, port uint16, at time.Time) {
	r.Refused(api.DenyNotGranted, 6, src, server, port, true, at)
}

// TestRecordsAddUp: repeated refusals of one destination make one record
// with their count, first and last time, peer and reason; other reasons
// and destinations make their own.
func TestRecordsAddUp(t *testing.T) {
	r, scans := recorder(t, ScanOptions{})
	for i := 0; i < 5; i++ {
		refused(r, laptop, 22, t0.Add(time.Duration(i)*time.Second))
	}
	r.Refused(api.DenyGateway, 1, laptop, netip.MustParseAddr("100.64.0.1"), 7, true, t0)
	r.Refused("not-ours", 6, laptop, server, 22, true, t0)
	r.Refused(api.DenyNotAPeer, 17, netip.MustParseAddr("100.64.9.9"), server, 53, true, t0)
	recs := r.Take(t0.Add(10 * time.Second))
	want := map[string]api.Flow{
		api.DenyNotGranted: {Opened: t0, Closed: t0.Add(4 * time.Second), Org: "acme", Group: "default", Peer: "acme/laptop", Address: "100.64.1.5", Proto: "tcp", Dest: "10.10.1.2", Port: 22, End: api.FlowRefused, Flows: 5, Reason: api.DenyNotGranted},
		// ICMP has no port, whatever the header's bytes were.
		api.DenyGateway:  {Opened: t0, Closed: t0, Org: "acme", Group: "default", Peer: "acme/laptop", Address: "100.64.1.5", Proto: "icmp", Dest: "100.64.0.1", End: api.FlowRefused, Flows: 1, Reason: api.DenyGateway},
		api.DenyNotAPeer: {Opened: t0, Closed: t0, Address: "100.64.9.9", Proto: "udp", Dest: "10.10.1.2", Port: 53, End: api.FlowRefused, Flows: 1, Reason: api.DenyNotAPeer},
	}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d: %+v", len(recs), len(want), recs)
	}
	for _, f := range recs {
		if f != want[f.Reason] {
			t.Errorf("got  %+v\nwant %+v", f, want[f.Reason])
		}
	}
	if r.Seen != 7 {
		t.Errorf("counted %d refused packets, want 7", r.Seen)
	}
	if len(*scans) != 0 {
		t.Errorf("scans reported: %+v", *scans)
	}
	if again := r.Take(t0.Add(20 * time.Second)); len(again) != 0 {
		t.Errorf("a second Take returned the same records: %+v", again)
	}
}

// TestAttemptsAddUp: what is new in the firewall's counts of refused
// packets since the last counts, and was not logged, becomes records of
// attempts past the log's rate; the first counts are where it starts, and
// a set made again counts from 0.
func TestAttemptsAddUp(t *testing.T) {
	r, scans := recorder(t, ScanOptions{})
	limited := func(src netip.Addr, reason string) firewall.Attempts {
		return firewall.Attempts{Reason: reason, Src: src}
	}
	// An earlier run's counts: already recorded by it.
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 500}, t0)
	if recs := r.Take(t0); len(recs) != 0 {
		t.Fatalf("the first counts made records: %+v", recs)
	}
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 800, limited(scanner, api.DenyHost): 40}, t0.Add(10*time.Second))
	// Read twice before one Take: what is new each time adds up.
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 900, limited(scanner, api.DenyHost): 40}, t0.Add(15*time.Second))
	recs := r.Take(t0.Add(15 * time.Second))
	want := map[string]api.Flow{
		"acme/laptop": {Opened: t0, Closed: t0.Add(15 * time.Second), Org: "acme", Group: "default", Peer: "acme/laptop", Address: "100.64.1.5", End: api.FlowRefused, Flows: 400, Reason: api.DenyNotGranted, RateLimited: true},
		"globex/nmap": {Opened: t0, Closed: t0.Add(10 * time.Second), Org: "globex", Group: "ops", Peer: "globex/nmap", Address: "100.64.2.9", End: api.FlowRefused, Flows: 40, Reason: api.DenyHost, RateLimited: true},
	}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d: %+v", len(recs), len(want), recs)
	}
	for _, f := range recs {
		if f != want[f.Peer] {
			t.Errorf("got  %+v\nwant %+v", f, want[f.Peer])
		}
	}
	// The sets made again by a repair: their counts start over.
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 7}, t0.Add(20*time.Second))
	if recs := r.Take(t0.Add(20 * time.Second)); len(recs) != 1 || recs[0].Flows != 7 {
		t.Errorf("after the sets were made again: %+v; want the 7 counted since", recs)
	}
	if r.RateLimited != 447 || r.Seen != 0 || len(*scans) != 0 {
		t.Errorf("counted %d past the rate, %d read, scans %+v; want 447, none read, no scan", r.RateLimited, r.Seen, *scans)
	}

	// Logged packets are in the counts too, and are not attempts past
	// the rate. Those logged after the counts were read are in the next.
	for i := 0; i < 5; i++ {
		refused(r, laptop, 443, t0.Add(21*time.Second))
	}
	r.Take(t0.Add(21 * time.Second))
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 7 + 3}, t0.Add(30*time.Second))
	if recs := r.Take(t0.Add(30 * time.Second)); len(recs) != 0 {
		t.Errorf("3 of 5 logged packets in the counts: %+v; want no attempt past the rate", recs)
	}
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 7 + 5 + 32}, t0.Add(40*time.Second))
	if recs := r.Take(t0.Add(40 * time.Second)); len(recs) != 1 || recs[0].Flows != 32 || !recs[0].RateLimited {
		t.Errorf("the other 2 logged packets and 32 more: %+v; want 32 past the rate", recs)
	}
	// A source's first packets, logged after the counts were read: its
	// member came with them, so they are in the next counts, not extra.
	newcomer := netip.MustParseAddr("100.64.1.9")
	for i := 0; i < 3; i++ {
		r.Refused(api.DenyHost, 6, newcomer, server, 22, true, t0.Add(41*time.Second))
	}
	r.Take(t0.Add(41 * time.Second))
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 7 + 5 + 32}, t0.Add(50*time.Second))
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 7 + 5 + 32, limited(newcomer, api.DenyHost): 3 + 10}, t0.Add(60*time.Second))
	if recs := r.Take(t0.Add(60 * time.Second)); len(recs) != 1 || recs[0].Flows != 10 || recs[0].Address != newcomer.String() {
		t.Errorf("a new source's 3 logged packets and 10 more: %+v; want 10 past the rate", recs)
	}
	if r.RateLimited != 447+32+10 || r.Seen != 8 {
		t.Errorf("counted %d past the rate, %d read; want %d, 8", r.RateLimited, r.Seen, 447+32+10)
	}

	// The address given to another organisation's peer between two
	// counts: the attempts are named after neither.
	d := dir{laptop: {Org: "acme", Name: "laptop", Group: "default"}}
	r = New(Options{Directory: d})
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 10}, t0)
	d[laptop] = flowlog.Who{Org: "globex", Name: "phone", Group: "default"}
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 30}, t0.Add(10*time.Second))
	if recs := r.Take(t0.Add(10 * time.Second)); len(recs) != 1 || recs[0].Flows != 20 || recs[0].Peer != "" || recs[0].Org != "" {
		t.Errorf("attempts of an address that changed hands: %+v; want 20, named after nobody", recs)
	}

	// The same for an address new to the counts: its first packets
	// logged while acme's peer held it, given to globex's before the
	// counts were read.
	d[scanner] = flowlog.Who{Org: "acme", Name: "old", Group: "default"}
	for i := 0; i < 3; i++ {
		r.Refused(api.DenyHost, 6, scanner, server, 22, true, t0.Add(11*time.Second))
	}
	r.Take(t0.Add(11 * time.Second))
	d[scanner] = flowlog.Who{Org: "globex", Name: "nmap", Group: "ops"}
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 30, limited(scanner, api.DenyHost): 3 + 50}, t0.Add(20*time.Second))
	if recs := r.Take(t0.Add(20 * time.Second)); len(recs) != 1 || recs[0].Flows != 50 || recs[0].Peer != "" || recs[0].Org != "" {
		t.Errorf("attempts of a new address that changed hands: %+v; want 50, named after nobody", recs)
	}
	// Held by one peer throughout: named after it.
	for i := 0; i < 2; i++ {
		r.Refused(api.DenyHost, 6, newcomer, server, 22, true, t0.Add(21*time.Second))
	}
	r.Take(t0.Add(21 * time.Second))
	d[newcomer] = flowlog.Who{Org: "acme", Name: "tablet", Group: "default"}
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 30, limited(scanner, api.DenyHost): 53, limited(newcomer, api.DenyHost): 2 + 4}, t0.Add(30*time.Second))
	if recs := r.Take(t0.Add(30 * time.Second)); len(recs) != 1 || recs[0].Flows != 4 || recs[0].Peer != "" {
		t.Errorf("attempts of a new address nobody held when first logged: %+v; want 4, named after nobody", recs)
	}
	kept := netip.MustParseAddr("100.64.1.10")
	d[kept] = flowlog.Who{Org: "acme", Name: "phone", Group: "default"}
	r.Refused(api.DenyHost, 6, kept, server, 22, true, t0.Add(31*time.Second))
	r.Take(t0.Add(31 * time.Second))
	r.Attempts(map[firewall.Attempts]uint64{limited(laptop, api.DenyNotGranted): 30, limited(scanner, api.DenyHost): 53, limited(newcomer, api.DenyHost): 6, limited(kept, api.DenyHost): 1 + 7}, t0.Add(40*time.Second))
	if recs := r.Take(t0.Add(40 * time.Second)); len(recs) != 1 || recs[0].Flows != 7 || recs[0].Peer != "acme/phone" {
		t.Errorf("attempts of a new address held by one peer throughout: %+v; want 7, named after it", recs)
	}
}

// TestASweepIsBounded: a sweep of thousands of ports writes perPeer
// records and one that adds up the rest, none lost from the counts.
func TestASweepIsBounded(t *testing.T) {
	r, _ := recorder(t, ScanOptions{Mode: ScanOff})
	for p := 1; p <= 5000; p++ {
		refused(r, laptop, uint16(p), t0)
	}
	recs := r.Take(t0)
	if len(recs) != perPeer+1 {
		t.Fatalf("%d records for one sweep", len(recs))
	}
	var total uint64
	others := 0
	for _, f := range recs {
		total += f.Flows
		if f.Dest == "" {
			others++
			if f.Flows != 5000-perPeer || f.Port != 0 || f.Proto != "" {
				t.Errorf("the rest: %+v", f)
			}
		}
	}
	if total != 5000 || others != 1 {
		t.Errorf("counted %d attempts in records, %d records of the rest", total, others)
	}
}

// TestScanThresholds: a peer is warned about at WarnAt distinct refused
// destinations within a minute, once per warnEvery, and reported as a
// scan at SuspendAt, again after SuspendAt more; retries of one
// destination, and destinations tried longer ago than the window, do not
// count.
func TestScanThresholds(t *testing.T) {
	r, scans := recorder(t, ScanOptions{Mode: ScanSuspend, WarnAt: 3, SuspendAt: 5})
	for i := 0; i < 50; i++ {
		refused(r, laptop, 22, t0) // one destination, retried
	}
	refused(r, laptop, 23, t0)
	// Two minutes on, those two are out of the window.
	at := t0.Add(2 * time.Minute)
	refused(r, laptop, 24, at)
	refused(r, laptop, 25, at)
	if len(*scans) != 0 {
		t.Fatalf("reported before 3 distinct destinations in a minute: %+v", *scans)
	}
	r.Refused(api.DenyNotGranted, 17, laptop, server, 25, true, at) // UDP: another destination
	if len(*scans) != 1 || (*scans)[0].Suspend || (*scans)[0].Distinct != 3 || (*scans)[0].Peer != "acme/laptop" {
		t.Fatalf("at the warning threshold: %+v", *scans)
	}
	refused(r, laptop, 26, at)
	if len(*scans) != 1 {
		t.Fatalf("warned twice: %+v", *scans)
	}
	r.Refused(api.DenyHost, 6, laptop, netip.MustParseAddr("10.10.0.1"), 22, true, at)
	if len(*scans) != 2 || !(*scans)[1].Suspend || (*scans)[1].Distinct != 5 {
		t.Fatalf("at the suspension threshold: %+v", *scans)
	}
	want := []string{"10.10.0.1:22/tcp", "10.10.1.2:24/tcp", "10.10.1.2:25/tcp", "10.10.1.2:25/udp", "10.10.1.2:26/tcp"}
	if fmt.Sprint((*scans)[1].Sample) != fmt.Sprint(want) {
		t.Errorf("evidence %v, want %v", (*scans)[1].Sample, want)
	}
	// The sweep goes on: another scan after five more destinations (the
	// suspension may have failed, or the peer was resumed at once), no
	// warning in between, and the watch stays small.
	for p := 100; p < 104; p++ {
		refused(r, laptop, uint16(p), at)
	}
	if len(*scans) != 2 {
		t.Fatalf("reported before five more: %+v", *scans)
	}
	refused(r, laptop, 104, at)
	if len(*scans) != 3 || !(*scans)[2].Suspend {
		t.Fatalf("five more: %+v", *scans)
	}
	for p := 200; p < 1000; p++ {
		refused(r, laptop, uint16(p), at)
	}
	if n := len(r.scans[laptop].seen); n > 5 {
		t.Errorf("the watch holds %d destinations", n)
	}
	if r.Warned != 1 || r.Scans != 2+800/5 {
		t.Errorf("counted %d warnings, %d scans", r.Warned, r.Scans)
	}
	// Ten minutes on, probing below the suspension threshold is warned
	// about again.
	later := at.Add(warnEvery)
	r.Take(later)
	for p := 2000; p < 2003; p++ {
		refused(r, laptop, uint16(p), later)
	}
	if last := (*scans)[len(*scans)-1]; last.Suspend || last.Distinct != 3 || r.Warned != 2 {
		t.Errorf("ten minutes later: %+v, %d warnings", last, r.Warned)
	}
}

// TestWhatIsNotAScan: packets that open nothing (a retransmission of a
// connection an ungrant killed), refusals the gateway caused (not-a-peer,
// no-group, no-org), new attempts at destinations whose flows the gateway
// killed, and an address given to a new peer do not make a scan of their
// own.
func TestWhatIsNotAScan(t *testing.T) {
	r, scans := recorder(t, ScanOptions{Mode: ScanSuspend, WarnAt: 3, SuspendAt: 5})
	for p := 1; p <= 20; p++ {
		r.Refused(api.DenyNotGranted, 6, laptop, server, uint16(p), false, t0)
		for _, reason := range []string{api.DenyNotAPeer, api.DenyNoGroup, api.DenyNoOrg} {
			r.Refused(reason, 6, laptop, server, uint16(p), true, t0)
		}
	}
	if len(*scans) != 0 || len(r.scans) != 0 {
		t.Fatalf("reported: %+v", *scans)
	}
	for p := 1; p <= 20; p++ {
		r.Killed(6, laptop, server, uint16(p), t0)
	}
	for p := 1; p <= 20; p++ {
		refused(r, laptop, uint16(p), t0.Add(30*time.Second))
	}
	if len(*scans) != 0 {
		t.Fatalf("reported for reconnecting to what the gateway killed: %+v", *scans)
	}
	r.Take(t0.Add(2 * time.Minute))
	if len(r.killed) != 0 {
		t.Errorf("kills kept past the window: %v", r.killed)
	}
	// Four destinations by the old holder, then the address is another
	// peer's: its first refusal starts its own count.
	at := t0.Add(2 * time.Minute)
	for p := 1; p <= 2; p++ {
		refused(r, laptop, uint16(p), at)
	}
	peers[laptop] = flowlog.Who{Org: "acme", Name: "desktop", Group: "default"}
	defer func() { peers[laptop] = flowlog.Who{Org: "acme", Name: "laptop", Group: "default"} }()
	refused(r, laptop, 3, at)
	if len(*scans) != 0 {
		t.Fatalf("the new holder was reported for the old one's refusals: %+v", *scans)
	}
	refused(r, laptop, 4, at)
	refused(r, laptop, 5, at)
	if len(*scans) != 1 || (*scans)[0].Peer != "acme/desktop" || (*scans)[0].Distinct != 3 {
		t.Errorf("the new holder's own warning: %+v", *scans)
	}
}

// TestScanModes: observe reports without suspending, an allowed peer is
// never reported, off reports nothing; the others are still watched.
func TestScanModes(t *testing.T) {
	sweep := func(r *Recorder, src netip.Addr) {
		for p := 1; p <= 10; p++ {
			refused(r, src, uint16(p), t0)
		}
	}
	// Observed, a sweep that goes on is reported at each threshold, then
	// not again for ten minutes, then so again.
	r, scans := recorder(t, ScanOptions{Mode: ScanObserve, WarnAt: 2, SuspendAt: 4})
	sweep(r, laptop)
	for p := 100; p < 200; p++ {
		refused(r, laptop, uint16(p), t0.Add(time.Minute))
	}
	if len(*scans) != 2 || (*scans)[0].Suspend || (*scans)[1].Suspend || (*scans)[1].Distinct != 4 {
		t.Errorf("observe: %+v", *scans)
	}
	for p := 300; p < 310; p++ {
		refused(r, laptop, uint16(p), t0.Add(warnEvery+2*time.Minute))
	}
	if len(*scans) != 4 || (*scans)[2].Distinct != 2 || (*scans)[3].Distinct != 4 {
		t.Errorf("observe, ten minutes on: %+v", *scans)
	}
	r, scans = recorder(t, ScanOptions{Mode: ScanSuspend, WarnAt: 2, SuspendAt: 4, Allow: []string{"acme/laptop"}})
	sweep(r, laptop)
	sweep(r, scanner)
	if len(*scans) < 2 || (*scans)[0].Peer != "globex/nmap" || !(*scans)[1].Suspend {
		t.Errorf("allowed acme/laptop: %+v", *scans)
	}
	r, scans = recorder(t, ScanOptions{Mode: ScanOff})
	sweep(r, laptop)
	if recs := r.Take(t0); len(*scans) != 0 || len(recs) != 10 {
		t.Errorf("off: %d reports, %d records", len(*scans), len(recs))
	}
}

func TestScanOptionsCheck(t *testing.T) {
	for _, bad := range []ScanOptions{
		{Mode: "kill"}, {Mode: ScanSuspend, WarnAt: 0, SuspendAt: 10}, {Mode: ScanSuspend, WarnAt: 50, SuspendAt: 10},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if err := (ScanOptions{Mode: ScanOff}).Check(); err != nil {
		t.Error(err)
	}
}
