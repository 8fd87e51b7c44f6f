package service

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/pkg/api"
)

func codeOf(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// TestGatewayKeyIsNoPeerKey: WireGuard silently drops a peer that has the
// interface's own public key, and the reconciler would "repair" it forever.
func TestGatewayKeyIsNoPeerKey(t *testing.T) {
	svc, _, _ := newTestService(t)
	ctx := WithActor(context.Background(), "admin")
	gw := svc.opts.GatewayPublicKey
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	_, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "x", PublicKey: gw})
	if codeOf(err) != api.CodeInvalid || !strings.Contains(err.Error(), "gateway's own public key") {
		t.Errorf("issue with the gateway's key: %v", err)
	}
	if _, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "y"}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.RotatePeer(ctx, "acme", "y", api.RotateRequest{PublicKey: gw})
	if codeOf(err) != api.CodeInvalid || !strings.Contains(err.Error(), "gateway's own public key") {
		t.Errorf("rotate to the gateway's key: %v", err)
	}
	_, err = svc.Import(ctx, strings.Join(CSVHeader, ",")+"\npeer,acme,z,,,,"+gw+",\n")
	if err == nil || !strings.Contains(err.Error(), "gateway's own public key") {
		t.Errorf("import of the gateway's key: %v", err)
	}
}

// TestGrantsNoPartnerShouldGet: grants that cover the internet at large,
// loopback, link-local (the cloud metadata service), multicast or reserved
// space need --force, and the error says what they cover; the tunnel
// network stays refused even then.
func TestGrantsNoPartnerShouldGet(t *testing.T) {
	svc, _, _ := newTestService(t)
	ctx := WithActor(context.Background(), "admin")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		grant, covers string
		forceable     bool
	}{
		{"0.0.0.0/0", "tunnel network", false},
		{"100.64.3.0/24", "tunnel network", false},
		{"128.0.0.0/1", "2147483648 addresses", true},
		{"10.0.0.0/7", "33554432 addresses", true},
		{"127.0.0.1/32", "loopback", true},
		{"169.254.169.254/32:tcp/80", "cloud metadata", true},
		{"169.254.0.0/16", "link-local", true},
		{"224.0.0.0/4", "multicast", true},
		{"239.1.1.1/32:udp/5000", "multicast", true},
		{"0.0.0.0/8", "this network", true},
		{"240.0.0.0/4", "reserved", true},
	} {
		_, err := svc.Grant(ctx, "acme", api.GrantsRequest{Grants: []string{tc.grant}})
		if codeOf(err) != api.CodeInvalid || !strings.Contains(err.Error(), tc.covers) {
			t.Errorf("grant %s: %v, want an invalid-value error that says it covers %q", tc.grant, err, tc.covers)
		}
		if tc.forceable && !strings.Contains(err.Error(), "--force") {
			t.Errorf("grant %s: the error does not say how to grant it anyway: %v", tc.grant, err)
		}
		_, err = svc.Grant(ctx, "acme", api.GrantsRequest{Grants: []string{tc.grant}, Force: true})
		if tc.forceable && err != nil {
			t.Errorf("grant %s with force: %v", tc.grant, err)
		}
		if !tc.forceable && codeOf(err) != api.CodeInvalid {
			t.Errorf("grant %s with force: %v, want it refused still", tc.grant, err)
		}
	}
	_, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "meta", Grants: []string{"169.254.169.254/32"}})
	if codeOf(err) != api.CodeInvalid || !strings.Contains(err.Error(), "cloud metadata") {
		t.Errorf("org create with the metadata address: %v", err)
	}
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "meta", Grants: []string{"169.254.169.254/32"}, Force: true}); err != nil {
		t.Errorf("org create with the metadata address and force: %v", err)
	}
	for _, ok := range []string{"10.0.0.0/8", "192.168.0.0/16", "8.8.8.8/32:udp/53", "172.16.0.0/12"} {
		if _, err := svc.Grant(ctx, "acme", api.GrantsRequest{Grants: []string{ok}}); err != nil {
			t.Errorf("grant %s: %v", ok, err)
		}
	}
}

// TestResumeAndExtendRestartTheClocks: a peer an admin resumed or extended
// is not "unused since issued" or "idle" by times before that decision.
func TestResumeAndExtendRestartTheClocks(t *testing.T) {
	svc, clk, db := newTestService(t)
	ctx := WithActor(context.Background(), "admin")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"never", "idle", "ext"} {
		if _, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	setHandshake(t, db, "acme", "idle", clk.Now())
	clk.Advance(40 * 24 * time.Hour)
	for _, n := range []string{"never", "idle"} {
		if _, err := svc.SuspendPeer(ctx, "acme", n); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.ResumePeer(ctx, "acme", n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.ExtendPeer(ctx, "acme", "ext", "90d"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	res, err := svc.Expire(ctx, api.ExpireRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := targets(res); len(got) != 0 {
		t.Errorf("an hour after resume and extend, expire acts: %v", got)
	}
	// The clocks restart; they do not stop.
	clk.Advance(31 * 24 * time.Hour)
	got := targets(mustExpire(t, svc, ctx))
	for _, id := range []string{"acme/never", "acme/idle", "acme/ext"} {
		if got[id] != api.StateSuspended {
			t.Errorf("%s a month after its resume or extend: %q, want suspended", id, got[id])
		}
	}
}

func mustExpire(t *testing.T, svc *Service, ctx context.Context) api.ExpireResult {
	t.Helper()
	res, err := svc.Expire(ctx, api.ExpireRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestKeepPlan: the address plan is stored with the state, and a start
// under another plan is refused, saying how to move.
func TestKeepPlan(t *testing.T) {
	svc, clk, db := newTestService(t)
	ctx := WithActor(context.Background(), "admin")
	for _, org := range []string{"a", "b", "c"} {
		if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: org}); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.IssuePeer(ctx, org, api.IssuePeerRequest{Name: "p"}); err != nil {
			t.Fatal(err)
		}
	}
	// A state made before plans were stored takes the plan its blocks fit.
	plan24, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 24)
	plan23, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 23)
	if err := KeepPlan(db, plan23, clk.Now()); err == nil || !strings.Contains(err.Error(), "did not cut") {
		t.Errorf("legacy /24 state under a /23 plan: %v", err)
	}
	if err := KeepPlan(db, plan24, clk.Now()); err != nil {
		t.Fatalf("legacy state under its own plan: %v", err)
	}
	if err := KeepPlan(db, plan24, clk.Now()); err != nil {
		t.Fatalf("same plan again: %v", err)
	}
	err := KeepPlan(db, plan23, clk.Now())
	for _, want := range []string{"--org-block-bits 24", "--org-block-bits 23", "new --state-dir"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("start under another plan: %v; want it to name %q", err, want)
		}
	}
	other, _ := ipam.NewPlan(netip.MustParsePrefix("100.80.0.0/16"), 24)
	if err := KeepPlan(db, other, clk.Now()); err == nil {
		t.Error("start under another tunnel network accepted")
	}
}
