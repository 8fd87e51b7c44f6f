package service

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

func wantCode(t *testing.T, what string, err error, code, says string) {
	t.Helper()
	e, ok := err.(*api.Error)
	if !ok || e.Code != code || !strings.Contains(e.Message, says) {
		t.Errorf("%s: %v, want %s saying %q", what, err, code, says)
	}
}

// TestGroupsStayWithinTheCeiling walks the life of two groups: grants
// outside the organisation's are refused, the default group follows the
// organisation's, a narrowed ceiling narrows the groups in the same
// change, and configs route what the peer's group reaches.
func TestGroupsStayWithinTheCeiling(t *testing.T) {
	svc, _, db := newTestService(t)
	ctx := WithActor(context.Background(), "root")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24", "10.30.0.0/16:tcp"}}); err != nil {
		t.Fatal(err)
	}
	_, err := svc.CreateGroup(ctx, "acme", api.CreateGroupRequest{Name: "support", Grants: []string{"10.20.1.0/24"}})
	wantCode(t, "a grant outside the ceiling", err, api.CodeInvalid, "outside what organisation \"acme\" may reach (10.20.0.0/24 10.30.0.0/16:tcp)")
	_, err = svc.CreateGroup(ctx, "acme", api.CreateGroupRequest{Name: "support", Grants: []string{"10.30.0.0/16"}})
	wantCode(t, "any protocol where the ceiling has tcp", err, api.CodeInvalid, "outside what")
	sup, err := svc.CreateGroup(ctx, "acme", api.CreateGroupRequest{Name: "support", Grants: []string{"10.20.0.10/32:tcp/22", "10.30.5.0/24:tcp/443"}})
	if err != nil {
		t.Fatal(err)
	}
	if sup.Default || strings.Join(sup.Grants, " ") != "10.20.0.10/32:tcp/22 10.30.5.0/24:tcp/443" {
		t.Errorf("created %+v", sup)
	}
	_, err = svc.CreateGroup(ctx, "acme", api.CreateGroupRequest{Name: "default"})
	wantCode(t, "a second default", err, api.CodeConflict, "already has a group \"default\"")
	_, err = svc.GroupGrant(ctx, "acme", "default", api.GrantsRequest{Grants: []string{"10.20.0.0/24"}})
	wantCode(t, "granting the default group", err, api.CodeConflict, "org grant|ungrant acme")
	_, err = svc.GroupGrant(ctx, "acme", "nope", api.GrantsRequest{Grants: []string{"10.20.0.0/24"}})
	wantCode(t, "an unknown group", err, api.CodeNotFound, "its groups are default, support")

	bob, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "bob", Group: "support"})
	if err != nil {
		t.Fatal(err)
	}
	if bob.Peer.Group != "support" || !strings.Contains(bob.Config, "AllowedIPs = 10.20.0.10/32, 10.30.5.0/24\n") {
		t.Errorf("issued into support: group %q, config:\n%s", bob.Peer.Group, bob.Config)
	}
	ann, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	if ann.Peer.Group != "default" || !strings.Contains(ann.Config, "AllowedIPs = 10.20.0.0/24, 10.30.0.0/16\n") {
		t.Errorf("issued without a group: group %q, config:\n%s", ann.Peer.Group, ann.Config)
	}
	_, err = svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "cy", Group: "sales"})
	wantCode(t, "issuing into an unknown group", err, api.CodeNotFound, "no group \"sales\"")

	// The ceiling narrows: support keeps only what lies within it, in the
	// same change, and the default group follows on its own.
	o, err := svc.Ungrant(ctx, "acme", api.GrantsRequest{Grants: []string{"10.30.0.0/16:tcp"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := groupsLine(o.Groups); got != "default=10.20.0.0/24 support=10.20.0.10/32:tcp/22" {
		t.Errorf("after the ungrant: %s", got)
	}
	if cfg, err := svc.PeerConfig(ctx, "acme", "bob"); err != nil || !strings.Contains(cfg.Config, "AllowedIPs = 10.20.0.10/32\n") {
		t.Errorf("bob's config after the ungrant (%v):\n%s", err, cfg.Config)
	}
	evs, err := svc.Audit(ctx, AuditFilter{Action: "org.ungrant"})
	if err != nil || len(evs) != 1 || !strings.Contains(auditText(t, evs[0]), "10.30.5.0/24:tcp/443") {
		t.Errorf("the narrowing of the groups is not in the ungrant's audit event: %+v %v", evs, err)
	}

	// Moving keeps keys and address; the config follows the new group.
	moved, err := svc.MovePeer(ctx, "acme", "bob", api.MoveRequest{Group: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if moved.Group != "default" || moved.Address != bob.Peer.Address || moved.PublicKey != bob.Peer.PublicKey {
		t.Errorf("moved: %+v", moved)
	}
	_, err = svc.MovePeer(ctx, "acme", "bob", api.MoveRequest{Group: "default"})
	wantCode(t, "a move to its own group", err, api.CodeConflict, "already in group")
	if _, err := svc.MovePeer(ctx, "acme", "bob", api.MoveRequest{Group: "support"}); err != nil {
		t.Fatal(err)
	}

	// A group with peers goes only with --move-to, which moves them.
	err = svc.DeleteGroup(ctx, "acme", "support", "")
	wantCode(t, "deleting a group with peers", err, api.CodeConflict, "has 1 peers")
	err = svc.DeleteGroup(ctx, "acme", "default", "")
	wantCode(t, "deleting the default group", err, api.CodeConflict, "cannot be deleted")
	err = svc.DeleteGroup(ctx, "acme", "support", "support")
	wantCode(t, "moving to the group deleted", err, api.CodeInvalid, "names the group being deleted")
	if err := svc.DeleteGroup(ctx, "acme", "support", "default"); err != nil {
		t.Fatal(err)
	}
	if p := peersOf(t, db)["acme/bob"]; p.Group != store.DefaultGroup {
		t.Errorf("bob is in %q after his group was deleted", p.Group)
	}
	groups, err := svc.ListGroups(ctx, "acme")
	if err != nil || len(groups) != 1 || groups[0].Name != "default" || groups[0].Peers.Total != 2 {
		t.Errorf("groups after the delete: %+v %v", groups, err)
	}
	for _, action := range []string{"group.create", "group.delete", "peer.move"} {
		if evs, err := svc.Audit(ctx, AuditFilter{Action: action}); err != nil || len(evs) == 0 || evs[0].Actor != "root" {
			t.Errorf("%s is not audited with its actor: %+v %v", action, evs, err)
		}
	}
}

func groupsLine(gs []api.GroupGrants) string {
	var parts []string
	for _, g := range gs {
		parts = append(parts, g.Name+"="+strings.Join(g.Grants, ","))
	}
	return strings.Join(parts, " ")
}

// auditText is an audit event's before and after as JSON.
func auditText(t *testing.T, ev api.AuditEvent) string {
	t.Helper()
	b, err := json.Marshal([]any{ev.Before, ev.After})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
