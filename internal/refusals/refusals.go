// Package refusals turns what the firewall refused partners (the packets
// its deny chains log, see firewall.DenyChain) into activity records, and
// finds the partners that scan: a peer refused at many distinct
// destinations within a minute.
//
// It is pure: packets come in with the time they were read, records and
// scans go out through callbacks; the socket is nflog's and the actions
// the daemon's.
package refusals

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/extranetgw/extranet/internal/firewall"
	"github.com/extranetgw/extranet/internal/flowlog"
	"github.com/extranetgw/extranet/pkg/api"
)

// Defaults of ScanOptions, as issue #26 set them: a partner that probes 20
// destinations it may not reach in a minute is worth a look, one that
// probes 100 is sweeping.
const (
	DefaultWarnAt    = 20
	DefaultSuspendAt = 100
	// ScanWindow is how far back distinct destinations are counted.
	ScanWindow = time.Minute
)

// Scan modes.
const (
	// ScanSuspend warns, then suspends the scanning peer.
	ScanSuspend = "suspend"
	// ScanObserve only warns, at either threshold.
	ScanObserve = "observe"
	// ScanOff counts nothing.
	ScanOff = "off"
)

// ScanOptions set what counts as a scan and what is done about it.
type ScanOptions struct {
	Mode string
	// WarnAt and SuspendAt are numbers of distinct refused destinations
	// (address, protocol and port) within ScanWindow.
	WarnAt, SuspendAt int
	// Allow names peers (ORG/NAME) never treated as scanners: a partner's
	// sanctioned vulnerability scanner, say.
	Allow []string
}

// Check says what is wrong with o, naming the setting.
func (o ScanOptions) Check() error {
	switch o.Mode {
	case ScanSuspend, ScanObserve, ScanOff:
	default:
		return fmt.Errorf("scan-mode %q: want %s, %s or %s", o.Mode, ScanSuspend, ScanObserve, ScanOff)
	}
	if o.Mode == ScanOff {
		return nil
	}
	if o.WarnAt < 1 || o.SuspendAt < 1 {
		return fmt.Errorf("scan-warn %d, scan-suspend %d: both must be at least 1", o.WarnAt, o.SuspendAt)
	}
	if o.WarnAt > o.SuspendAt {
		return fmt.Errorf("scan-warn %d is above scan-suspend %d: warn first, or set them equal", o.WarnAt, o.SuspendAt)
	}
	return nil
}

// Scan is what a scanner did, when it crossed a threshold.
type Scan struct {
	Address netip.Addr
	// Org, Name and Peer (ORG/NAME) name its peer; all are "" for an
	// address no peer holds.
	Org, Name, Peer string
	// Distinct refused destinations within Window.
	Distinct int
	Window   time.Duration
	// Sample are some of them, as 10.1.2.3:22/tcp.
	Sample []string
	// Suspend: the peer is to be suspended; otherwise warned about.
	Suspend bool
}

// Options configure a Recorder.
type Options struct {
	Directory flowlog.Directory
	Scan      ScanOptions
	// OnScan is told of each threshold crossed: a warning once per
	// warnEvery and address, a scan each time SuspendAt further distinct
	// destinations were refused. It must not block.
	OnScan func(Scan)
}

// Recorder adds up refusals and watches for scans. Its methods are for one
// goroutine.
type Recorder struct {
	o     Options
	allow map[string]bool
	// open are the records being added up, one per peer, destination and
	// reason; per peer at most perPeer, the rest in one record per reason
	// without a destination.
	open    map[key]*api.Flow
	perPeer map[netip.Addr]int
	scans   map[netip.Addr]*watch
	// killed are the destinations of each address whose flows the gateway
	// killed, and when (see Killed).
	killed map[netip.Addr]map[target]time.Time

	// attempts are the firewall's last counts of every refused packet
	// (see Attempts); nil until the first.
	attempts map[firewall.Attempts]uint64
	counted  time.Time // when they were taken
	// logged counts the packets Refused took since then, per address and
	// reason; ahead, those the firewall's counts had not reached yet when
	// taken (they are read apart, the log's packets a moment later).
	logged, ahead map[firewall.Attempts]uint64
	// holders are who held each address counted then; firstSeen, who
	// held an address those counts did not have when its first packet
	// since was logged (known false: nobody).
	holders   map[netip.Addr]flowlog.Who
	firstSeen map[netip.Addr]holder

	// Counts since the start, for status and metrics.
	Seen        uint64 // refused packets read
	RateLimited uint64 // refused packets past the log's rate
	Warned      uint64 // warnings reported
	Scans       uint64 // scans reported (suspended unless observed)
}

// perPeer bounds the destinations a peer's refusals are recorded by in a
// flush period, as flowlog's summaries do: a sweep of 60,000 ports makes
// perPeer records and one more, not 60,000.
const perPeer = 50

// FlushEvery is how often records are taken: a refused attempt is in the
// log within this long, or at the next read of the log (the daemon takes
// them first).
const FlushEvery = 10 * time.Second

// warnEvery spaces the warnings about one address: a peer that keeps
// probing below the suspension threshold is reported, not written into
// the audit log every minute forever.
const warnEvery = 10 * time.Minute

// scanReasons are the refusals that count toward a scan: what a partner
// tried to reach. A source that is no peer in force (not-a-peer: expired,
// or held by WireGuard against the store), whose group is gone (no-group:
// a move in progress) or which is in no block (no-org) was made so by the
// gateway, not by the partner, and suspending it would name the wrong
// cause.
var scanReasons = map[string]bool{api.DenyNotGranted: true, api.DenyHost: true, api.DenyGateway: true, api.DenyTunnel: true}

type key struct {
	src, dst netip.Addr
	proto    uint8
	port     uint16
	reason   string
	// others adds up the destinations past perPeer, limited the
	// attempts past the log's rate.
	others, limited bool
}

// holder is who held an address, if anyone.
type holder struct {
	who   flowlog.Who
	known bool
}

// target is one destination a scanner tried.
type target struct {
	dst   netip.Addr
	proto uint8
	port  uint16
}

func (t target) String() string {
	s := t.dst.String()
	if t.port != 0 {
		s += ":" + strconv.Itoa(int(t.port))
	}
	return s + "/" + flowlog.ProtoName(t.proto)
}

// watch is one address's refused destinations within the window.
type watch struct {
	// who holds the address: when the directory names someone else, the
	// address was given to another peer, who starts afresh.
	who  flowlog.Who
	seen map[target]time.Time
	last time.Time
	// warned and scanned are when a warning and a scan were last
	// reported.
	warned, scanned time.Time
}

// New returns a Recorder.
func New(o Options) *Recorder {
	r := &Recorder{o: o, allow: map[string]bool{}, open: map[key]*api.Flow{}, perPeer: map[netip.Addr]int{},
		scans: map[netip.Addr]*watch{}, killed: map[netip.Addr]map[target]time.Time{},
		logged: map[firewall.Attempts]uint64{}, ahead: map[firewall.Attempts]uint64{}, firstSeen: map[netip.Addr]holder{}}
	for _, p := range o.Scan.Allow {
		r.allow[p] = true
	}
	return r
}

// Killed notes that the gateway killed a flow of src's to dst (an ungrant,
// a move, a suspension). Its partner's programs keep trying it for a
// while (a UDP poller, a client that reconnects, a site behind one peer),
// and are refused: that is the gateway's doing, not a scan, so for
// ScanWindow such a destination does not count.
func (r *Recorder) Killed(proto uint8, src, dst netip.Addr, port uint16, now time.Time) {
	if proto != 6 && proto != 17 {
		port = 0
	}
	m := r.killed[src]
	if m == nil {
		m = map[target]time.Time{}
		r.killed[src] = m
	}
	m[target{dst, proto, port}] = now
}

// Refused takes one refused packet, read at now. opening says the packet
// tries to open something (nflog.Packet.Opening); only those count toward
// a scan.
func (r *Recorder) Refused(reason string, proto uint8, src, dst netip.Addr, port uint16, opening bool, now time.Time) {
	if !slices.Contains(api.DenyReasons, reason) {
		return // not one of our chains' prefixes
	}
	r.Seen++
	if r.attempts != nil {
		r.logged[firewall.Attempts{Reason: reason, Src: src}]++
	}
	if proto != 6 && proto != 17 {
		port = 0
	}
	var who flowlog.Who
	known := false
	if r.o.Directory != nil {
		who, known = r.o.Directory.Lookup(src)
	}
	if _, counted := r.holders[src]; !counted && r.attempts != nil {
		if _, ok := r.firstSeen[src]; !ok {
			r.firstSeen[src] = holder{who, known}
		}
	}
	r.add(key{src: src, dst: dst, proto: proto, port: port, reason: reason}, who, known, now)
	if r.o.Scan.Mode == ScanOff || r.o.OnScan == nil || !opening || !scanReasons[reason] {
		return
	}
	if known && r.allow[who.Org+"/"+who.Name] {
		return
	}
	t := target{dst, proto, port}
	if at, ok := r.killed[src][t]; ok && now.Sub(at) <= ScanWindow {
		return
	}
	r.watch(t, src, who, known, now)
}

func (r *Recorder) add(k key, who flowlog.Who, known bool, now time.Time) {
	f := r.open[k]
	if f == nil {
		if r.perPeer[k.src] >= perPeer {
			k = key{src: k.src, reason: k.reason, others: true}
			f = r.open[k]
		}
	}
	if f == nil {
		f = &api.Flow{Opened: now.UTC(), Address: k.src.String(), Proto: flowlog.ProtoName(k.proto), Port: k.port, End: api.FlowRefused, Reason: k.reason}
		if k.others {
			f.Proto, f.Port = "", 0
		} else {
			f.Dest = k.dst.String()
			r.perPeer[k.src]++
		}
		if known {
			f.Org, f.Group, f.Peer = who.Org, who.Group, who.Org+"/"+who.Name
		}
		r.open[k] = f
	}
	f.Flows++
	f.Closed = now.UTC()
}

// Attempts takes the firewall's counts of every refused packet
// (firewall.ReadAttempts: per address and reason, since the address's
// first) and records what is new since the last counts and was not
// logged, one record per address and reason, without a destination: the
// attempts past the log's rate, the packets the kernel dropped before
// they could be logged, and any the log's reader lost. The first counts
// are where it starts: a member there already counted for an earlier run
// of the daemon, which recorded it.
func (r *Recorder) Attempts(counts map[firewall.Attempts]uint64, now time.Time) {
	last, since, held, logged, seen := r.attempts, r.counted, r.holders, r.logged, r.firstSeen
	r.attempts, r.counted, r.holders, r.logged, r.firstSeen = counts, now, map[netip.Addr]flowlog.Who{}, map[firewall.Attempts]uint64{}, map[netip.Addr]holder{}
	lookup := func(a netip.Addr) (flowlog.Who, bool) {
		if r.o.Directory == nil {
			return flowlog.Who{}, false
		}
		return r.o.Directory.Lookup(a)
	}
	for c := range counts {
		if who, ok := lookup(c.Src); ok {
			r.holders[c.Src] = who
		}
	}
	if last == nil {
		clear(r.ahead)
		return
	}
	// The firewall counts a packet before it logs it, so the new counts
	// hold every packet logged meanwhile but those logged after they were
	// read, a source's first packets among them: its member was made
	// then. Those are in the next counts, so they wait in ahead, for one
	// reading: a source the next counts do not have either has no member.
	for c, n := range r.ahead {
		if _, ok := counts[c]; !ok {
			if _, inLast := last[c]; !inLast {
				delete(r.ahead, c)
				continue
			}
		}
		logged[c] += n
	}
	clear(r.ahead)
	for c, n := range logged {
		if _, ok := counts[c]; !ok {
			r.ahead[c] = n
			if h, ok := seen[c.Src]; ok {
				r.firstSeen[c.Src] = h
			}
		}
	}
	for c, n := range counts {
		prev := last[c]
		if n < prev {
			// The set was made again (a repair): it counts from 0.
			prev = 0
		}
		counted, inLog := n-prev, logged[c]
		if counted <= inLog {
			if r.ahead[c] = inLog - counted; r.ahead[c] == 0 {
				delete(r.ahead, c)
			}
			continue
		}
		delete(r.ahead, c)
		limited := counted - inLog
		r.RateLimited += limited
		// The attempts came between the last counts and these: if the
		// address changed hands meanwhile, either peer may have made
		// them, and naming one could show another organisation's
		// attempts to its sponsor.
		who, known := r.holders[c.Src]
		if before, ok := held[c.Src]; ok && (!known || before != who) {
			who, known = flowlog.Who{}, false
		}
		// A source the last counts did not have: who held it when its
		// first packet was logged, for the same reason.
		if first, ok := seen[c.Src]; ok && (!first.known || !known || first.who != who) {
			who, known = flowlog.Who{}, false
		}
		k := key{src: c.Src, reason: c.Reason, limited: true}
		f := r.open[k]
		if f == nil {
			f = &api.Flow{Opened: since.UTC(), Address: c.Src.String(), End: api.FlowRefused, Reason: c.Reason, RateLimited: true}
			if known {
				f.Org, f.Group, f.Peer = who.Org, who.Group, who.Org+"/"+who.Name
			}
			r.open[k] = f
		}
		f.Flows += limited
		f.Closed = now.UTC()
	}
}

// Take returns the records added up since the last Take, oldest first,
// and forgets addresses quiet for longer than the window.
func (r *Recorder) Take(now time.Time) []api.Flow {
	recs := make([]api.Flow, 0, len(r.open))
	for _, f := range r.open {
		recs = append(recs, *f)
	}
	slices.SortFunc(recs, func(a, b api.Flow) int { return a.Opened.Compare(b.Opened) })
	clear(r.open)
	clear(r.perPeer)
	for a, w := range r.scans {
		if now.Sub(w.last) > ScanWindow && now.Sub(w.warned) > warnEvery && now.Sub(w.scanned) > warnEvery {
			delete(r.scans, a)
		}
	}
	for a, m := range r.killed {
		for t, at := range m {
			if now.Sub(at) > ScanWindow {
				delete(m, t)
			}
		}
		if len(m) == 0 {
			delete(r.killed, a)
		}
	}
	return recs
}

func (r *Recorder) watch(t target, src netip.Addr, who flowlog.Who, known bool, now time.Time) {
	w := r.scans[src]
	if w == nil || w.who != who {
		w = &watch{who: who, seen: map[target]time.Time{}}
		r.scans[src] = w
	}
	w.seen[t] = now
	w.last = now
	o := r.o.Scan
	if len(w.seen) < o.WarnAt {
		return
	}
	// Only when a threshold may be crossed are old destinations dropped:
	// the map never holds more than SuspendAt of them before it is.
	for d, at := range w.seen {
		if now.Sub(at) > ScanWindow {
			delete(w.seen, d)
		}
	}
	n := len(w.seen)
	stop := n >= o.SuspendAt
	// A scan that suspends is reported again after SuspendAt more
	// destinations, so a peer resumed at once, or whose suspension failed,
	// is not left unwatched; it cannot go on long, as its suspension ends
	// its traffic. Any other report (a warning, a scan only observed, or
	// by an address no peer holds) is spaced warnEvery: a peer that keeps
	// sweeping must not fill the audit log or the alert queue.
	suspend := stop && o.Mode == ScanSuspend && known
	recent := func(t time.Time) bool { return !t.IsZero() && now.Sub(t) < warnEvery }
	switch {
	case n < o.WarnAt:
		return
	case stop && !suspend && recent(w.scanned), !stop && (recent(w.warned) || recent(w.scanned)):
		if stop {
			clear(w.seen)
		}
		return
	case stop:
		r.Scans++
		w.scanned = now
	default:
		r.Warned++
		w.warned = now
	}
	s := Scan{Address: src, Distinct: n, Window: ScanWindow, Suspend: suspend}
	if known {
		s.Org, s.Name, s.Peer = who.Org, who.Name, who.Org+"/"+who.Name
	}
	for d := range w.seen {
		s.Sample = append(s.Sample, d.String())
	}
	slices.Sort(s.Sample)
	if len(s.Sample) > 10 {
		s.Sample = s.Sample[:10]
	}
	if stop {
		clear(w.seen)
	}
	r.o.OnScan(s)
}
