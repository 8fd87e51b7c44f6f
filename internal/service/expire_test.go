package service

import (
	"context"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// fakeClock is a settable clock for rules that depend on time.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestService(t *testing.T) (*Service, *fakeClock, *store.DB) {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "x.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 24)
	clk := &fakeClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	svc := New(Options{
		DB: db, Plan: plan, Clock: clk, Endpoint: "gw.example:51820",
		GatewayPublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
		Expire:           ExpireDefaults{Idle: 30 * 24 * time.Hour, Unused: 14 * 24 * time.Hour, Action: "suspend"},
	})
	return svc, clk, db
}

// setHandshake records a handshake as the statistics poller would.
func setHandshake(t *testing.T, db *store.DB, org, name string, at time.Time) {
	t.Helper()
	err := db.Update(func(tx *store.Tx) error {
		p, err := tx.Peer(org, name)
		if err != nil {
			return err
		}
		p.LastHandshake = &at
		return tx.PutPeer(p)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func targets(res api.ExpireResult) map[string]string {
	out := map[string]string{}
	for _, a := range res.Actions {
		out[a.Target] = a.To
	}
	return out
}

func TestExpireRules(t *testing.T) {
	ctx := WithActor(context.Background(), "expire (root)")
	svc, clk, db := newTestService(t)

	mustOK := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustOK(svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}))
	mustOK(svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "ended", Expires: "10d"}))
	for _, n := range []string{"idle-exact", "idle-over", "fresh", "never", "dated"} {
		req := api.IssuePeerRequest{Name: n}
		if n == "dated" {
			req.Expires = "5d"
		}
		mustOK(svc.IssuePeer(ctx, "acme", req))
	}
	mustOK(svc.IssuePeer(ctx, "ended", api.IssuePeerRequest{Name: "p"}))

	clk.Advance(40 * 24 * time.Hour)
	now := clk.Now()
	setHandshake(t, db, "acme", "idle-exact", now.Add(-30*24*time.Hour))
	setHandshake(t, db, "acme", "idle-over", now.Add(-30*24*time.Hour-time.Second))
	setHandshake(t, db, "acme", "fresh", now.Add(-time.Hour))

	dry, err := svc.Expire(ctx, api.ExpireRequest{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"acme/idle-over": api.StateSuspended,
		"acme/never":     api.StateSuspended,
		"acme/dated":     api.StateExpired,
		"ended":          api.StateExpired,
		"ended/p":        api.StateExpired,
	}
	got := targets(dry)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("extra actions: %v", got)
	}
	// The dry run changed nothing.
	if p, _ := svc.GetPeer(ctx, "acme", "never"); p.State != api.StateActive {
		t.Fatalf("dry run changed a peer to %s", p.State)
	}

	res, err := svc.Expire(ctx, api.ExpireRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Actions) != len(want) {
		t.Errorf("real run did %d actions, want %d", len(res.Actions), len(want))
	}
	again, err := svc.Expire(ctx, api.ExpireRequest{})
	if err != nil || len(again.Actions) != 0 {
		t.Errorf("second run: %+v, %v; want nothing to do", again, err)
	}
	evs, _ := svc.Audit(ctx, AuditFilter{Action: "peer."})
	n := 0
	for _, e := range evs {
		if e.Actor == "expire (root)" && (e.Action == "peer.suspend" || e.Action == "peer.expire") {
			n++
		}
	}
	if n != 4 {
		t.Errorf("audit has %d expire events for peers, want 4", n)
	}
	if _, err := svc.ResumePeer(ctx, "acme", "dated"); err == nil {
		t.Error("an expired peer resumed without a new expiry")
	}
}

func TestExpireRevokeAndValidation(t *testing.T) {
	ctx := context.Background()
	svc, clk, _ := newTestService(t)
	svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"})
	svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "p"})
	clk.Advance(2 * time.Hour)
	res, err := svc.Expire(ctx, api.ExpireRequest{Unused: "90m", Action: "revoke"})
	if err != nil || targets(res)["acme/p"] != api.StateRevoked {
		t.Fatalf("revoke unused: %+v %v", res, err)
	}
	for _, bad := range []api.ExpireRequest{{Idle: "soon"}, {Unused: "-1d"}, {Action: "delete"}} {
		if _, err := svc.Expire(ctx, bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func TestConcurrentExpireActsOnce(t *testing.T) {
	ctx := context.Background()
	svc, clk, _ := newTestService(t)
	svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"})
	for _, n := range []string{"a", "b", "c"} {
		svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: n})
	}
	clk.Advance(15 * 24 * time.Hour)
	var wg sync.WaitGroup
	total := make([]int, 2)
	for i := range total {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := svc.Expire(ctx, api.ExpireRequest{})
			if err != nil {
				t.Error(err)
			}
			total[i] = len(res.Actions)
		}(i)
	}
	wg.Wait()
	if total[0]+total[1] != 3 {
		t.Errorf("two concurrent runs did %d and %d actions, want 3 in all", total[0], total[1])
	}
}

func TestAuditRetentionKeepsChainVerifiable(t *testing.T) {
	ctx := WithActor(context.Background(), "root")
	svc, clk, _ := newTestService(t)
	for _, n := range []string{"a", "b", "c"} {
		if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
		clk.Advance(24 * time.Hour)
	}
	n, err := svc.TrimAudit(ctx, 36*time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("trimmed %d, %v; want the 2 events older than 36h", n, err)
	}
	v, err := svc.VerifyAudit(ctx)
	if err != nil || !v.OK || v.Events != 2 {
		t.Fatalf("verify after trim: %+v %v; want ok with org c's event and the trim event", v, err)
	}
	if n, _ := svc.TrimAudit(ctx, 36*time.Hour); n != 0 {
		t.Errorf("second trim removed %d", n)
	}
}

func TestMaxPeerLifetime(t *testing.T) {
	ctx := context.Background()
	svc, clk, _ := newTestService(t)
	svc.opts.MaxPeerLifetime = 90 * 24 * time.Hour
	svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"})
	res, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "capped"})
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(90 * 24 * time.Hour); res.Peer.Expires == nil || !res.Peer.Expires.Equal(want) {
		t.Errorf("peer issued without --expires got %v, want the cap %v", res.Peer.Expires, want)
	}
	if _, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "long", Expires: "91d"}); err == nil {
		t.Error("an expiry beyond the cap was accepted")
	}
	if _, err := svc.ExtendPeer(ctx, "acme", "capped", "never"); err == nil {
		t.Error("extend to never accepted under a cap")
	}
	// Expired, it cannot resume without a new date within the cap.
	clk.Advance(91 * 24 * time.Hour)
	if _, err := svc.Expire(ctx, api.ExpireRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ResumePeer(ctx, "acme", "capped"); err == nil {
		t.Error("expired peer resumed without a new expiry")
	}
	if _, err := svc.ExtendPeer(ctx, "acme", "capped", "30d"); err != nil {
		t.Fatal(err)
	}
	if p, err := svc.ResumePeer(ctx, "acme", "capped"); err != nil || p.State != api.StateActive {
		t.Errorf("resume after extend: %+v %v", p, err)
	}
}
