// Package daemon assembles extranetd: it opens the state, puts the firewall
// and the peers in place before the WireGuard link comes up (fail closed),
// starts the reconciler and serves the API until told to stop.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/extranetgw/extranet/internal/activity"
	"github.com/extranetgw/extranet/internal/alert"
	"github.com/extranetgw/extranet/internal/cluster"
	"github.com/extranetgw/extranet/internal/conntrack"
	"github.com/extranetgw/extranet/internal/enroll"
	"github.com/extranetgw/extranet/internal/firewall"
	"github.com/extranetgw/extranet/internal/flowlog"
	"github.com/extranetgw/extranet/internal/gwns"
	"github.com/extranetgw/extranet/internal/httpapi"
	"github.com/extranetgw/extranet/internal/metrics"
	"github.com/extranetgw/extranet/internal/policy"
	"github.com/extranetgw/extranet/internal/reconcile"
	"github.com/extranetgw/extranet/internal/refusals"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/syslog"
	"github.com/extranetgw/extranet/internal/version"
	"github.com/extranetgw/extranet/internal/vip"
	"github.com/extranetgw/extranet/internal/wgdev"
	"github.com/extranetgw/extranet/pkg/api"
)

// ExpireUser is the account the shipped expire timer runs as; the first
// start makes it an expirer where it exists.
const ExpireUser = "extranet-expire"

// File names inside the state directory.
const (
	DBFile  = "extranet.db"
	KeyFile = "gateway.key"
	// AliveFile's time is when the daemon last ran, give or take 10 s.
	AliveFile = "alive"
)

// gcPercent is the daemon's GOGC unless the environment sets one.
const gcPercent = 25

// Run starts the daemon and blocks until ctx ends. hup triggers a full
// reconcile (drift check included).
func Run(ctx context.Context, cfg Config, log *slog.Logger, hup <-chan struct{}) error {
	st, err := cfg.Validate()
	if err != nil {
		return err
	}
	if cfg.PprofListen != "" {
		if err := serveTCP(ctx, "profiler", cfg.PprofListen, pprofHandler(), log); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if err := os.Chmod(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("chmod state directory: %w", err)
	}
	dbPath := filepath.Join(cfg.StateDir, DBFile)
	var cl *cluster.Etcd
	var followFrom int64
	if len(cfg.EtcdEndpoints) > 0 {
		if cl, err = dialEtcd(cfg); err != nil {
			return err
		}
		cl.Log = log
		defer cl.Client.Close()
		if followFrom, err = joinCluster(ctx, cl, dbPath, log); err != nil {
			return err
		}
	}
	db, err := store.Open(dbPath, time.Second)
	if err != nil {
		return err
	}
	defer db.Close()
	// The other gateways' changes are followed from the start, so that the
	// daemon's own first writes are made on the cluster's newest state; the
	// data plane hears of them once it exists (its start reads the copy).
	remote := &sink{failed: make(chan error, 1)}
	var clView *clusterView
	if cl != nil {
		name, err := clusterName(cfg)
		if err != nil {
			return err
		}
		clView = &clusterView{cl: cl, db: db, name: name, endpoints: cfg.EtcdEndpoints}
		db.Replicate(cl)
		followCtx, stopFollow := context.WithCancel(ctx)
		followed := make(chan struct{})
		go func() {
			defer close(followed)
			remote.done(followCluster(followCtx, cl, db, followFrom, remote.apply, log))
		}()
		registered := make(chan struct{})
		go func() {
			defer close(registered)
			gw := api.ClusterGateway{Name: name, Version: version.Version, Started: time.Now().UTC()}
			if st.VIP != nil {
				// Only a gateway that takes turns answers questions.
				gw.Failsafe = cfg.ClusterListen
			}
			cl.Register(followCtx, gw, instanceID(cfg.StateDir))
		}()
		defer func() {
			stopFollow()
			<-followed
			<-registered
		}()
	}
	if err := service.KeepPlan(db, st.Plan, time.Now().UTC()); err != nil {
		return err
	}
	if made, err := service.BootstrapRoles(db, cfg.SocketGroup, ExpireUser, time.Now()); err != nil {
		return fmt.Errorf("first role assignments: %w", err)
	} else if len(made) > 0 {
		log.Info("first role assignments made; `extranetctl role list` shows them", "assignments", made)
	}
	key, err := wgdev.LoadOrCreateKey(filepath.Join(cfg.StateDir, KeyFile))
	if err != nil {
		return fmt.Errorf("gateway key: %w", err)
	}
	if cl != nil {
		if err := cl.CheckGatewayKey(ctx, key.PublicKey().String()); errors.Is(err, cluster.ErrOtherKey) {
			return fmt.Errorf("%w: copy %s from a gateway of the cluster (mode 0600) and start again", err, filepath.Join(cfg.StateDir, KeyFile))
		} else if err != nil {
			// etcd is gone: without it this gateway cannot become the
			// active either, and its candidacy checks the key first.
			log.Warn("cannot check the gateway key against the cluster's", "err", err)
		}
	}

	// Before anything of ours switches forwarding on: whether the host
	// forwarded on its own decides whether it may forward anything but
	// partner traffic now.
	forwarded, err := gwns.HostForwarded(gwns.ForwardingRecord(cfg.NetNS))
	if err != nil {
		return err
	}

	// Everything that decides partner access lives in a namespace of its
	// own, which no host firewall tool touches.
	ns, created, err := gwns.Open(cfg.NetNS)
	if err != nil {
		return err
	}
	defer ns.Close()
	// A namespace that holds anything but what we put there is someone
	// else's: adopting it would replace its firewall.
	if foreign, err := ns.Foreign(cfg.Interface, st.Link.NSVeth); err != nil {
		return err
	} else if len(foreign) > 0 {
		return fmt.Errorf("network namespace %s holds interfaces extranetd did not make (%s): it is not the gateway's; choose another --netns", cfg.NetNS, strings.Join(foreign, ", "))
	}
	log.Info("gateway network namespace", "netns", cfg.NetNS, "created", created)
	fw, err := firewall.New(firewall.Options{
		Interface: cfg.Interface, Uplink: st.Link.NSVeth, HostVeth: st.Link.HostVeth,
		NS: ns, Logger: log, Mode: cfg.IPTablesMode,
	})
	if err != nil {
		return err
	}
	dp := &dataplane{Firewall: fw, ns: ns, link: st.Link, log: log}
	var mets *metrics.Metrics
	var observe func(time.Duration, error, int)
	var onExpire func([]api.ExpireAction)
	if cfg.MetricsListen != "" {
		mets = metrics.New(db, service.OnlineWindow)
		observe, onExpire = mets.Reconciled, mets.Expired
		if cl != nil {
			mets.Cluster(func() bool {
				state, _ := cl.Following()
				return state == "ok"
			}, func() int64 {
				f, _ := db.Fence()
				return f
			})
		}
	}
	// Flows and refusals are named after the peer that held the address,
	// read from the store again after each change. Refusals are read
	// whether or not the activity log is on: a scan is acted on either
	// way, and recorded only when it is. The flows the sweep kills are
	// told apart in the activity log, and the scan watch hears of them: a
	// partner that tries again what was killed is not scanning.
	peers := flowlog.NewStoreDirectory(db)
	denied := newRefusalLog(ns.Do, refusals.Options{Directory: peers, Scan: st.Scan}, mets, log)
	kills := &flowlog.Kills{}
	sweeper := conntrack.Kernel{NL: ns.Netlink(), Killed: func(proto uint8, src, dst netip.Addr, sport, dport uint16) {
		kills.Killed(proto, src, dst, sport, dport)
		denied.killed(proto, src, dst, dport)
	}}
	// Where gateways take turns, the link and the address partners dial
	// follow the role (docs/cluster.md); a gateway starts standby.
	var roles *reconcile.Roles
	if st.VIP != nil {
		// A standby removes the address, and its routes from the table:
		// neither may be another's.
		if err := st.VIP.CheckTable(); err != nil {
			return err
		}
		if foreign, err := st.VIP.Foreign(); err != nil {
			return fmt.Errorf("--vip-interface %s: %w", st.VIP.Interface, err)
		} else if foreign {
			return fmt.Errorf("--vip %s is already an address of %s that extranetd did not add: give an address of its own, which no other configuration sets", st.VIP.Prefix, st.VIP.Interface)
		}
		st.VIP.Log = log
		roles = &reconcile.Roles{Address: st.VIP}
	}
	rec := reconcile.New(reconcile.Options{
		DB: db, Firewall: dp, Sweeper: sweeper,
		Host: hostFacts(st.Link, cfg.EgressInterfaces, forwarded, shared(st.VIP)),
		Plan: st.Plan, Interface: cfg.Interface, Masquerade: cfg.Masquerade,
		Clock: service.SystemClock{}, Logger: log,
		Interval: cfg.ReconcileInterval, StatsInterval: cfg.StatsInterval,
		Observe:   observe,
		AliveFile: filepath.Join(cfg.StateDir, AliveFile),
		Roles:     roles,
	})
	remote.set(rec)
	began := time.Now()
	// Watching the host's addresses starts before the first reconcile
	// reads them, so that none gained in between is missed.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go watchHost(watchCtx, rec, log)
	// The interface is made with its link down; it comes up only once the
	// firewall's default deny and the peers are in place.
	dev, err := wgdev.Open(wgdev.Config{
		Name: cfg.Interface, Mode: wgdev.Mode(cfg.WireGuard), PrivateKey: key,
		ListenPort: cfg.ListenPort, Address: st.Plan.Gateway(), MTU: cfg.MTU, Logger: log,
		NS: ns,
	})
	if err != nil {
		return fmt.Errorf("wireguard interface %s: %w", cfg.Interface, err)
	}
	defer dev.Close()
	rec.SetDevice(dev)
	if roles != nil {
		// A kernel interface this gateway left up as the active, or the
		// address it held, answers partners until now: no more, until
		// etcd makes it the active again.
		roles.Link = dev
		roles.Forget = func() error {
			_, errNS := sweeper.Forget(st.Plan.Network, 0, netip.Addr{})
			_, errHost := conntrack.Kernel{}.Forget(st.Plan.Network, uint16(cfg.ListenPort), st.VIP.Prefix.Addr())
			return errors.Join(errNS, errHost)
		}
		if err := rec.Demote(); err != nil {
			return fmt.Errorf("start as a standby: %w", err)
		}
	}
	if err := rec.Start(); err != nil {
		return err
	}
	// Why the activity log is off; a failure of the log never keeps the
	// gateway from running (its firewall stands either way).
	activityOff := ""
	if !cfg.ActivityLog {
		activityOff = "activity-log: false"
	} else if err := ns.Do(flowlog.EnableAccounting); err != nil {
		// Before the first partner flow, so that every flow is counted
		// and timed from its start.
		activityOff = err.Error()
		log.Error("activity: partner connections are not recorded", "err", err)
	}
	// The first apply put the namespace's rules in place and only then
	// joined it to the host; now the link comes up, or, where gateways
	// take turns, once this one is the active.
	if roles == nil {
		if err := dev.Up(); err != nil {
			return fmt.Errorf("wireguard interface %s: %w", cfg.Interface, err)
		}
	}
	if os.Getenv("GOGC") == "" {
		// The heap is now mostly long-lived peer state (with 10,000 peers,
		// wireguard-go's per-peer queues), so Go's default of letting it
		// double before collecting would add hundreds of MB of resident
		// garbage for nothing. Little garbage is made from here on, so the
		// extra collections cost little CPU. Not before: while that state
		// is built, frequent collections slowed the start by a third.
		// GOGC, when set, wins (docs/performance.md).
		debug.SetGCPercent(gcPercent)
	}
	if st := rec.State(); st.LastError != "" {
		// Keep running: the firewall is closed, and the next reconcile may
		// succeed. An admin sees the error in status and the log.
		log.Error("first reconcile failed", "err", st.LastError)
	}
	info := dev.Info()
	log.Info("wireguard up", "took", time.Since(began).Round(time.Millisecond), "interface", info.Name, "mode", info.Mode, "public_key", info.PublicKey.String(), "listen_port", info.ListenPort)

	var (
		applier service.Applier = rec
		acts    service.ActivityReader
		flows   *flowlog.Listener
		actLog  *activity.Log
		ship    *syslog.Sender
	)
	var act *activity.Log
	if activityOff == "" {
		var openErr error
		if act, openErr = activity.Open(filepath.Join(cfg.StateDir, "activity"), activity.Options{Retention: st.ActivityRetention}); openErr != nil {
			activityOff = openErr.Error()
			log.Error("activity: partner connections are not recorded", "err", openErr)
		}
	}
	var record func(api.Flow) error
	if act != nil {
		defer act.Close()
		actLog = act
		// A read sees the refusals added up so far, not only those of
		// the last flush: an admin who just saw a partner refused finds
		// it at once.
		acts = freshActivity{ActivityReader: act, flush: func() { denied.flush(time.Now()) }}
		if st.Syslog != nil {
			o := *st.Syslog
			o.Logger = log
			ship = syslog.New(o)
			// Records queued for syslog get a moment to leave at a stop:
			// a receiver that is away costs the stop no more than that.
			defer ship.Close(2 * time.Second)
		}
		record = func(f api.Flow) error {
			if err := act.Append(f); err != nil {
				return err
			}
			if ship != nil {
				sev, id := syslog.Info, "flow"
				if f.End == api.FlowRefused {
					sev, id = syslog.Notice, "refused"
				}
				ship.Send(f.Closed, sev, id, f)
			}
			if mets != nil {
				mets.Flow(f)
			}
			return nil
		}
		flows = flowlog.New(flowlog.Options{
			Tunnel: st.Plan.Network, Do: ns.Do, Directory: peers, Kills: kills,
			Record: record, Interim: cfg.ActivityInterim, OpenFile: filepath.Join(cfg.StateDir, "activity", "open-flows.json"), Logger: log,
		})
		if mets != nil {
			mets.Activity(func() metrics.ActivityCounts {
				st := flows.Stats()
				c := metrics.ActivityCounts{Summarised: st.Summarised, Lost: st.Lost, Failed: st.Failed}
				if ship != nil {
					ss := ship.Stats()
					c.SyslogSent, c.SyslogDropped = ss.Sent, ss.Dropped+ss.Failed
				}
				return c
			})
		}
	}
	denied.record = record // before it runs
	var al *alerts
	if cfg.AlertWebhook != "" {
		o := alert.Options{URL: cfg.AlertWebhook, Secret: st.AlertSecret, Gateway: cfg.Endpoint, Logger: log}
		if mets != nil {
			o.OnSent = mets.AlertSent
		}
		sender, err := alert.New(o)
		if err != nil {
			return err
		}
		al = &alerts{sender: sender, changed: make(chan struct{}, 1), within: time.Duration(cfg.AlertExpiryDays) * 24 * time.Hour, log: log}
		if mets != nil {
			mets.Alerts(sender.Stats)
		}
	}
	denied.alerts = al
	applier = changeNotifier{Applier: rec, changed: func() {
		peers.Changed()
		al.storeChanged()
	}}
	remote.set(applier)
	var alertFn func(api.Alert)
	if al != nil {
		alertFn = al.send
	}
	svc := service.New(service.Options{
		DB: db, Plan: st.Plan, Applier: applier, Activity: acts, ActivityOff: activityFailed(cfg.ActivityLog, activityOff),
		Runtime:  runtime{rec: rec, info: info, netns: cfg.NetNS, veth: cfg.HostVeth, flows: flows, acts: actLog, syslog: ship, activityOff: activityOff, refusals: denied, alerts: al, cluster: clView},
		Alert:    alertFn,
		Endpoint: cfg.Endpoint, DNS: cfg.ClientDNS, MTU: cfg.MTU, ApplyTimeout: cfg.ApplyTimeout,
		GatewayPublicKey: info.PublicKey.String(), MaxPeerLifetime: st.MaxPeerLifetime,
		Expire:    service.ExpireDefaults{Idle: st.ExpireIdle, Unused: st.ExpireUnused, Action: cfg.ExpireAction},
		OnExpire:  onExpire,
		EnrollURL: st.EnrollURL, RequestTTL: cfg.EnrollRequestTTL,
	})
	srv := httpapi.New(svc, log)
	l, err := httpapi.Listen(cfg.Socket, cfg.SocketGroup, log)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.Socket)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	recDone := make(chan struct{})
	go func() {
		defer close(recDone)
		rec.Run(runCtx, hup)
	}()
	flowsDone := make(chan struct{})
	go func() {
		defer close(flowsDone)
		if flows == nil {
			return
		}
		if err := flows.Run(runCtx); err != nil {
			log.Error("activity: partner connections are not recorded", "err", err)
		}
	}()
	deniedDone := make(chan struct{})
	go func() {
		defer close(deniedDone)
		denied.Run(runCtx)
	}()
	alertsDone := make(chan struct{})
	go func() {
		defer close(alertsDone)
		if al == nil {
			return
		}
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			al.watchExpiry(runCtx, db)
		}()
		al.sender.Run(runCtx)
		<-watched
	}()
	actDone := make(chan struct{})
	go func() {
		defer close(actDone)
		denied.act(runCtx, svc)
	}()
	if mets != nil {
		health := func() error { return healthy(rec.State(), cfg.ReconcileInterval) }
		if err := serveTCP(runCtx, "metrics", cfg.MetricsListen, mets.Handler(health), log); err != nil {
			return err
		}
	}
	if st.AuditRetention > 0 {
		go trimAudit(runCtx, svc, st.AuditRetention, log)
	}
	if cfg.EnrollListen != "" {
		if err := serveEnroll(runCtx, cfg, enroll.New(enroll.Options{Service: svc, Logger: log, TrustedProxies: st.EnrollProxies}), log); err != nil {
			return err
		}
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()

	// The candidacy ends after the last poll of the stop below, which
	// records where partners were while this gateway still answers them.
	candCtx, stopCandidacy := context.WithCancel(context.Background())
	defer stopCandidacy()
	candDone := make(chan struct{})
	close(candDone)
	if roles != nil {
		candDone = make(chan struct{})
		cand := &cluster.Candidate{
			Etcd: cl, Name: clView.name, TTL: cfg.RoleTTL, Log: log,
			Promote: rec.Promote,
			Eligible: func(ctx context.Context) error {
				return cl.CheckGatewayKey(ctx, key.PublicKey().String())
			},
			Serving: func() error {
				if on, _ := rec.Serving(); !on {
					return errors.New("its data plane did not open")
				}
				return st.VIP.Check()
			},
			Demote: func(reason string) {
				if err := rec.Demote(); err != nil {
					log.Error("step down: the link or the address may still answer partners", "reason", reason, "err", err)
				}
			},
		}
		clView.cand = cand
		// The failsafe's key is the gateway key's: the other gateways
		// hold it, and nobody else.
		cand.Failsafe = &cluster.Failsafe{Secret: cluster.FailsafeSecret(key[:]), Addr: cfg.ClusterListen}
		if err := serveFailsafe(candCtx, cfg.ClusterListen, cand.FailsafeHandler(), log); err != nil {
			return err
		}
		if mets != nil {
			mets.Role(func() (bool, int64) { return rec.Serving() }, cand.Promotions)
		}
		go func() {
			defer close(candDone)
			cand.Run(candCtx)
		}()
	}

	notifyReady(log)
	go watchdog(runCtx, func() time.Time { return rec.State().LastRun }, 3*cfg.ReconcileInterval, log)
	log.Info("extranetd ready", "took", time.Since(began).Round(time.Millisecond), "socket", cfg.Socket, "version", version.Version)

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("api server: %w", err)
	case err = <-remote.failed:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	stop()
	<-recDone
	<-flowsDone
	<-deniedDone
	<-actDone
	<-alertsDone
	// Handshakes seen since the last poll would be lost with the process
	// (with userspace WireGuard, with the device too). In a cluster, not
	// at the price of a stop that hangs on an etcd that is gone.
	if cl != nil {
		cl.SetCommitTimeout(time.Second)
	}
	if err := rec.PollStats(); err != nil {
		log.Warn("last poll of peer statistics", "err", err)
	}
	// Step down, and let another gateway take over at once.
	stopCandidacy()
	<-candDone
	log.Info("extranetd stopped; firewall rules stay in place")
	return err
}

// activityFailed is why the activity log is off although the config has it
// on; "" otherwise.
func activityFailed(on bool, off string) string {
	if !on {
		return ""
	}
	return off
}

// freshActivity writes the refusals added up before each read.
type freshActivity struct {
	service.ActivityReader
	flush func()
}

func (f freshActivity) Read(q activity.Query) ([]api.Flow, error) {
	f.flush()
	return f.ActivityReader.Read(q)
}

func (f freshActivity) Each(q activity.Query, fn func(api.Flow)) error {
	f.flush()
	return f.ActivityReader.Each(q, fn)
}

// changeNotifier tells the directory of peers that names flows and
// refusals that the store changed, then hands the change to the data plane.
type changeNotifier struct {
	service.Applier
	changed func()
}

func (c changeNotifier) Apply(ch store.Changes) <-chan error {
	c.changed()
	return c.Applier.Apply(ch)
}

// runtime answers `status` from the device and the reconciler.
type runtime struct {
	rec         *reconcile.Reconciler
	info        wgdev.Info
	netns, veth string
	// flows and acts are nil while the activity log is off, and
	// activityOff says why.
	flows       *flowlog.Listener
	acts        *activity.Log
	syslog      *syslog.Sender // nil unless records also go to syslog
	activityOff string
	refusals    *refusalLog
	alerts      *alerts      // nil without a webhook
	cluster     *clusterView // nil when the state is this gateway's own
}

func (r runtime) PollStats() error { return r.rec.PollStats() }

func (r runtime) Switchover(ctx context.Context) (api.Switchover, error) {
	return r.cluster.switchover(ctx)
}

func (r runtime) Status(all bool) api.Status {
	st := r.rec.State()
	out := api.Status{
		Version:    version.Version,
		Interface:  r.info.Name,
		Mode:       string(r.info.Mode),
		NetNS:      r.netns,
		HostVeth:   r.veth,
		ListenPort: r.info.ListenPort,
		Firewall:   "in sync",
	}
	if !st.LastRun.IsZero() {
		t := st.LastRun
		out.LastReconcile = &t
	}
	out.ReconcileResult = "ok"
	if st.LastError != "" {
		out.ReconcileResult = "error: " + st.LastError
	}
	if !st.LastRepair.IsZero() {
		t := st.LastRepair
		out.LastRepair = &t
		out.Firewall = fmt.Sprintf("in sync (repaired at %s: %v)", t.Format(time.RFC3339), st.Repairs)
	}
	out.EndedWhileDown = st.EndedWhileDown
	if !st.DownSince.IsZero() {
		t := st.DownSince
		out.DownSince = &t
	}
	switch {
	case r.flows != nil && r.acts != nil:
		fs, ls := r.flows.Stats(), r.acts.Stats()
		a := &api.ActivityStatus{Recorded: fs.Recorded, Summarised: fs.Summarised, Lost: fs.Lost, Failed: fs.Failed, LastError: ls.LastError}
		if fs.LastError != "" {
			a.LastError = fs.LastError
		}
		if r.syslog != nil {
			ss := r.syslog.Stats()
			a.Syslog = &api.SyslogStatus{Target: r.syslog.Target(), Sent: ss.Sent, Dropped: ss.Dropped, Failed: ss.Failed, LastError: ss.LastError}
		}
		out.Activity = a
	case r.activityOff != "":
		out.Activity = &api.ActivityStatus{Off: r.activityOff}
	}
	out.Refusals = r.refusals.Status()
	if r.alerts != nil {
		st := r.alerts.sender.Stats()
		out.Alerts = &st
	}
	// Asking etcd takes up to a second while it is gone; only a caller
	// who may see the answer waits for it.
	if r.cluster != nil && all {
		out.Cluster = r.cluster.status()
	}
	return out
}

// healthy is true while reconciles succeed and keep coming.
func healthy(st reconcile.State, interval time.Duration) error {
	switch {
	case st.LastRun.IsZero():
		return errors.New("not reconciled yet")
	case st.LastError != "":
		return errors.New("last reconcile failed: " + st.LastError)
	case time.Since(st.LastRun) > 3*interval:
		return fmt.Errorf("no reconcile for %s", time.Since(st.LastRun).Round(time.Second))
	}
	return nil
}

// trimAudit applies audit retention at start and then hourly.
func trimAudit(ctx context.Context, svc *service.Service, retention time.Duration, log *slog.Logger) {
	ctx = service.WithActor(ctx, service.DaemonActor)
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := svc.TrimAudit(ctx, retention); err != nil {
			log.Error("trim audit log", "err", err)
		} else if n > 0 {
			log.Info("trimmed audit log", "removed", n, "retention", retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dataplane is the firewall with the namespace's link to the host: the
// periodic drift check finds both, and an apply repairs both, rules first.
type dataplane struct {
	*firewall.Firewall
	ns   *gwns.NS
	link gwns.Link
	log  *slog.Logger
}

// Apply puts the rules in place, then joins the namespace to the host (or
// puts back what is missing of that): never the other way round, so a
// namespace is never reachable without its rules.
func (d *dataplane) Apply(p *policy.Policy) error {
	if err := d.Firewall.Apply(p); err != nil {
		return err
	}
	fixed, err := d.ns.Plumb(d.link)
	if err != nil {
		return fmt.Errorf("join network namespace %s to the host: %w", d.ns.Name(), err)
	}
	if len(fixed) > 0 {
		d.log.Info("gateway namespace joined to the host", "netns", d.ns.Name(), "set", fixed)
	}
	return nil
}

// Check reports the firewall's drift and what is missing of the link; the
// reconciler then applies, which repairs both.
func (d *dataplane) Check() ([]string, error) {
	drift, fwErr := d.Firewall.Check()
	missing, err := d.ns.CheckPlumbing(d.link)
	return append(drift, missing...), errors.Join(fwErr, err)
}

// hostFacts tells the reconciler what the host receives itself (the veth's
// address among it even before the veth exists) and where partner traffic
// may leave it.
func hostFacts(link gwns.Link, egress []string, forwarded bool, sh *policy.SharedAddress) func([]netip.Prefix) (policy.Host, error) {
	veth, _, _ := link.Addrs()
	return func(granted []netip.Prefix) (policy.Host, error) {
		local, err := gwns.HostLocal()
		if err != nil {
			return policy.Host{}, err
		}
		if v := netip.PrefixFrom(veth, 32); !slices.Contains(local, v) {
			local = append(local, v)
		}
		// The host's whenever this gateway is the active: kept from
		// partners before it holds it.
		if sh != nil {
			if v := netip.PrefixFrom(sh.Addr, 32); !slices.Contains(local, v) {
				local = append(local, v)
			}
		}
		out, err := gwns.Egress(granted, egress, link.HostVeth)
		if err != nil {
			return policy.Host{}, err
		}
		return policy.Host{Local: local, Egress: out, Forwarded: forwarded, Shared: sh}, nil
	}
}

// watchHost re-reconciles whenever an IPv4 address or route of the host
// comes or goes, so that a partner never reaches an address or local range
// the host just gained, and partner traffic follows the routes toward its
// grants to their interfaces. A subscription that breaks (its buffer
// overrun in a burst of changes, say) is made again, with a full reconcile
// for what it may have missed; the periodic reconcile reads both too.
func watchHost(ctx context.Context, rec *reconcile.Reconciler, log *slog.Logger) {
	for ctx.Err() == nil {
		subCtx, cancel := context.WithCancel(ctx)
		addrs := make(chan netlink.AddrUpdate, 256)
		routes := make(chan netlink.RouteUpdate, 256)
		onErr := func(err error) {
			if ctx.Err() == nil {
				log.Warn("watching the host's addresses and routes", "err", err)
			}
			cancel()
		}
		err := errors.Join(
			netlink.AddrSubscribeWithOptions(addrs, subCtx.Done(), netlink.AddrSubscribeOptions{ReceiveBufferSize: 1 << 20, ErrorCallback: onErr}),
			netlink.RouteSubscribeWithOptions(routes, subCtx.Done(), netlink.RouteSubscribeOptions{ReceiveBufferSize: 1 << 20, ErrorCallback: onErr, ListExisting: false}),
		)
		if err != nil {
			log.Warn("cannot watch the host's addresses and routes; the periodic reconcile picks up changes", "err", err)
		} else {
			rec.Apply(store.Changes{Orgs: true})
			// Partners get IPv4 only; IPv6 addresses and routes come and
			// go (router advertisements) without mattering here. Many
			// updates at once make one run: Apply coalesces.
			for open := true; open; {
				select {
				case u, ok := <-addrs:
					open = ok
					if ok && u.LinkAddress.IP.To4() != nil {
						rec.Apply(store.Changes{Orgs: true})
					}
				case u, ok := <-routes:
					open = ok
					if ok && u.Family == netlink.FAMILY_V4 {
						rec.Apply(store.Changes{Orgs: true})
					}
				}
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// notifyReady tells systemd (Type=notify) that the first reconcile is done.
func notifyReady(log *slog.Logger) {
	if err := notify("READY=1"); err != nil {
		log.Warn("notify systemd", "err", err)
	}
}

// notify sends systemd a state line (sd_notify); outside systemd, nothing.
func notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}

// watchdog feeds systemd's watchdog (WatchdogSec=) while the reconcile loop
// runs: lastRun, when the latest run began, is never older than stale. A
// daemon that hangs (a lock never let go, a stuck call) stops feeding it,
// and systemd restarts it (a restart keeps the link and the rules, as after
// kill -9), rather than leave revocations, dates and drift unenforced for
// good. A loop whose runs fail still runs, and is not restarted for that.
func watchdog(ctx context.Context, lastRun func() time.Time, stale time.Duration, log *slog.Logger) {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return
	}
	every := time.Duration(usec) * time.Microsecond / 2
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if age := time.Since(lastRun()); age > stale {
				log.Error("the reconcile loop is stuck; systemd's watchdog will restart extranetd", "last_run_ago", age.Round(time.Second))
				continue
			}
			if err := notify("WATCHDOG=1"); err != nil {
				log.Warn("feed systemd's watchdog", "err", err)
			}
		}
	}
}

// Cleanup removes what extranetd made: the gateway namespace (and with it
// the interface, the rules and the sets inside), the veth pair, and the
// host rules of ours. The state directory stays.
func Cleanup(cfg Config, log *slog.Logger) error {
	st, err := cfg.Validate()
	if err != nil {
		return err
	}
	var errs []error
	// An interface an earlier release left in the host goes before the
	// rules that guard it.
	if link, err := netlink.LinkByName(cfg.Interface); err == nil && link.Type() == "wireguard" {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete %s in the host namespace: %w", cfg.Interface, err))
		}
	}
	if ns, err := gwns.OpenExisting(cfg.NetNS); err != nil {
		errs = append(errs, err)
	} else if ns != nil {
		// A kernel interface goes with the namespace; the UAPI socket of
		// a userspace one is a file. The veth would go with it too, but
		// only once the kernel gets round to it.
		errs = append(errs, wgdev.Remove(ns, cfg.Interface))
		if ns.OwnsVeth(st.Link.HostVeth) {
			if link, err := netlink.LinkByName(st.Link.HostVeth); err == nil {
				if err := netlink.LinkDel(link); err != nil {
					errs = append(errs, fmt.Errorf("delete %s: %w", st.Link.HostVeth, err))
				}
			}
		}
		ns.Close()
	}
	errs = append(errs, gwns.Delete(cfg.NetNS), firewall.CleanupHost(cfg.IPTablesMode))
	// Forwarding goes back as the host had it, once nothing of ours is
	// left that needs it.
	if err := errors.Join(errs...); err != nil {
		return err
	}
	restored, err := gwns.RestoreHostForwarding(gwns.ForwardingRecord(cfg.NetNS))
	if err != nil {
		return err
	}
	log.Info("removed", "netns", cfg.NetNS, "host_veth", st.Link.HostVeth, "restored", restored)
	return nil
}

// shared is the address that moves with the active role, as the firewall
// needs it; nil where gateways do not take turns.
func shared(a *vip.Address) *policy.SharedAddress {
	if a == nil {
		return nil
	}
	return &policy.SharedAddress{Addr: a.Prefix.Addr(), Interface: a.Interface}
}
