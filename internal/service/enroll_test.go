package service

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/wgconfig"
)

// wantRefused checks that err is the one answer to every refused
// submission.
func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae != ErrLinkInvalid {
		t.Errorf("%s: %v, want the answer to every refused link", what, err)
	}
}

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
		{api.EnrollRequest{Token: token, Device: "Bad Name", PublicKey: pub1, KeyFrom: KeyFromBrowser}, api.CodeInvalid, "device name"},
		{api.EnrollRequest{Token: token, Device: "d", PublicKey: "nokey", KeyFrom: KeyFromBrowser}, api.CodeInvalid, "key"},
		{api.EnrollRequest{Token: token, Device: "d", PublicKey: svc.opts.GatewayPublicKey, KeyFrom: KeyFromBrowser}, api.CodeInvalid, "gateway's own"},
		{api.EnrollRequest{Token: token, Device: "d", PublicKey: pub1, KeyFrom: "server"}, api.CodeInvalid, "key_from"},
	} {
		_, err := svc.Enroll(ctx, "192.0.2.7", tc.req)
		wantCode(t, tc.says, err, tc.code, tc.says)
	}

	_, err = svc.Enroll(ctx, "192.0.2.7", api.EnrollRequest{Token: "bogus", Device: "d", PublicKey: pub1, KeyFrom: KeyFromBrowser})
	wantRefused(t, "a made-up token", err)
	acc, err := svc.Enroll(ctx, "192.0.2.7", api.EnrollRequest{Token: token, Device: "laptop", PublicKey: pub1, KeyFrom: KeyFromBrowser})
	if err != nil || acc.State != api.RequestPending || !strings.HasPrefix(acc.Request, "acme/") {
		t.Fatalf("submit: %+v %v", acc, err)
	}
	_, err = svc.Enroll(ctx, "192.0.2.7", api.EnrollRequest{Token: token, Device: "laptop", PublicKey: pub2, KeyFrom: KeyFromBrowser})
	wantRefused(t, "the same device name again", err)
	_, err = svc.Enroll(ctx, "192.0.2.7", api.EnrollRequest{Token: token, Device: "phone", PublicKey: pub1, KeyFrom: KeyFromBrowser})
	// The key is not claimed until approval; a second request with it is
	// refused at approval. Here the name differs and the key is free.
	if err != nil {
		t.Fatalf("second device: %v", err)
	}
	_, err = svc.Enroll(ctx, "192.0.2.7", api.EnrollRequest{Token: token, Device: "third", PublicKey: pub3, KeyFrom: KeyFromBrowser})
	wantRefused(t, "the N+1th device", err)

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
	wantRefused(t, "an expired link", err)
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
	wantRefused(t, "a revoked link", err)

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
	wantRefused(t, "an old acme's link on a new acme", err)
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
	wantRefused(t, "a deleted group's link on a group of its name", err)
	if invites, err := svc.ListInvites(ctx, "acme"); err != nil || len(invites) != 1 || invites[0].State != "revoked" {
		t.Errorf("invites after the group was deleted: %+v %v", invites, err)
	}
}

// TestConfigOnlyWhileInForce: the page gets its config only while the
// device would have access: the peer active and before its date, its
// organisation active and before its contract's end, whether or not the
// expire job has run. Otherwise it reads that access was withdrawn. A
// link of an organisation past its contract's end opens nothing.
func TestConfigOnlyWhileInForce(t *testing.T) {
	svc, clk, _ := newTestService(t)
	svc.opts.EnrollURL = "https://vpn.example.com:8443"
	ctx := WithActor(context.Background(), "alice")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24"}, Expires: "10d"}); err != nil {
		t.Fatal(err)
	}
	inv, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := svc.Enroll(ctx, "192.0.2.1", api.EnrollRequest{Token: tokenOf(t, inv.Link), Device: "laptop", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
	if err != nil {
		t.Fatal(err)
	}
	late, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Expires: "30d"})
	if err != nil {
		t.Fatal(err)
	}
	delivered := func(step string, want bool) {
		t.Helper()
		st, err := svc.EnrollStatus(ctx, "192.0.2.1", api.EnrollStatusRequest{Request: acc.Request, Secret: acc.Secret})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if got := st.Config != ""; got != want || !want && st.State != "withdrawn" {
			t.Errorf("%s: state %q, config delivered %v, want %v", step, st.State, got, want)
		}
	}
	delivered("approved", true)
	if _, err := svc.SuspendOrg(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	delivered("organisation suspended", false)
	if _, err := svc.ResumeOrg(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	delivered("organisation resumed", true)
	if _, err := svc.ExtendPeer(ctx, "acme", "laptop", "1h"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	delivered("peer past its date, no expire run", false)
	if _, err := svc.ExtendPeer(ctx, "acme", "laptop", "30d"); err != nil {
		t.Fatal(err)
	}
	delivered("peer extended", true)
	clk.Advance(10 * 24 * time.Hour)
	delivered("organisation past its contract's end, no expire run", false)
	_, err = svc.Enroll(ctx, "192.0.2.1", api.EnrollRequest{Token: tokenOf(t, late.Link), Device: "phone", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
	wantRefused(t, "a link of an organisation past its contract's end", err)
}

// TestRefusedSubmissionsSayTheSame: a holder of a good link learns from
// a refusal nothing of which device names and keys exist: a name enrolled
// or waiting already, a key any peer holds and a link that opens nothing
// get the same error.
func TestRefusedSubmissionsSayTheSame(t *testing.T) {
	svc, _, _ := newTestService(t)
	svc.opts.EnrollURL = "https://vpn.example.com:8443"
	ctx := WithActor(context.Background(), "alice")
	for _, org := range []string{"acme", "globex"} {
		if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: org, Grants: []string{"10.20.0.0/24"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "laptop"}); err != nil {
		t.Fatal(err)
	}
	other, err := svc.IssuePeer(ctx, "globex", api.IssuePeerRequest{Name: "server"})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Devices: 5})
	if err != nil {
		t.Fatal(err)
	}
	token := tokenOf(t, inv.Link)
	if _, err := svc.Enroll(ctx, "192.0.2.1", api.EnrollRequest{Token: token, Device: "phone", PublicKey: newPub(t), KeyFrom: KeyFromBrowser}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Enroll(ctx, "192.0.2.1", api.EnrollRequest{Token: "guess", Device: "desk", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
	wantRefused(t, "a made-up link", err)
	for why, req := range map[string]api.EnrollRequest{
		"a name enrolled already":         {Token: token, Device: "laptop", PublicKey: newPub(t), KeyFrom: KeyFromBrowser},
		"a name waiting already":          {Token: token, Device: "phone", PublicKey: newPub(t), KeyFrom: KeyFromBrowser},
		"another organisation's peer key": {Token: token, Device: "desk", PublicKey: other.Peer.PublicKey, KeyFrom: KeyFromPasted},
	} {
		_, err := svc.Enroll(ctx, "192.0.2.1", req)
		wantRefused(t, why, err)
	}
}

// TestUnknownTokensTakeNoWrite: a made-up token is refused on a read of
// the store, never in a write transaction: a flood of them neither
// queues behind a writer nor joins (and, failing, re-runs) a batch of
// real changes. Shown by holding the write lock while one is refused.
func TestUnknownTokensTakeNoWrite(t *testing.T) {
	svc, _, db := newTestService(t)
	svc.opts.EnrollURL = "https://vpn.example.com:8443"
	ctx := WithActor(context.Background(), "alice")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	holding, release, held := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		held <- db.Bolt().Update(func(*bolt.Tx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	refused := make(chan error, 1)
	go func() {
		_, err := svc.Enroll(ctx, "192.0.2.1", api.EnrollRequest{Token: "guess", Device: "desk", PublicKey: newPub(t), KeyFrom: KeyFromBrowser})
		refused <- err
	}()
	select {
	case err := <-refused:
		wantRefused(t, "a made-up token while a write is under way", err)
		close(release)
	case <-time.After(5 * time.Second):
		t.Error("a made-up token waited 5 s for the write lock")
		close(release)
		<-refused
	}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
}
