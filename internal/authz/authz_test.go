package authz

import (
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	as := []Assignment{
		{Subject: "alice", Role: Sponsor, Orgs: []string{"acme", "initech"}},
		{Subject: "@audit", Role: Auditor},
		{Subject: "carol", Role: Sponsor, Orgs: []string{"acme"}},
		{Subject: "@ops", Role: Admin},
		{Subject: "@sponsors", Role: Sponsor, Orgs: []string{"globex"}},
		{Subject: "extranet-expire", Role: Expirer},
	}
	for _, tc := range []struct {
		caller  Caller
		action  Action
		org     string
		allowed bool
		filter  string // the organisations a listing keeps, joined
		needs   string
	}{
		{Caller{User: "root", UID: 0}, ManageRoles, "", true, "", ""},
		{Caller{User: "dave", UID: 1, Groups: []string{"ops"}}, ImportState, "", true, "", ""},
		{Caller{User: "alice", UID: 2}, ManagePeers, "acme", true, "", ""},
		{Caller{User: "alice", UID: 2}, ManagePeers, "globex", false, "", "admin or sponsor of globex"},
		{Caller{User: "alice", UID: 2}, ManageOrgs, "acme", false, "", "admin"},
		// A sponsor manages its organisations' groups (within the
		// ceiling, which the service checks), and no one else's.
		{Caller{User: "alice", UID: 2}, ManageGroups, "initech", true, "", ""},
		{Caller{User: "alice", UID: 2}, ManageGroups, "globex", false, "", "admin or sponsor of globex"},
		{Caller{User: "bob", UID: 4, Groups: []string{"audit"}}, ManageGroups, "acme", false, "", "admin or sponsor of acme"},
		{Caller{User: "alice", UID: 2}, ReadOrgs, "", true, "acme,initech", ""},
		{Caller{User: "alice", UID: 2}, ExportState, "", false, "", "admin"},
		{Caller{User: "alice", UID: 2}, VerifyAudit, "", false, "", "admin or auditor"},
		// A user's own role replaces its groups': carol, in @audit, is a
		// sponsor of acme and nothing else, while an auditor who is also a
		// sponsor through its groups lists everything.
		{Caller{User: "carol", UID: 3, Groups: []string{"audit"}}, ReadPeers, "", true, "acme", ""},
		{Caller{User: "carol", UID: 3, Groups: []string{"audit"}}, VerifyAudit, "", false, "", "admin or auditor"},
		{Caller{User: "frank", UID: 7, Groups: []string{"audit", "sponsors"}}, ReadPeers, "", true, "", ""},
		{Caller{User: "bob", UID: 4, Groups: []string{"audit"}}, ReadSecrets, "acme", false, "", "admin or sponsor of acme"},
		{Caller{User: "bob", UID: 4, Groups: []string{"audit"}}, ReadPeers, "acme", true, "", ""},
		{Caller{User: "bob", UID: 4, Groups: []string{"audit"}}, RunExpire, "", false, "", "admin or expirer"},
		// A group named like a user grants nothing to that user.
		{Caller{User: "audit", UID: 5}, ReadAudit, "", false, "", "admin, auditor or sponsor"},
		{Caller{User: "eve", UID: 6}, ReadWhoAmI, "", true, "", ""},
		// Partner activity: a sponsor reads its organisations' alone, an
		// auditor everyone's, an expirer none.
		{Caller{User: "alice", UID: 2}, ReadActivity, "", true, "acme,initech", ""},
		{Caller{User: "alice", UID: 2}, ReadActivity, "acme", true, "", ""},
		{Caller{User: "alice", UID: 2}, ReadActivity, "globex", false, "", "admin, auditor or sponsor of globex"},
		{Caller{User: "bob", UID: 4, Groups: []string{"audit"}}, ReadActivity, "", true, "", ""},
		{Caller{User: "bob", UID: 4, Groups: []string{"audit"}}, ReadActivity, "globex", true, "", ""},
		{Caller{User: "extranet-expire", UID: 8}, ReadActivity, "", false, "", "admin, auditor or sponsor"},
		{Caller{User: "eve", UID: 6}, ReadActivity, "", false, "", "admin, auditor or sponsor"},
		{Caller{User: "eve", UID: 6}, ReadStatus, "", false, "", "admin, auditor or sponsor"},
	} {
		d := For(tc.caller, as).Decide(tc.action, tc.org)
		var f []string
		for _, o := range []string{"acme", "globex", "initech"} {
			if d.Filter[o] {
				f = append(f, o)
			}
		}
		if d.Allowed != tc.allowed || strings.Join(f, ",") != tc.filter || d.Needs != tc.needs {
			t.Errorf("%s %s %q: %+v, want allowed %v filter %q needs %q", tc.caller.User, tc.action, tc.org, d, tc.allowed, tc.filter, tc.needs)
		}
	}
	if got := strings.Join(For(Caller{User: "frank", UID: 7, Groups: []string{"audit", "sponsors"}}, as).Describe(), "; "); got != "sponsor of globex; auditor" {
		t.Errorf("describe: %q", got)
	}
	if _, err := ParseRole("root"); err == nil {
		t.Error("role root parsed")
	}
}
