package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/extranetgw/extranet/internal/authz"
)

// TestEveryRouteHasAPermission: every API route is in this table, with who
// may call it. A route added without a row here fails, so none can ship
// without its permission being decided and tested.
func TestEveryRouteHasAPermission(t *testing.T) {
	// Who may: admin always; "sponsor" means the sponsor of the
	// organisation the request is about (acme here; globex is not theirs),
	// or, for a route about no organisation, any sponsor.
	want := map[string]string{
		"GET /v1/status": "admin sponsor auditor",
		"GET /v1/whoami": "admin sponsor auditor expirer nobody",

		"POST /v1/cluster/switchover": "admin",

		"POST /v1/orgs":               "admin",
		"GET /v1/orgs":                "admin sponsor auditor",
		"GET /v1/orgs/{org}":          "admin sponsor auditor",
		"DELETE /v1/orgs/{org}":       "admin",
		"POST /v1/orgs/{org}/grant":   "admin",
		"POST /v1/orgs/{org}/ungrant": "admin",
		"POST /v1/orgs/{org}/suspend": "admin",
		"POST /v1/orgs/{org}/resume":  "admin",
		"POST /v1/orgs/{org}/extend":  "admin",
		"POST /v1/orgs/{org}/peers":   "admin sponsor",

		"GET /v1/orgs/{org}/groups":                 "admin sponsor auditor",
		"POST /v1/orgs/{org}/groups":                "admin sponsor",
		"GET /v1/orgs/{org}/groups/{name}":          "admin sponsor auditor",
		"POST /v1/orgs/{org}/groups/{name}/grant":   "admin sponsor",
		"POST /v1/orgs/{org}/groups/{name}/ungrant": "admin sponsor",
		"DELETE /v1/orgs/{org}/groups/{name}":       "admin sponsor",

		"GET /v1/peers":                       "admin sponsor auditor",
		"GET /v1/peers/{org}/{name}":          "admin sponsor auditor",
		"GET /v1/peers/{org}/{name}/config":   "admin sponsor",
		"POST /v1/peers/{org}/{name}/suspend": "admin sponsor",
		"POST /v1/peers/{org}/{name}/resume":  "admin sponsor",
		"POST /v1/peers/{org}/{name}/revoke":  "admin sponsor",
		"POST /v1/peers/{org}/{name}/rotate":  "admin sponsor",
		"POST /v1/peers/{org}/{name}/extend":  "admin sponsor",
		"POST /v1/peers/{org}/{name}/move":    "admin sponsor",

		"POST /v1/orgs/{org}/invites":            "admin sponsor",
		"GET /v1/invites":                        "admin sponsor auditor",
		"POST /v1/invites/{org}/{name}/revoke":   "admin sponsor",
		"GET /v1/requests":                       "admin sponsor auditor",
		"POST /v1/requests/{org}/{name}/approve": "admin sponsor",
		"POST /v1/requests/{org}/{name}/deny":    "admin sponsor",

		"POST /v1/expire": "admin expirer",
		"POST /v1/import": "admin",
		"GET /v1/export":  "admin",
		"GET /v1/backup":  "admin",

		"GET /v1/audit":        "admin sponsor auditor",
		"GET /v1/audit/verify": "admin auditor",

		"GET /v1/activity":     "admin sponsor auditor",
		"GET /v1/activity/top": "admin sponsor auditor",

		"GET /v1/roles":         "admin auditor",
		"POST /v1/roles":        "admin",
		"POST /v1/roles/revoke": "admin",
	}
	assignments := []authz.Assignment{
		{Subject: "@netops", Role: authz.Admin},
		{Subject: "alice", Role: authz.Sponsor, Orgs: []string{"acme"}},
		{Subject: "@audit", Role: authz.Auditor},
		{Subject: "extranet-expire", Role: authz.Expirer},
	}
	callers := map[string]authz.Caller{
		"admin":   {User: "nina", UID: 1001, Groups: []string{"netops"}},
		"sponsor": {User: "alice", UID: 1002, Groups: []string{"staff"}},
		"auditor": {User: "bob", UID: 1003, Groups: []string{"audit"}},
		"expirer": {User: "extranet-expire", UID: 999},
		"nobody":  {User: "eve", UID: 1004, Groups: []string{"extranet"}},
	}
	s := &Server{}
	seen := map[string]bool{}
	for _, rt := range s.routeTable() {
		seen[rt.pattern] = true
		allowed, ok := want[rt.pattern]
		if !ok {
			t.Errorf("route %s has no row in this test: decide who may call it", rt.pattern)
			continue
		}
		method, path, _ := strings.Cut(rt.pattern, " ")
		// The organisation a request is about is read from where the
		// handler reads it: a route with {org} that decided on anything
		// else would let a sponsor act on another organisation.
		if strings.Contains(path, "{org}") && rt.org == nil {
			t.Errorf("route %s is about an organisation but decides without it", rt.pattern)
		}
		// TestEveryRouteEveryQueryEveryRole tries every parameter it
		// knows on every route: one it does not know would go untried.
		for _, p := range rt.params {
			if _, ok := knownParams[p]; !ok {
				t.Errorf("route %s reads ?%s=, which TestEveryRouteEveryQueryEveryRole does not try: add it to knownParams", rt.pattern, p)
			}
		}
		for _, org := range []string{"acme", "globex"} {
			url := strings.NewReplacer("{org}", org, "{name}", "laptop").Replace(path)
			if !strings.Contains(path, "{org}") && rt.org != nil {
				url += "?org=" + org
			}
			req := httptest.NewRequest(method, url, nil)
			req.SetPathValue("org", org)
			about := ""
			if rt.org != nil {
				var err error
				if about, err = rt.org(req); err != nil {
					t.Errorf("route %s: %v", rt.pattern, err)
				}
				if about != org {
					t.Errorf("route %s: decides about %q for a request about %s", rt.pattern, about, org)
				}
			}
			for role, c := range callers {
				d := authz.For(c, assignments).Decide(rt.action, about)
				may := strings.Contains(" "+allowed+" ", " "+role+" ")
				if role == "sponsor" && org == "globex" && rt.org != nil {
					may = false
				}
				if d.Allowed && d.Filter != nil && !rt.filtered {
					t.Errorf("%s by %s: a partial view on a route that cannot filter", rt.pattern, role)
				}
				if d.Allowed != may {
					t.Errorf("%s on %s by %s: allowed %v, want %v (needs %q)", rt.pattern, org, role, d.Allowed, may, d.Needs)
				}
				if !d.Allowed && d.Needs == "" {
					t.Errorf("%s by %s: a refusal that does not say which role it needs", rt.pattern, role)
				}
			}
			// Unasked, a sponsor's listing shows its organisations alone.
			if rt.filtered && rt.org == nil || rt.filtered && about == "" {
				d := authz.For(callers["sponsor"], assignments).Decide(rt.action, "")
				if !d.Allowed || len(d.Filter) != 1 || !d.Filter["acme"] {
					t.Errorf("%s by a sponsor of acme, unasked: %+v", rt.pattern, d)
				}
			}
		}
	}
	// Every action is some route's, and a refusal of it reads as words.
	used := map[authz.Action]bool{}
	for _, rt := range s.routeTable() {
		used[rt.action] = true
	}
	for _, a := range authz.Actions {
		if !used[a] {
			t.Errorf("action %s is no route's", a)
		}
		if actionText[a] == "" && a != authz.ReadWhoAmI {
			t.Errorf("action %s has no words for its refusal", a)
		}
	}
	for p := range want {
		if !seen[p] {
			t.Errorf("the test names %s, which is not a route", p)
		}
	}
	// root is admin with no assignment at all.
	if d := authz.For(authz.Caller{User: "root"}, nil).Decide(authz.ManageRoles, ""); !d.Allowed {
		t.Error("root is not admin")
	}
}

// TestRefusalIsForbidden: a refused request answers 403 with the code
// the CLI turns into exit 5, and names the role it needs.
func TestRefusalIsForbidden(t *testing.T) {
	d := authz.For(authz.Caller{User: "eve", UID: 1004}, nil).Decide(authz.ManageOrgs, "acme")
	if d.Allowed || d.Needs != "admin" {
		t.Fatalf("decision %+v", d)
	}
	rec := httptest.NewRecorder()
	writeError(rec, forbidden("eve", authz.ManageOrgs, "acme", d.Needs))
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), `"code": "forbidden"`) || !strings.Contains(rec.Body.String(), "needs the role admin") {
		t.Errorf("refusal: %d %s", rec.Code, rec.Body)
	}
}
