package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/extranetgw/extranet/internal/firewall"
	"github.com/extranetgw/extranet/internal/metrics"
	"github.com/extranetgw/extranet/internal/nflog"
	"github.com/extranetgw/extranet/internal/refusals"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/pkg/api"
)

// refusalLog reads what the firewall refused partners (the deny chains'
// NFLOG) into the activity log, and acts on scans.
type refusalLog struct {
	do   func(func() error) error
	scan refusals.ScanOptions
	log  *slog.Logger
	// record writes the records taken; nil while the activity log is off.
	// Set before Run.
	record func(api.Flow) error

	mu  sync.Mutex
	rec *refusals.Recorder
	// flushing keeps flushes in turn: the firewall's counts must reach
	// the recorder in the order they were read.
	flushing sync.Mutex

	// scans hands what the recorder found to act, which may wait for a
	// reconcile; a full queue drops (and logs) the report rather than
	// stall the reading.
	scans   chan refusals.Scan
	mets    *metrics.Metrics // nil without metrics
	alerts  *alerts          // nil without a webhook; set before Run
	lost    atomic.Uint64
	failed  atomic.Uint64
	lastErr atomic.Value // string
}

// nflogBuffer is the log socket's receive buffer: NFLOG with 4 MiB was
// lossless at ~140,000 packets/s (issue #26), far above what the rules'
// rate limit lets through.
const nflogBuffer = 4 << 20

func newRefusalLog(do func(func() error) error, dir refusals.Options, mets *metrics.Metrics, log *slog.Logger) *refusalLog {
	r := &refusalLog{do: do, scan: dir.Scan, log: log, mets: mets, scans: make(chan refusals.Scan, 64)}
	dir.OnScan = func(s refusals.Scan) {
		select {
		case r.scans <- s:
		default:
			log.Error("scan: a report was dropped, the queue is full", "peer", s.Peer, "address", s.Address, "distinct_refused", s.Distinct)
		}
	}
	r.rec = refusals.New(dir)
	return r
}

// Run reads until ctx ends, making the socket again after a failure.
func (r *refusalLog) Run(ctx context.Context) {
	// Where the firewall's counts of what the log left out start.
	r.flushing.Lock()
	r.count(time.Now())
	r.flushing.Unlock()
	tick := time.NewTicker(refusals.FlushEvery)
	defer tick.Stop()
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				r.flush(now)
			}
		}
	}()
	defer func() {
		<-flushed
		r.flush(time.Now())
	}()
	for backoff := 100 * time.Millisecond; ; {
		began := time.Now()
		err := r.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		r.lost.Add(1)
		r.lastErr.Store(err.Error())
		r.log.Warn("refusals: the firewall's log socket failed; making it again", "err", err)
		if time.Since(began) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// flush writes the records added up, outside the lock the reader needs:
// a slow disk must not make the socket overflow.
func (r *refusalLog) flush(now time.Time) {
	r.flushing.Lock()
	defer r.flushing.Unlock()
	r.count(now)
	r.mu.Lock()
	recs := r.rec.Take(now)
	r.mu.Unlock()
	if r.record == nil {
		return
	}
	for _, f := range recs {
		if err := r.record(f); err != nil {
			if r.failed.Add(1) == 1 {
				r.log.Error("refusals: a record could not be written", "err", err)
			}
		}
	}
}

// count hands the recorder the firewall's counts of every refused
// packet. One that cannot be read is taken at the next
// flush: they only grow. The caller holds flushing, so that counts reach
// the recorder in the order they were read.
func (r *refusalLog) count(now time.Time) {
	var counts map[firewall.Attempts]uint64
	if err := r.do(func() error {
		var err error
		counts, err = firewall.ReadAttempts()
		return err
	}); err != nil {
		r.log.Warn("refusals: the firewall's counts of refused packets cannot be read", "err", err)
		return
	}
	r.mu.Lock()
	r.rec.Attempts(counts, now)
	r.mu.Unlock()
}

// killed tells the recorder the sweep killed a flow (see
// refusals.Recorder.Killed).
func (r *refusalLog) killed(proto uint8, src, dst netip.Addr, dport uint16) {
	r.mu.Lock()
	r.rec.Killed(proto, src, dst, dport, time.Now())
	r.mu.Unlock()
}

func (r *refusalLog) listen(ctx context.Context) error {
	var rd *nflog.Reader
	if err := r.do(func() error {
		var err error
		rd, err = nflog.Open(firewall.NFLOGGroup, firewall.NFLOGSize, nflogBuffer)
		return err
	}); err != nil {
		return err
	}
	return rd.Listen(ctx, func(p nflog.Packet) {
		now := time.Now()
		r.mu.Lock()
		r.rec.Refused(p.Prefix, p.Proto, p.Src, p.Dst, p.DPort, p.Opening, now)
		r.mu.Unlock()
	}, func() {
		r.lost.Add(1)
		r.lastErr.Store(nflog.ErrLost.Error())
	})
}

// act carries out the scans reported, until ctx ends.
func (r *refusalLog) act(ctx context.Context, svc *service.Service) {
	for {
		var s refusals.Scan
		select {
		case <-ctx.Done():
			return
		case s = <-r.scans:
		}
		args := []any{"peer", s.Peer, "address", s.Address, "distinct_refused", s.Distinct, "window", s.Window, "sample", s.Sample}
		if s.Suspend {
			r.log.Warn("scan: suspending a partner that scans", args...)
		} else {
			r.log.Warn("scan: a partner is scanning", args...)
		}
		if r.mets != nil {
			r.mets.Scan(s.Suspend)
		}
		if s.Peer == "" {
			// An address no peer holds: nobody to suspend.
			r.alerts.send(scanAlert(s, false, nil))
			continue
		}
		ev := service.ScanEvidence{Address: s.Address.String(), Distinct: s.Distinct, Window: s.Window.String(), Sample: s.Sample}
		suspended, err := svc.Scanned(ctx, s.Org, s.Name, ev, s.Suspend)
		var failed error
		if err != nil {
			r.log.Error("scan: acting on a scan", append(args, "err", err)...)
			if s.Suspend && !suspended {
				failed = err
			}
		}
		r.alerts.send(scanAlert(s, suspended, failed))
	}
}

// Status is the refusals' account for `extranetctl status`.
func (r *refusalLog) Status() *api.RefusalStatus {
	r.mu.Lock()
	st := &api.RefusalStatus{Refused: r.rec.Seen, RateLimited: r.rec.RateLimited, Warnings: r.rec.Warned, Suspensions: r.rec.Scans}
	r.mu.Unlock()
	if r.scan.Mode != refusals.ScanSuspend {
		// Scans at the suspension threshold were only reported.
		st.Warnings, st.Suspensions = st.Warnings+st.Suspensions, 0
	}
	st.Lost = r.lost.Load()
	st.LastError, _ = r.lastErr.Load().(string)
	switch r.scan.Mode {
	case refusals.ScanOff:
		st.Scan = "off"
	case refusals.ScanObserve:
		st.Scan = fmt.Sprintf("observe: warn at %d and at %d distinct refused destinations a minute, suspend nobody", r.scan.WarnAt, r.scan.SuspendAt)
	default:
		st.Scan = fmt.Sprintf("suspend at %d distinct refused destinations a minute, warn at %d", r.scan.SuspendAt, r.scan.WarnAt)
	}
	return st
}
