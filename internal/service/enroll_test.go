package service

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/wgconfig"
)

func tokenOf(t *testing.T, link string) string {
	t.Helper()
	_, tok, ok := strings.Cut(link, "/enroll#")
	if !ok || len(tok) < 43 {
		t.Fatalf("link %q holds no token of 256 bits", link)
	}
	return tok
}

// TestEnrollment walks invites and requests through the service: a token
// opens one group of one organisation for N devices until it expires; a
// request waits for a decision; the page gets its config only with its
// secret; every refusal of a link says the same; and the token is stored
// nowhere.
func TestEnrollment(t *testing.T) {
	svc, clk, db := newTestService(t)
	ctx := WithActor(context.Background(), "alice")
	if _, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{}); err == nil || !strings.Contains(err.Error(), "--enroll-listen") {
		t.Fatalf("an invite on a gateway without enrollment: %v", err)
	}
	svc.opts.EnrollURL = "https://vpn.example.com:8443"
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateGroup(ctx, "acme", api.CreateGroupRequest{Name: "support", Grants: []string{"10.20.0.10/32:tcp/22"}}); err != nil {
		t.Fatal(err)
	}
	_, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Group: "nope"})
	wantCode(t, "an invite into an unknown group", err, api.CodeNotFound, "no group \"nope\"")
	_, err = svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Expires: "60d"})
	wantCode(t, "an invite for two months", err, api.CodeInvalid, "at most 30 days")
	inv, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Group: "support", Devices: 2, Contact: "anna@acme.example"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(inv.Link, "https://vpn.example.com:8443/enroll#") || inv.Invite.State != "active" || inv.Invite.Devices != 2 {
		t.Errorf("created %+v", inv)
	}
	token := tokenOf(t, inv.Link)

	pub1, pub2, pub3 := newPub(t), newPub(t), newPub(t)
	for _, tc := range []struct {
		req  api.EnrollRequest
		code string
		says string
	}{
		{api.EnrollRequest{Token: "bogus", Device: "d", PublicKey: pub1, KeyFrom: KeyFromBrowser}, api.CodeNotFound, "not valid"},
		{api.EnrollRequest{Token: token, Device: "Bad Name", PublicKey: pub1, KeyFrom: KeyFromBrowser}, api.CodeInvalid, "device name"},
		{api.EnrollRequest{Token: token, Device: "d", PublicKey: "nokey", KeyFrom: KeyFromBrowser}, api.CodeInvalid, "key"},
		{api.EnrollRequest{Token: token, Device: "d", PublicKey: svc.opts.GatewayPublicKey, KeyFrom: KeyFromBrowser}, api.CodeInvalid, "gateway's own"},
		{api.EnrollRequest{Token: token, Device: "d", PublicKey: pub1, KeyFrom: "server"}, api.CodeInvalid, "key_from"},
	} {
		_, err := svc.Enroll(ctx, "192.0.2.7", tc.req)
		wantCode(t, tc.says, err, tc.code, tc.says)
	}

	acc, err := svc.Enroll(ctx, "192.0.2.7", api.EnrollRequest{Token: token, Device: "laptop", PublicKey: pub1, KeyFrom: KeyFromBrowser})
	if err != nil || acc.State != api.RequestPending || !strings.HasPrefix(acc.Request, "acme/") {
		t.Fatalf("submit: %+v %v", acc, err)
	}
	_, err = svc.Enroll(ctx, "192.0.2.7", api.EnrollRequest{Token: token, Device: "laptop", PublicKey: pub2, KeyFrom: KeyFromBrowser})
	wantCode(t, "the same device name again", err, api.CodeConflict, "waiting for approval")
	_, err = svc.Enroll(ctx, "192.0.2.7", api.EnrollRequest{Token: token, Device: "phone", PublicKey: pub1, KeyFrom: KeyFromBrowser})
	// The key is not claimed until approval; a second request with it is
	// refused at approval. Here the name differs and the key is free.
	if err != nil {
		t.Fatalf("second device: %v", err)
	}
	_, err = svc.Enroll(ctx, "192.0.2.7", api.EnrollRequest{Token: token, Device: "third", PublicKey: pub3, KeyFrom: KeyFromBrowser})
	wantCode(t, "the N+1th device", err, api.CodeNotFound, "not valid")

	st, err := svc.EnrollStatus(ctx, "192.0.2.7", api.EnrollStatusRequest{Request: acc.Request, Secret: acc.Secret})
	if err != nil || st.State != api.RequestPending || st.Config != "" {
		t.Errorf("status while pending: %+v %v", st, err)
	}
	_, err = svc.EnrollStatus(ctx, "192.0.2.7", api.EnrollStatusRequest{Request: acc.Request, Secret: "guess"})
	wantCode(t, "a poll with the wrong secret", err, api.CodeNotFound, "no such enrollment request")

	reqs, err := svc.ListRequests(ctx, "acme", api.RequestPending)
	if err != nil || len(reqs) != 2 || reqs[0].Source != "192.0.2.7" {
		t.Fatalf("pending requests: %+v %v", reqs, err)
	}
	if _, err := svc.ApproveRequest(ctx, acc.Request); err != nil {
		t.Fatal(err)
	}
	_, err = svc.ApproveRequest(ctx, acc.Request)
	wantCode(t, "approving twice", err, api.CodeConflict, "is approved, not pending")
	st, err = svc.EnrollStatus(ctx, "192.0.2.7", api.EnrollStatusRequest{Request: acc.Request, Secret: acc.Secret})
	if err != nil || st.State != api.RequestApproved || !strings.Contains(st.Config, "PrivateKey = "+wgconfig.PageKeyMarker+"\n") ||
		!strings.Contains(st.Config, "AllowedIPs = 10.20.0.10/32\n") || !strings.Contains(st.Config, "PresharedKey = ") {
		t.Errorf("status once approved: %+v %v", st, err)
	}
	if p := peersOf(t, db)["acme/laptop"]; p.PublicKey != pub1 || p.Group != "support" || p.KeyOrigin != api.KeySupplied {
		t.Errorf("the approved peer: %+v", p)
	}
	// The second request has the first's key, which is now the laptop's.
	phone := ""
	for _, r := range reqs {
		if r.Device == "phone" {
			phone = r.ID
		}
	}
	_, err = svc.ApproveRequest(ctx, phone)
	wantCode(t, "approving a key in use", err, api.CodeConflict, "already used")
	if _, err := svc.DenyRequest(ctx, phone, api.DenyRequest{}); err == nil {
		t.Error("a denial without a reason")
	}
	if _, err := svc.DenyRequest(ctx, phone, api.DenyRequest{Reason: "same key as laptop"}); err != nil {
		t.Fatal(err)
	}

	// A pasted key: the config keeps the placeholder, for the app that
	// holds the private key. Auto-approved, so it is approved at once.
	auto, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{AutoApprove: true, Expires: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	acc2, err := svc.Enroll(ctx, "192.0.2.8", api.EnrollRequest{Token: tokenOf(t, auto.Link), Device: "server", PublicKey: pub3, KeyFrom: KeyFromPasted})
	if err != nil || acc2.State != api.RequestApproved {
		t.Fatalf("auto-approved submit: %+v %v", acc2, err)
	}
	st, err = svc.EnrollStatus(ctx, "192.0.2.8", api.EnrollStatusRequest{Request: acc2.Request, Secret: acc2.Secret})
	if err != nil || strings.Contains(st.Config, wgconfig.PageKeyMarker) || !strings.Contains(st.Config, "PASTE-THE-PRIVATE-KEY") || !strings.Contains(st.Config, "AllowedIPs = 10.20.0.0/24\n") {
		t.Errorf("a pasted key's config: %+v %v", st, err)
	}

	// Expired and revoked links say what unknown ones say.
	clk.Advance(2 * time.Hour)
	_, err = svc.Enroll(ctx, "192.0.2.8", api.EnrollRequest{Token: tokenOf(t, auto.Link), Device: "late", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
	wantCode(t, "an expired link", err, api.CodeNotFound, "not valid")
	third, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := svc.Enroll(ctx, "192.0.2.9", api.EnrollRequest{Token: tokenOf(t, third.Link), Device: "tablet", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RevokeInvite(ctx, third.Invite.ID); err != nil {
		t.Fatal(err)
	}
	st, err = svc.EnrollStatus(ctx, "192.0.2.9", api.EnrollStatusRequest{Request: pending.Request, Secret: pending.Secret})
	if err != nil || st.State != api.RequestDenied || st.Reason != "the invite was revoked" {
		t.Errorf("a pending request of a revoked invite: %+v %v", st, err)
	}
	_, err = svc.Enroll(ctx, "192.0.2.9", api.EnrollRequest{Token: tokenOf(t, third.Link), Device: "tablet2", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
	wantCode(t, "a revoked link", err, api.CodeNotFound, "not valid")

	// Pending requests expire.
	last, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Expires: "10d"})
	if err != nil {
		t.Fatal(err)
	}
	old, err := svc.Enroll(ctx, "192.0.2.9", api.EnrollRequest{Token: tokenOf(t, last.Link), Device: "slow", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(DefaultRequestTTL + time.Minute)
	_, err = svc.ApproveRequest(ctx, old.Request)
	wantCode(t, "approving an expired request", err, api.CodeConflict, "is expired")

	// Audited, with who did it; and no token anywhere in the state file.
	for action, actor := range map[string]string{"invite.create": "alice", "enroll.request": "partner@192.0.2.7", "request.approve": "alice", "request.deny": "alice", "invite.revoke": "alice", "enroll.config": "partner@"} {
		evs, err := svc.Audit(ctx, AuditFilter{Action: action})
		if err != nil || len(evs) == 0 || !strings.HasPrefix(evs[0].Actor, actor) {
			t.Errorf("%s: %+v %v, want it by %s", action, evs, err, actor)
		}
	}
	// An organisation deleted takes its invites, their tokens and its
	// requests along.
	if err := svc.DeleteOrg(ctx, "acme", true); err != nil {
		t.Fatal(err)
	}
	if invites, err := svc.ListInvites(ctx, ""); err != nil || len(invites) != 0 {
		t.Errorf("invites after the org was deleted: %+v %v", invites, err)
	}
	if reqs, err := svc.ListRequests(ctx, "", ""); err != nil || len(reqs) != 0 {
		t.Errorf("requests after the org was deleted: %+v %v", reqs, err)
	}
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Enroll(ctx, "192.0.2.9", api.EnrollRequest{Token: tokenOf(t, last.Link), Device: "ghost", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
	wantCode(t, "an old acme's link on a new acme", err, api.CodeNotFound, "not valid")
	db.Close()
	raw, err := os.ReadFile(db.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, link := range []string{inv.Link, auto.Link, third.Link, last.Link} {
		if strings.Contains(string(raw), tokenOf(t, link)) {
			t.Errorf("a token is in the state file")
		}
	}
	for _, secret := range []string{acc.Secret, acc2.Secret} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("a request's secret is in the state file")
		}
	}
}

// TestDeletedGroupEndsItsInvites: a link into a group that was deleted
// opens nothing, not even a group made again under its name; its pending
// requests are denied. And a config's delivery is audited once, however
// often the page asks.
func TestDeletedGroupEndsItsInvites(t *testing.T) {
	svc, _, _ := newTestService(t)
	svc.opts.EnrollURL = "https://vpn.example.com:8443"
	ctx := WithActor(context.Background(), "alice")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateGroup(ctx, "acme", api.CreateGroupRequest{Name: "support", Grants: []string{"10.20.0.10/32:tcp/22"}}); err != nil {
		t.Fatal(err)
	}
	inv, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Group: "support", Devices: 3, AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := svc.Enroll(ctx, "192.0.2.1", api.EnrollRequest{Token: tokenOf(t, inv.Link), Device: "a", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if st, err := svc.EnrollStatus(ctx, "192.0.2.1", api.EnrollStatusRequest{Request: acc.Request, Secret: acc.Secret}); err != nil || st.Config == "" {
			t.Fatalf("poll %d: %+v %v", i, st, err)
		}
	}
	if evs, err := svc.Audit(ctx, AuditFilter{Action: "enroll.config"}); err != nil || len(evs) != 1 {
		t.Errorf("three deliveries audited %d times (%v), want once", len(evs), err)
	}
	if err := svc.DeleteGroup(ctx, "acme", "support", "default"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateGroup(ctx, "acme", api.CreateGroupRequest{Name: "support", Grants: []string{"10.20.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Enroll(ctx, "192.0.2.1", api.EnrollRequest{Token: tokenOf(t, inv.Link), Device: "b", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
	wantCode(t, "a deleted group's link on a group of its name", err, api.CodeNotFound, "not valid")
	if invites, err := svc.ListInvites(ctx, "acme"); err != nil || len(invites) != 1 || invites[0].State != "revoked" {
		t.Errorf("invites after the group was deleted: %+v %v", invites, err)
	}
}
