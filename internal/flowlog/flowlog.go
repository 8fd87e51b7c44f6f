// Package flowlog records what partners did: each connection a partner
// opened through the gateway, when it ended, as an api.Flow. It listens to
// the gateway namespace's conntrack DESTROY events, which (with the
// namespace's nf_conntrack_acct and nf_conntrack_timestamp on) carry the
// start and end times and the bytes and packets each way, so one event per
// connection is enough: NEW and UPDATE events would multiply the volume.
package flowlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ti-mo/conntrack"

	"github.com/extranetgw/extranet/pkg/api"
)

// Tuple names a flow by its original direction.
type Tuple struct {
	Proto        uint8
	Src, Dst     netip.Addr
	SPort, DPort uint16
}

// Kills remembers the flows the gateway deleted itself, so that their
// DESTROY event, which looks like any other, is told apart: the flow was
// killed because its access ended. Entries are forgotten after a while
// whether or not their event came.
type Kills struct {
	// on while a Listener runs to take them; marks made otherwise would
	// wait for nobody.
	on    atomic.Bool
	mu    sync.Mutex
	m     map[Tuple]kill
	swept time.Time
}

// kill is when a flow of a tuple was last deleted, and how many of its
// flows (ICMP and other portless ones share one) await their event.
type kill struct {
	at time.Time
	n  int
}

// killMemory is how long a kill waits for its event.
const killMemory = time.Minute

// Killed notes that the gateway is deleting a flow (conntrack.Kernel's
// Killed).
func (k *Kills) Killed(proto uint8, src, dst netip.Addr, sport, dport uint16) {
	k.Mark(Tuple{Proto: proto, Src: src, Dst: dst, SPort: sport, DPort: dport})
}

// Mark notes that the gateway is deleting the flow t.
func (k *Kills) Mark(t Tuple) {
	if !k.on.Load() {
		return
	}
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[Tuple]kill{}
	}
	c := k.m[t]
	if now.Sub(c.at) > killMemory {
		c.n = 0 // a stale mark whose event never came
	}
	k.m[t] = kill{at: now, n: c.n + 1}
	if now.Sub(k.swept) > killMemory {
		for t, c := range k.m {
			if now.Sub(c.at) > killMemory {
				delete(k.m, t)
			}
		}
		k.swept = now
	}
}

// take tells whether t was killed by the gateway, and forgets one kill.
func (k *Kills) take(t Tuple) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, ok := k.m[t]
	if !ok {
		return false
	}
	if c.n--; c.n <= 0 {
		delete(k.m, t)
	} else {
		k.m[t] = c
	}
	return time.Since(c.at) <= killMemory
}

// Who is the peer behind a tunnel address.
type Who struct {
	Org, Name, Group string
}

// Directory names the peer that held a tunnel address.
type Directory interface {
	Lookup(netip.Addr) (Who, bool)
}

// Options configure a Listener.
type Options struct {
	// Tunnel is the partners' network: flows from it are recorded.
	Tunnel netip.Prefix
	// Do runs fn in the gateway namespace, where the socket must be made.
	Do        func(fn func() error) error
	Directory Directory
	Kills     *Kills
	// Record takes each flow; it must not block for long.
	Record func(api.Flow) error
	// Interim, when positive, is how often a flow still open gets a
	// record of what it carried since its previous one: a week-long
	// session is in the log within Interim, not only when it ends.
	Interim time.Duration
	// OpenFile, when set, keeps across restarts where the open flows'
	// records stand: Run reads it when it starts and writes it when it
	// ends, so that a restart does not count again what was recorded.
	OpenFile string
	Logger   *slog.Logger
}

// Listener turns conntrack events into flow records.
type Listener struct {
	o Options

	recorded, lost, failed, summarised atomic.Uint64
	lastErr                            atomic.Value // string

	// Owned by the goroutine of Run: each partner address's budget, and
	// the open flows that have had an interim record, by conntrack ID.
	budgets map[netip.Addr]*budget
	open    map[uint32]*reported
	dumps   uint64 // listings of the open flows so far
}

// reported is where an open flow's records stand: what it had carried at
// its last one. The kernel's ID of a flow is a hash that a later flow of
// the same tuple may get again; with the start, it names one flow.
type reported struct {
	Tuple   Tuple
	Start   time.Time
	At      time.Time
	Out, In conntrack.Counter
	seen    uint64 // the last listing that had it
}

// openFlow is what an interim record needs of a flow in a listing.
type openFlow struct {
	id      uint32
	tuple   Tuple
	start   time.Time
	out, in conntrack.Counter
}

// listing is one listing of the open flows taken at at, or why none was.
type listing struct {
	at    time.Time
	flows []openFlow
	err   error
}

// New returns a Listener; Run starts it.
func New(o Options) *Listener {
	return &Listener{o: o, budgets: map[netip.Addr]*budget{}, open: map[uint32]*reported{}}
}

// Stats are the Listener's counters since it started.
type Stats struct {
	// Recorded flows; Lost: times the event socket failed (its buffer
	// overflowed, say), each losing the flows that ended meanwhile;
	// Failed records (Record returned an error); Summarised flows,
	// beyond their peer's budget, counted in summary records instead.
	Recorded, Lost, Failed, Summarised uint64
	// LastError is why the event socket last failed, "" if it never did.
	LastError string
}

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	e, _ := l.lastErr.Load().(string)
	return Stats{Recorded: l.recorded.Load(), Lost: l.lost.Load(), Failed: l.failed.Load(), Summarised: l.summarised.Load(), LastError: e}
}

// A peer's budget of records: a partner that opens flows faster (a UDP
// sweep of source ports, say) would otherwise rotate everyone's history
// out of the log within minutes. What is over the budget is not lost: it
// is added up into summary records, one a minute per destination (up to
// summaryKeys of them, the rest in one more), so where the flows went and
// how much they carried stays. A flow the gateway killed is always
// recorded: kills are the gateway's own doing, and what a revoke ended is
// what an admin looks for.
const (
	budgetRate   = 20   // records per second, per peer
	budgetBurst  = 1000 // records at once
	summaryEvery = time.Minute
	summaryKeys  = 50 // destinations summarised per peer and minute
)

type budget struct {
	tokens float64
	last   time.Time
	over   map[summaryKey]*api.Flow // the summaries being added up
}

// summaryKey is what a summary keeps of its flows; the zero key adds up
// the destinations beyond summaryKeys.
type summaryKey struct {
	proto, dest string
	port        uint16
}

// admit spends one of f's peer's records, or adds f to its summaries.
func (l *Listener) admit(addr netip.Addr, f api.Flow, now time.Time) bool {
	if f.End == api.FlowKilled {
		return true
	}
	b := l.budgets[addr]
	if b == nil {
		b = &budget{tokens: budgetBurst, last: now}
		l.budgets[addr] = b
	}
	b.tokens = min(budgetBurst, b.tokens+now.Sub(b.last).Seconds()*budgetRate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	if b.over == nil {
		b.over = map[summaryKey]*api.Flow{}
	}
	k := summaryKey{proto: f.Proto, dest: f.Dest, port: f.Port}
	if _, ok := b.over[k]; !ok && len(b.over) >= summaryKeys {
		k = summaryKey{}
	}
	o := b.over[k]
	if o == nil {
		o = &api.Flow{Opened: f.Opened, Org: f.Org, Group: f.Group, Peer: f.Peer, Address: f.Address,
			Proto: k.proto, Dest: k.dest, Port: k.port, End: api.FlowSummarised}
		b.over[k] = o
	}
	if f.End != api.FlowOpen {
		// An interim record's flow is counted once, when it ends.
		o.Flows++
	}
	o.Opened = minTime(o.Opened, f.Opened)
	o.Closed = maxTime(o.Closed, f.Closed)
	o.BytesOut += f.BytesOut
	o.BytesIn += f.BytesIn
	o.PacketsOut += f.PacketsOut
	o.PacketsIn += f.PacketsIn
	l.summarised.Add(1)
	return false
}

// flushSummaries records the summaries added up, and forgets budgets left
// full for a while.
func (l *Listener) flushSummaries(now time.Time) {
	for addr, b := range l.budgets {
		for _, o := range b.over {
			l.record(*o)
		}
		b.over = nil
		if now.Sub(b.last) > 10*summaryEvery {
			delete(l.budgets, addr)
		}
	}
}

func (l *Listener) record(f api.Flow) {
	if err := l.o.Record(f); err != nil {
		if l.failed.Add(1) == 1 {
			l.o.Logger.Error("activity: a flow could not be recorded", "err", err)
		}
		return
	}
	l.recorded.Add(1)
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// readBuffer is the event socket's receive buffer. With the default 208
// KiB a burst of 10,000 new flows/s lost half its events; 4 MiB was
// lossless at 20,000/s (issue #26's measurements).
const readBuffer = 4 << 20

// EnableAccounting turns on what DESTROY events need to carry times and
// counters. It must run in the gateway namespace (inside Options.Do).
func EnableAccounting() error {
	// Events on for every flow: in the kernel's default (2, auto) a flow
	// made while no listener was bound (before the first start, during a
	// restart) would never say it ended.
	for _, p := range []string{"/proc/sys/net/netfilter/nf_conntrack_acct", "/proc/sys/net/netfilter/nf_conntrack_timestamp", "/proc/sys/net/netfilter/nf_conntrack_events"} {
		if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("turn on %s: %w", p, err)
		}
	}
	return nil
}

// Run listens until ctx ends. A receive error (an overflow among them)
// closes the socket: it is counted, logged and the socket made again, so
// the log resumes.
func (l *Listener) Run(ctx context.Context) error {
	if err := l.o.Do(EnableAccounting); err != nil {
		l.lastErr.Store(err.Error())
		l.lost.Add(1)
		return err
	}
	if l.o.Kills != nil {
		l.o.Kills.on.Store(true)
		defer l.o.Kills.on.Store(false)
	}
	tick := time.NewTicker(summaryEvery)
	defer tick.Stop()
	defer l.flushSummaries(time.Now())
	var listings chan listing
	if l.o.Interim > 0 {
		l.loadOpen()
		defer l.saveOpen()
		listings = make(chan listing)
		go l.list(ctx, listings)
	}
	for backoff := 100 * time.Millisecond; ; {
		began := time.Now()
		err := l.listen(ctx, tick.C, listings)
		if ctx.Err() != nil {
			return nil
		}
		// Whatever ended while there was no socket is gone: counted, so
		// that a listener that cannot start again is never silent.
		l.lost.Add(1)
		l.lastErr.Store(err.Error())
		l.o.Logger.Warn("activity: the conntrack event socket failed; making it again", "err", err)
		if time.Since(began) > time.Minute {
			// It worked for a while: this failure is not the last one's.
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (l *Listener) listen(ctx context.Context, tick <-chan time.Time, listings <-chan listing) error {
	var sock *eventSocket
	if err := l.o.Do(func() error {
		var err error
		sock, err = openEvents(readBuffer)
		return err
	}); err != nil {
		return fmt.Errorf("open a conntrack event socket in the gateway namespace: %w", err)
	}
	// The reader hands over each flow that ended. An overflow loses what
	// ended meanwhile, which is counted, and the stream goes on; any other
	// error ends the socket, and Run makes it again.
	// They come in batches, as the kernel had them: one hand-over, and
	// one wake-up of this loop, per batch rather than per flow.
	events := make(chan endedBatch, 16)
	failed := make(chan error, 1)
	go func() {
		defer close(events)
		var b endedBatch
		for {
			err := sock.next(&b.e[b.n])
			if errors.Is(err, errLost) {
				l.lost.Add(1)
				l.lastErr.Store(err.Error())
				continue
			}
			if err != nil {
				if b.n > 0 {
					events <- b
				}
				failed <- err
				return
			}
			if b.n++; b.n == len(b.e) || !sock.buffered() {
				events <- b
				b.n = 0
			}
		}
	}()
	// Closing ends the reader's wait; what it had read is recorded.
	closeDraining := func() {
		sock.Close()
		for b := range events {
			l.handleBatch(b)
		}
	}
	for {
		select {
		case <-ctx.Done():
			closeDraining()
			return nil
		case now := <-tick:
			l.flushSummaries(now)
		case ls := <-listings:
			// A listing that failed delays interim records to the next:
			// the kernel's counters keep counting.
			if ls.err != nil {
				l.o.Logger.Warn("activity: no interim records this time", "err", ls.err)
				continue
			}
			l.interim(ls)
		case b, ok := <-events:
			if !ok {
				sock.Close()
				return <-failed
			}
			l.handleBatch(b)
		}
	}
}

// endedBatch is the flows that ended of one receive from the kernel.
type endedBatch struct {
	n int
	e [eventBatch]ended
}

func (l *Listener) handleBatch(b endedBatch) {
	for i := range b.n {
		l.handle(b.e[i])
	}
}

func (l *Listener) handle(e ended) {
	f, ok := l.flow(e)
	if !ok {
		return
	}
	if l.admit(e.tuple.Src, f, time.Now()) {
		l.record(f)
	}
}

func tupleOf(f *conntrack.Flow) Tuple {
	t := Tuple{
		Proto: f.TupleOrig.Proto.Protocol,
		Src:   f.TupleOrig.IP.SourceAddress.Unmap(), Dst: f.TupleOrig.IP.DestinationAddress.Unmap(),
	}
	// Ports as the sweep names them: for TCP and UDP only.
	if t.Proto == 6 || t.Proto == 17 {
		t.SPort, t.DPort = f.TupleOrig.Proto.SourcePort, f.TupleOrig.Proto.DestinationPort
	}
	return t
}

// flow makes the record of a flow that ended, if a partner opened it.
func (l *Listener) flow(e ended) (api.Flow, bool) {
	t := e.tuple
	if !l.o.Tunnel.Contains(t.Src) {
		return api.Flow{}, false
	}
	// A flow the sweep deleted that had closed already (both ways: in
	// TIME_WAIT or CLOSE) ended by itself; one half closed did not.
	end := ending(e)
	if l.o.Kills != nil && l.o.Kills.take(t) && !closedBothWays(e) {
		end = api.FlowKilled
	}
	out, in := e.out, e.in
	var since time.Time
	if p := l.open[e.id]; p != nil && p.Tuple == t && p.Start.Equal(e.start) {
		delete(l.open, e.id)
		out, in, since = minus(out, p.Out), minus(in, p.In), p.At.UTC()
	}
	r := Record(t, e.start, e.stop, out, in, end, l.o.Directory)
	r.Since = since
	return r, true
}

// list lists the gateway's open flows every fifth of Interim, so that a
// flow gets its interim record between Interim and 1.2 × Interim after
// its previous one, and hands each listing to the loop. It runs beside
// the loop: a long listing must not keep the kernel's events waiting.
func (l *Listener) list(ctx context.Context, out chan<- listing) {
	t := time.NewTicker(l.o.Interim / 5)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			ls := listing{at: now}
			ls.flows, ls.err = l.listOpen()
			select {
			case out <- ls:
			case <-ctx.Done():
				return
			}
		}
	}
}

// listOpen returns the partners' flows the kernel tracks. The kernel's
// listing is held whole for a moment (ti-mo's Dump); only what a record
// needs is kept.
func (l *Listener) listOpen() ([]openFlow, error) {
	var flows []conntrack.Flow
	if err := l.o.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		flows, err = c.Dump(nil)
		return err
	}); err != nil {
		return nil, fmt.Errorf("list the open flows: %w", err)
	}
	var out []openFlow
	for i := range flows {
		f := &flows[i]
		t := tupleOf(f)
		if !l.o.Tunnel.Contains(t.Src) || f.Timestamp.Start.IsZero() {
			continue
		}
		out = append(out, openFlow{id: f.ID, tuple: t, start: f.Timestamp.Start, out: f.CountersOrig, in: f.CountersReply})
	}
	return out, nil
}

// interim records, for each partner's flow in ls whose last record (or
// opening) is Interim old and that carried something since, what it
// carried.
func (l *Listener) interim(ls listing) {
	now := ls.at
	l.dumps++
	for _, f := range ls.flows {
		p := l.open[f.id]
		if p != nil && (p.Tuple != f.tuple || !p.Start.Equal(f.start)) {
			p = nil // the ID of a flow that ended unseen, taken again
		}
		from, out, in := f.start, f.out, f.in
		if p != nil {
			p.seen = l.dumps
			from, out, in = p.At, minus(out, p.Out), minus(in, p.In)
		}
		if now.Sub(from) < l.o.Interim || (p != nil && out.Packets == 0 && in.Packets == 0) {
			// Too soon, or idle since its last record: an idle
			// connection of days would otherwise write a record of
			// nothing every Interim.
			continue
		}
		r := Record(f.tuple, f.start, now, out, in, api.FlowOpen, l.o.Directory)
		if p != nil {
			r.Since = p.At.UTC()
		}
		l.open[f.id] = &reported{Tuple: f.tuple, Start: f.start, At: now, Out: f.out, In: f.in, seen: l.dumps}
		if l.admit(f.tuple.Src, r, now) {
			l.record(r)
		}
	}
	// A flow missing from two listings in a row ended, and its event was
	// handled or lost; one missing from one may have ended since, its
	// event still on the way.
	for id, p := range l.open {
		if p.seen+1 < l.dumps {
			delete(l.open, id)
		}
	}
}

// savedOpen is OpenFile's form of the open flows' records.
type savedOpen struct {
	ID uint32 `json:"id"`
	reported
}

// loadOpen reads OpenFile, if any: the flows of a restart's namespace
// are those the last run recorded. A file that cannot be read costs a
// second count of what those flows had carried, and is said so.
func (l *Listener) loadOpen() {
	if l.o.OpenFile == "" {
		return
	}
	raw, err := os.ReadFile(l.o.OpenFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var saved []savedOpen
	if err == nil {
		err = json.Unmarshal(raw, &saved)
	}
	if err != nil {
		l.o.Logger.Warn("activity: where the open flows' records stood is lost; their next records count from their start", "file", l.o.OpenFile, "err", err)
		return
	}
	for _, s := range saved {
		r := s.reported
		l.open[s.ID] = &r
	}
}

// saveOpen writes OpenFile (0600, replaced whole).
func (l *Listener) saveOpen() {
	if l.o.OpenFile == "" {
		return
	}
	saved := make([]savedOpen, 0, len(l.open))
	for id, p := range l.open {
		saved = append(saved, savedOpen{ID: id, reported: *p})
	}
	raw, err := json.Marshal(saved)
	if err == nil {
		tmp := l.o.OpenFile + ".new"
		if err = os.WriteFile(tmp, raw, 0o600); err == nil {
			err = os.Rename(tmp, l.o.OpenFile)
		}
	}
	if err != nil {
		l.o.Logger.Warn("activity: where the open flows' records stand could not be kept; after the restart their next records count from their start", "file", l.o.OpenFile, "err", err)
	}
}

// minus is what a flow carried since it had carried b: counters only grow,
// so a smaller a is a flow that is not b's.
func minus(a, b conntrack.Counter) conntrack.Counter {
	if a.Bytes < b.Bytes || a.Packets < b.Packets {
		return a
	}
	return conntrack.Counter{Bytes: a.Bytes - b.Bytes, Packets: a.Packets - b.Packets, Direction: a.Direction}
}

// TCP states of conntrack at a flow's end (nf_conntrack_tcp.h): a flow
// that got as far as a FIN or RST was closed; one that did not, timed out.
const (
	tcpFinWait   = 4
	tcpCloseWait = 5
	tcpLastAck   = 6
	tcpTimeWait  = 7
	tcpClose     = 8
)

func closedBothWays(e ended) bool {
	if !e.tcp {
		return false
	}
	switch e.tcpState {
	case tcpLastAck, tcpTimeWait, tcpClose:
		return true
	}
	return false
}

func ending(e ended) string {
	if e.tuple.Proto == 6 && e.tcp {
		switch e.tcpState {
		case tcpFinWait, tcpCloseWait, tcpLastAck, tcpTimeWait, tcpClose:
			return api.FlowClosed
		}
	}
	return api.FlowTimedOut
}

// Record makes a flow record: pure, for tests.
func Record(t Tuple, opened, closed time.Time, out, in conntrack.Counter, end string, dir Directory) api.Flow {
	if closed.IsZero() {
		closed = time.Now()
	}
	r := api.Flow{
		Opened: opened.UTC(), Closed: closed.UTC(),
		Address: t.Src.String(), Dest: t.Dst.String(), Proto: ProtoName(t.Proto),
		BytesOut: out.Bytes, PacketsOut: out.Packets, BytesIn: in.Bytes, PacketsIn: in.Packets,
		End: end,
	}
	if t.Proto == 6 || t.Proto == 17 {
		r.Port = t.DPort
	}
	if dir != nil {
		if w, ok := dir.Lookup(t.Src); ok {
			r.Org, r.Group, r.Peer = w.Org, w.Group, w.Org+"/"+w.Name
		}
	}
	return r
}

// ProtoName names an IP protocol as the records do: tcp, udp, icmp, or its
// number.
func ProtoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	}
	return strconv.Itoa(int(p))
}
