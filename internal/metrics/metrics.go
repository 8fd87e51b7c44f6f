// Package metrics exposes the gateway to Prometheus and to load balancers:
// gauges read from the store at scrape time (so they are never stale and
// cost nothing between scrapes), counters fed by the reconciler and by
// expire, and a health endpoint.
package metrics

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// Metrics holds the counters other packages feed.
type Metrics struct {
	reg              *prometheus.Registry
	reconcileSeconds prometheus.Histogram
	reconcileErrors  prometheus.Counter
	repairs          prometheus.Counter
	expiry           *prometheus.CounterVec
	flows            *prometheus.CounterVec
	flowBytes        *prometheus.CounterVec
	scans            *prometheus.CounterVec
	alertsSent       *prometheus.CounterVec
}

// New registers every metric. db is read at scrape time; onlineWindow says
// how recent a handshake makes a peer online.
func New(db *store.DB, onlineWindow time.Duration) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "extranet_reconcile_duration_seconds",
			Help:    "Time one reconcile of the kernel to the store took.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "extranet_reconcile_errors_total",
			Help: "Reconciles that failed.",
		}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "extranet_drift_repairs_total",
			Help: "Differences between the kernel and the store that were repaired (rules, sets, peers changed by hand).",
		}),
		expiry: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extranet_expiry_actions_total",
			Help: "Peers and organisations retired by expire, by resulting state.",
		}, []string{"to"}),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extranet_activity_flows_total",
			Help: "Partner connections recorded in the activity log, by organisation and how they ended (a summary record counts the flows it adds up; end=refused counts the attempts the firewall refused, as logged).",
		}, []string{"org", "end"}),
		flowBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extranet_activity_bytes_total",
			Help: "Bytes of the partner connections recorded, by organisation and direction (out: sent by the partner).",
		}, []string{"org", "direction"}),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extranet_scans_total",
			Help: "Partners found scanning (refused at many distinct destinations within a minute), by what was done: warned or suspended.",
		}, []string{"action"}),
		alertsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extranet_alerts_sent_total",
			Help: "Alerts the webhook took, by kind.",
		}, []string{"kind"}),
	}
	for _, k := range api.AlertKinds {
		m.alertsSent.WithLabelValues(k)
	}
	// Every state expire retires to is shown from the start, at 0: a
	// series that appears only with its first action is invisible to
	// dashboards and to alerts on its rate until then.
	for _, to := range []string{api.StateSuspended, api.StateRevoked, api.StateExpired} {
		m.expiry.WithLabelValues(to)
	}
	for _, a := range []string{"warned", "suspended"} {
		m.scans.WithLabelValues(a)
	}
	m.reg.MustRegister(m.reconcileSeconds, m.reconcileErrors, m.repairs, m.expiry, m.flows, m.flowBytes, m.scans, m.alertsSent,
		&storeCollector{db: db, online: onlineWindow},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Reconciled records one reconcile.
func (m *Metrics) Reconciled(took time.Duration, err error, repairs int) {
	m.reconcileSeconds.Observe(took.Seconds())
	if err != nil {
		m.reconcileErrors.Inc()
	}
	m.repairs.Add(float64(repairs))
}

// Flow counts one record of the activity log.
func (m *Metrics) Flow(f api.Flow) {
	n := float64(1)
	switch f.End {
	case api.FlowSummarised, api.FlowRefused:
		n = float64(f.Flows)
	case api.FlowOpen:
		// Its flow is counted when it ends; its bytes now.
		n = 0
	}
	if n > 0 {
		m.flows.WithLabelValues(f.Org, f.End).Add(n)
	}
	m.flowBytes.WithLabelValues(f.Org, "out").Add(float64(f.BytesOut))
	m.flowBytes.WithLabelValues(f.Org, "in").Add(float64(f.BytesIn))
}

// Scan counts a partner found scanning.
func (m *Metrics) Scan(suspend bool) {
	a := "warned"
	if suspend {
		a = "suspended"
	}
	m.scans.WithLabelValues(a).Inc()
}

// AlertSent counts an alert delivered.
func (m *Metrics) AlertSent(kind string) {
	m.alertsSent.WithLabelValues(kind).Inc()
}

// Alerts serves the webhook's failures and drops, read at scrape time.
// Call it once.
func (m *Metrics) Alerts(stats func() api.AlertStatus) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "extranet_alert_failures_total", Help: "Failed attempts to deliver an alert to the webhook (each retried)."},
			func() float64 { return float64(stats().Failures) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "extranet_alerts_dropped_total", Help: "Alerts given up on: the queue was full, or the webhook did not take them for a day."},
			func() float64 { return float64(stats().Dropped) }))
}

// Cluster serves how this gateway's copy of a cluster's state stands
// (docs/cluster.md), read at scrape time: whether it follows the cluster's
// changes, and the version it holds, the same on every gateway once they
// caught up. Call it once, on a cluster gateway.
func (m *Metrics) Cluster(following func() bool, revision func() int64) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "extranet_cluster_following", Help: "1 while this gateway's copy of the cluster's state follows its changes in etcd, 0 while it does not (etcd gone, or not yet)."},
			func() float64 {
				if following() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "extranet_cluster_copy_revision", Help: "The version of the cluster's state this gateway's copy holds."},
			func() float64 { return float64(revision()) }))
}

// Role serves, where a cluster's gateways take turns answering partners,
// whether this one does now and under which epoch, and how often it took
// the role. Call it once.
func (m *Metrics) Role(serving func() (bool, int64), promotions func() int) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "extranet_cluster_active", Help: "1 while this gateway is the cluster's active, answering partners; 0 while it is a standby."},
			func() float64 {
				if on, _ := serving(); on {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "extranet_cluster_epoch", Help: "The promotion this gateway answers partners under; 0 while it is a standby."},
			func() float64 {
				_, epoch := serving()
				return float64(epoch)
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "extranet_cluster_promotions_total", Help: "Times this gateway became the cluster's active since it started."},
			func() float64 { return float64(promotions()) }))
}

// ActivityCounts are the activity log's own counts.
type ActivityCounts struct {
	Summarised, Lost, Failed uint64
	// SyslogSent and SyslogDropped (dropped or failed) count the records
	// also sent to syslog; zero when that is off.
	SyslogSent, SyslogDropped uint64
}

// Activity serves what the activity log missed, or added up, read from
// counts at scrape time: an alert on lost records needs a series from the
// start. Call it once.
func (m *Metrics) Activity(counts func() ActivityCounts) {
	for _, c := range []struct {
		name, help string
		get        func(ActivityCounts) uint64
	}{
		{"extranet_activity_lost_total", "Times the kernel's stream of ended connections failed (an overflow), each losing the records of what ended meanwhile.", func(a ActivityCounts) uint64 { return a.Lost }},
		{"extranet_activity_write_failures_total", "Activity records that could not be written.", func(a ActivityCounts) uint64 { return a.Failed }},
		{"extranet_activity_syslog_sent_total", "Activity records sent to the syslog receiver (--activity-syslog).", func(a ActivityCounts) uint64 { return a.SyslogSent }},
		{"extranet_activity_syslog_dropped_total", "Activity records not sent to the syslog receiver: the queue was full while it was slow or away, or the write failed.", func(a ActivityCounts) uint64 { return a.SyslogDropped }},
		{"extranet_activity_summarised_total", "Partner connections beyond their peer's budget of records, added up in summary records.", func(a ActivityCounts) uint64 { return a.Summarised }},
	} {
		get := c.get
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
			func() float64 { return float64(get(counts())) }))
	}
}

// Expired records what expire did.
func (m *Metrics) Expired(actions []api.ExpireAction) {
	for _, a := range actions {
		m.expiry.WithLabelValues(a.To).Inc()
	}
}

var (
	descPeers  = prometheus.NewDesc("extranet_peers", "Peers by organisation and state.", []string{"org", "state"}, nil)
	descOnline = prometheus.NewDesc("extranet_peers_online", "Active peers with a handshake in the online window.", []string{"org"}, nil)
	descAge    = prometheus.NewDesc("extranet_peer_handshake_age_seconds", "Age of the last handshake of active peers that ever connected.", nil, nil)
	descRx     = prometheus.NewDesc("extranet_org_received_bytes_total", "Bytes received from an organisation's peers.", []string{"org"}, nil)
	descTx     = prometheus.NewDesc("extranet_org_sent_bytes_total", "Bytes sent to an organisation's peers.", []string{"org"}, nil)
	descOrgs   = prometheus.NewDesc("extranet_orgs", "Organisations by state.", []string{"state"}, nil)
)

// ageBuckets cover a reconnecting client (seconds) to an idle one (weeks).
var ageBuckets = []float64{60, 180, 600, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400}

type storeCollector struct {
	db     *store.DB
	online time.Duration
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeers, descOnline, descAge, descRx, descTx, descOrgs} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	type key struct{ org, state string }
	peers := map[key]float64{}
	online := map[string]float64{}
	rx, tx := map[string]float64{}, map[string]float64{}
	orgs := map[string]float64{}
	buckets := make(map[float64]uint64, len(ageBuckets))
	var count uint64
	var sum float64
	err := c.db.View(func(t *store.Tx) error {
		if err := t.Orgs(func(o *store.Org) error {
			orgs[o.State]++
			online[o.Name] += 0
			return nil
		}); err != nil {
			return err
		}
		return t.Peers("", func(p *store.Peer) error {
			peers[key{p.Org, p.State}]++
			rx[p.Org] += float64(p.RxBytes)
			tx[p.Org] += float64(p.TxBytes)
			if p.State != api.StateActive || p.LastHandshake == nil {
				return nil
			}
			age := now.Sub(*p.LastHandshake)
			if age < c.online {
				online[p.Org]++
			}
			count++
			sum += age.Seconds()
			for _, b := range ageBuckets {
				if age.Seconds() <= b {
					buckets[b]++
				}
			}
			return nil
		})
	})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descPeers, err)
		return
	}
	for k, v := range peers {
		ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, v, k.org, k.state)
	}
	for org, v := range online {
		ch <- prometheus.MustNewConstMetric(descOnline, prometheus.GaugeValue, v, org)
	}
	for org, v := range rx {
		ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, v, org)
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, tx[org], org)
	}
	for state, v := range orgs {
		ch <- prometheus.MustNewConstMetric(descOrgs, prometheus.GaugeValue, v, state)
	}
	ch <- prometheus.MustNewConstHistogram(descAge, count, sum, buckets)
}

// Health reports whether the gateway is serving: the last reconcile
// succeeded and is recent.
type Health func() error

// Handler answers /metrics and /healthz. The daemon serves it on its only
// TCP listener, off unless configured: loopback or a management network.
func (m *Metrics) Handler(health Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := health(); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
