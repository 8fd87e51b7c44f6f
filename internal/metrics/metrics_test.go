package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

func scrape(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Code, string(body)
}

// TestScrape reads the gauges from a real store: counts by org and state,
// online peers by the window, traffic summed per org, and the handshake
// age histogram over active peers only.
func TestScrape(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	ago := func(d time.Duration) *time.Time { at := now.Add(-d); return &at }
	err = db.Update(func(tx *store.Tx) error {
		for _, o := range []*store.Org{
			{ID: 1, Name: "acme", State: api.StateActive},
			{ID: 2, Name: "globex", State: api.StateActive},
			{ID: 3, Name: "initech", State: api.StateSuspended},
		} {
			if err := tx.PutOrg(o); err != nil {
				return err
			}
		}
		for _, p := range []*store.Peer{
			{Org: "acme", Name: "a1", State: api.StateActive, LastHandshake: ago(30 * time.Second), RxBytes: 100, TxBytes: 1000},
			{Org: "acme", Name: "a2", State: api.StateActive, LastHandshake: ago(2 * time.Hour), RxBytes: 5, TxBytes: 7},
			{Org: "acme", Name: "a3", State: api.StateActive},
			{Org: "acme", Name: "a5", State: api.StateActive, LastHandshake: ago(2 * time.Minute)},
			// Suspended with a fresh handshake: neither online nor aged.
			{Org: "acme", Name: "a4", State: api.StateSuspended, LastHandshake: ago(time.Second), RxBytes: 1},
			{Org: "globex", Name: "g1", State: api.StateRevoked, RxBytes: 9, TxBytes: 9},
		} {
			if err := tx.PutPeer(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	h := New(db, 3*time.Minute).Handler(func() error { return nil })
	code, body := scrape(t, h, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	for _, want := range []string{
		`extranet_peers{org="acme",state="active"} 4`,
		`extranet_peers{org="acme",state="suspended"} 1`,
		`extranet_peers{org="globex",state="revoked"} 1`,
		`extranet_peers_online{org="acme"} 2`,
		// Every org appears, so a dashboard sees a zero, not a gap.
		`extranet_peers_online{org="globex"} 0`,
		`extranet_peers_online{org="initech"} 0`,
		`extranet_org_received_bytes_total{org="acme"} 106`,
		`extranet_org_sent_bytes_total{org="acme"} 1007`,
		`extranet_org_received_bytes_total{org="globex"} 9`,
		`extranet_orgs{state="active"} 2`,
		`extranet_orgs{state="suspended"} 1`,
		// Buckets are cumulative: 30 s is in every bucket, 2 min from 3 min
		// on, 2 h from 6 h on.
		`extranet_peer_handshake_age_seconds_bucket{le="60"} 1`,
		`extranet_peer_handshake_age_seconds_bucket{le="180"} 2`,
		`extranet_peer_handshake_age_seconds_bucket{le="3600"} 2`,
		`extranet_peer_handshake_age_seconds_bucket{le="21600"} 3`,
		`extranet_peer_handshake_age_seconds_bucket{le="+Inf"} 3`,
		`extranet_peer_handshake_age_seconds_count 3`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", body)
	}
}

// TestHealth answers 200 while the gateway serves and 503, naming the cause,
// when it does not, which is what a load balancer acts on.
func TestHealth(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var bad error
	h := New(db, time.Minute).Handler(func() error { return bad })
	if code, body := scrape(t, h, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("healthy: %d %q", code, body)
	}
	bad = errors.New("last reconcile failed: iptables-restore: exit status 4")
	code, body := scrape(t, h, "/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "iptables-restore") {
		t.Errorf("unhealthy: %d %q", code, body)
	}
}

// TestExpiryActionsFromTheStart: every state expire retires to is on
// /metrics at 0 before the first action, so an alert on its rate sees
// the series from the start.
func TestExpiryActionsFromTheStart(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, body := scrape(t, New(db, time.Minute).Handler(func() error { return nil }), "/metrics")
	for _, to := range []string{api.StateSuspended, api.StateRevoked, api.StateExpired} {
		if want := `extranet_expiry_actions_total{to="` + to + `"} 0`; !strings.Contains(body, want) {
			t.Errorf("/metrics before any expiry lacks %q", want)
		}
	}
}

// TestActivityCounters: flows by organisation and ending (a summary counts
// the flows it adds up), their bytes each way, and what the log missed,
// at 0 from the start.
func TestActivityCounters(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := New(db, time.Minute)
	lost := uint64(0)
	m.Activity(func() ActivityCounts { return ActivityCounts{Lost: lost} })
	h := m.Handler(func() error { return nil })
	if _, body := scrape(t, h, "/metrics"); !strings.Contains(body, "extranet_activity_lost_total 0") || !strings.Contains(body, "extranet_activity_summarised_total 0") {
		t.Errorf("the activity log's own counts are not there from the start:\n%s", body)
	}
	m.Flow(api.Flow{Org: "acme", End: api.FlowClosed, BytesOut: 100, BytesIn: 2000})
	m.Flow(api.Flow{Org: "acme", End: api.FlowSummarised, Flows: 40, BytesOut: 4000})
	// An interim record's bytes count now, its flow when it ends.
	m.Flow(api.Flow{Org: "acme", End: api.FlowOpen, BytesOut: 500})
	lost = 2
	_, body := scrape(t, h, "/metrics")
	for _, want := range []string{
		`extranet_activity_flows_total{end="closed",org="acme"} 1`,
		`extranet_activity_flows_total{end="summarised",org="acme"} 40`,
		`extranet_activity_bytes_total{direction="out",org="acme"} 4600`,
		`extranet_activity_bytes_total{direction="in",org="acme"} 2000`,
		`extranet_activity_lost_total 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("no %s in:\n%s", want, body)
		}
	}
	if strings.Contains(body, `end="open"`) {
		t.Errorf("interim records counted as flows:\n%s", body)
	}
}

func TestClusterGauges(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := New(db, time.Minute)
	following, revision := false, int64(7)
	m.Cluster(func() bool { return following }, func() int64 { return revision })
	h := m.Handler(func() error { return nil })
	if _, body := scrape(t, h, "/metrics"); !strings.Contains(body, "extranet_cluster_following 0") || !strings.Contains(body, "extranet_cluster_copy_revision 7") {
		t.Errorf("a copy that does not follow:\n%s", body)
	}
	following, revision = true, 9
	if _, body := scrape(t, h, "/metrics"); !strings.Contains(body, "extranet_cluster_following 1") || !strings.Contains(body, "extranet_cluster_copy_revision 9") {
		t.Errorf("a copy that follows:\n%s", body)
	}
}

func TestRoleGauges(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := New(db, time.Minute)
	serving, epoch, promotions := false, int64(0), 0
	m.Role(func() (bool, int64) { return serving, epoch }, func() int { return promotions })
	h := m.Handler(func() error { return nil })
	if _, body := scrape(t, h, "/metrics"); !strings.Contains(body, "extranet_cluster_active 0") || !strings.Contains(body, "extranet_cluster_promotions_total 0") {
		t.Errorf("a standby:\n%s", body)
	}
	serving, epoch, promotions = true, 42, 1
	_, body := scrape(t, h, "/metrics")
	for _, want := range []string{"extranet_cluster_active 1", "extranet_cluster_epoch 42", "extranet_cluster_promotions_total 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("the active: no %q in\n%s", want, body)
		}
	}
}
