package service

import (
	"context"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/pkg/api"
)

// TestRolesKeepUsersFromFallingBack: a user's own roles replace its
// groups', so taking away its last one, or deleting the organisation it
// sponsors, must not quietly hand it its groups' roles.
func TestRolesKeepUsersFromFallingBack(t *testing.T) {
	svc, _, _ := newTestService(t)
	ctx := WithActor(context.Background(), "root")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.1.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	// root exists everywhere, in group root.
	for _, req := range []api.RoleRequest{{Subject: "@root", Role: "admin"}, {Subject: "root", Role: "sponsor", Orgs: []string{"acme"}}} {
		if _, err := svc.AssignRole(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	err := svc.RevokeRole(ctx, api.RoleRequest{Subject: "root", Role: "sponsor"})
	if e, ok := err.(*api.Error); !ok || e.Code != api.CodeConflict || !strings.Contains(e.Message, "admin through @root") {
		t.Fatalf("revoking the last own role: %v", err)
	}
	// Deleting the organisation leaves an empty sponsorship, not none.
	if err := svc.DeleteOrg(ctx, "acme", false); err != nil {
		t.Fatal(err)
	}
	roles, err := svc.ListRoles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sponsor *api.RoleAssignment
	for i, r := range roles {
		if r.Subject == "root" && r.Role == "sponsor" {
			sponsor = &roles[i]
		}
	}
	if sponsor == nil || len(sponsor.Orgs) != 0 {
		t.Fatalf("after the org was deleted: %+v", roles)
	}
	// A new acme is not the old sponsor's.
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	if evs, err := svc.Audit(ctx, AuditFilter{Action: "role.revoke"}); err != nil || len(evs) != 1 || evs[0].Target != "root" {
		t.Errorf("the dropped sponsorship is not audited: %+v %v", evs, err)
	}
	// With force it goes.
	if err := svc.RevokeRole(ctx, api.RoleRequest{Subject: "root", Role: "sponsor", Force: true}); err != nil {
		t.Fatal(err)
	}
	// Names that are not users or groups here are refused at once.
	for _, s := range []string{"nosuchuser-xyz", "@nosuchgroup-xyz", "Bad Name", ""} {
		if _, err := svc.AssignRole(ctx, api.RoleRequest{Subject: s, Role: "auditor"}); err == nil {
			t.Errorf("assigned a role to %q", s)
		}
	}
	if _, err := svc.AssignRole(ctx, api.RoleRequest{Subject: "root", Role: "sponsor"}); err == nil {
		t.Error("a sponsor of nothing was assigned")
	}
}

// TestKeyConflictNamesNoOtherOrgsPeer: a key already in use is refused,
// naming the peer that holds it only within the same organisation, so a
// sponsor learns nothing of another's peers.
func TestKeyConflictNamesNoOtherOrgsPeer(t *testing.T) {
	svc, _, _ := newTestService(t)
	ctx := WithActor(context.Background(), "root")
	for _, o := range []string{"acme", "globex"} {
		if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: o}); err != nil {
			t.Fatal(err)
		}
	}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := key.PublicKey().String()
	if _, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "laptop", PublicKey: pub}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.IssuePeer(ctx, "globex", api.IssuePeerRequest{Name: "server", PublicKey: pub})
	if err == nil || strings.Contains(err.Error(), "acme") || !strings.Contains(err.Error(), "of another organisation") {
		t.Errorf("the same key in another org: %v", err)
	}
	_, err = svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "phone", PublicKey: pub})
	if err == nil || !strings.Contains(err.Error(), "acme/laptop") {
		t.Errorf("the same key in the same org: %v", err)
	}
}
