package httpapi

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/authz"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// TestActivityByRole: the activity log is asked for what each role may
// see: everything for admin and auditor, a sponsor's organisations alone
// (never nil, which would be all, even when it sponsors none), and nothing
// for the others; a sponsor asking about another organisation is refused
// and audited, like the audit log's readers, before anything is read.
func TestActivityByRole(t *testing.T) {
	rig := newScopeRig(t)
	peers := func(body []byte) []string {
		var fs []api.Flow
		if err := json.Unmarshal(body, &fs); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		var out []string
		for _, f := range fs {
			out = append(out, f.Peer)
		}
		return out
	}
	all := []string{"acme/laptop", "acme/server", "globex/laptop", "globex/server"}
	for _, tc := range []struct {
		uid    uint32
		query  string
		status int
		orgs   []string
		peers  []string
	}{
		{0, "", http.StatusOK, nil, all},
		{uidAuditor, "", http.StatusOK, nil, all},
		{uidAuditor, "?org=globex", http.StatusOK, nil, []string{"globex/laptop", "globex/server"}},
		{uidSponsor, "", http.StatusOK, []string{"acme"}, []string{"acme/laptop", "acme/server"}},
		{uidSponsor, "?org=acme", http.StatusOK, []string{"acme"}, []string{"acme/laptop", "acme/server"}},
		{uidSponsor, "?peer=acme/server", http.StatusOK, []string{"acme"}, []string{"acme/server"}},
		{uidSponsor, "?org=globex", http.StatusForbidden, nil, nil},
		{uidSponsor, "?peer=globex/laptop", http.StatusForbidden, nil, nil},
		{uidExpirer, "", http.StatusForbidden, nil, nil},
		{uidNobody, "", http.StatusForbidden, nil, nil},
	} {
		_, before := rig.flows.asked()
		code, body := rig.call(tc.uid, http.MethodGet, "/v1/activity"+tc.query)
		q, after := rig.flows.asked()
		what := fmt.Sprintf("GET /v1/activity%s as uid %d", tc.query, tc.uid)
		if code != tc.status {
			t.Errorf("%s: %d, want %d: %s", what, code, tc.status, body)
			continue
		}
		if code != http.StatusOK {
			if after != before {
				t.Errorf("%s: refused, but the log was read", what)
			}
			continue
		}
		if !slices.Equal(q.Orgs, tc.orgs) || (q.Orgs == nil) != (tc.orgs == nil) {
			t.Errorf("%s: the log was asked for the organisations %#v, want %#v", what, q.Orgs, tc.orgs)
		}
		if got := peers(body); !slices.Equal(got, tc.peers) {
			t.Errorf("%s: flows of %q, want %q", what, got, tc.peers)
		}
	}
	evs, err := rig.svc.Audit(context.Background(), service.AuditFilter{Action: "denied", Org: "globex"})
	if err != nil || !slices.ContainsFunc(evs, func(e api.AuditEvent) bool {
		raw, _ := e.After.(json.RawMessage)
		return strings.Contains(string(raw), string(authz.ReadActivity))
	}) {
		t.Errorf("a sponsor's refused read of globex's activity is not audited: %v %+v", err, evs)
	}

	// A sponsorship left without organisations sees nothing.
	if err := rig.db.Update(func(tx *store.Tx) error {
		return tx.PutRole(authz.Assignment{Subject: fmt.Sprintf("uid:%d", uidSponsor), Role: authz.Sponsor})
	}); err != nil {
		t.Fatal(err)
	}
	code, body := rig.call(uidSponsor, http.MethodGet, "/v1/activity")
	if q, _ := rig.flows.asked(); code != http.StatusOK || q.Orgs == nil || len(q.Orgs) != 0 || len(peers(body)) != 0 {
		t.Errorf("a sponsor of nothing: %d %s; the log was asked for %#v", code, body, q.Orgs)
	}
}

// TestActivityQuery: each filter reaches the log as it reads it, and a
// value that does not parse is refused, named with its parameter.
func TestActivityQuery(t *testing.T) {
	rig := newScopeRig(t)
	get := func(query string) (int, []byte) {
		return rig.call(0, http.MethodGet, "/v1/activity?"+query)
	}
	// The rig's flows end an hour from now.
	since, until := time.Now().UTC().Truncate(time.Second), time.Now().UTC().Truncate(time.Second).Add(24*time.Hour)
	code, body := get("org=acme&peer=acme/laptop&dest=10.20.0.77/24&port=443&proto=6&end=closed&since=" + since.Format(time.RFC3339) + "&until=" + until.Format(time.RFC3339) + "&limit=1")
	var fs []api.Flow
	if code != http.StatusOK || json.Unmarshal(body, &fs) != nil || len(fs) != 1 || fs[0].Peer != "acme/laptop" {
		t.Fatalf("every filter: %d %s", code, body)
	}
	q, _ := rig.flows.asked()
	if q.Orgs != nil || q.Org != "acme" || q.Peer != "acme/laptop" || q.Dest != netip.MustParsePrefix("10.20.0.0/24") || q.Port != 443 ||
		q.Proto != "tcp" || q.End != api.FlowClosed || q.Limit != 1 ||
		!q.Since.Equal(since) || !q.Until.Equal(until) {
		t.Errorf("every filter: the log was asked %+v", q)
	}
	for _, tc := range []struct{ query, dest, proto string }{
		{"dest=10.20.0.10", "10.20.0.10/32", ""},
		{"dest=::ffff:10.20.0.10", "10.20.0.10/32", ""},
		{"dest=fd00::/64", "fd00::/64", ""},
		{"proto=UDP", "", "udp"},
		{"proto=58", "", "58"},
	} {
		if code, body := get(tc.query); code != http.StatusOK {
			t.Errorf("%s: %d %s", tc.query, code, body)
			continue
		}
		q, _ := rig.flows.asked()
		if q.Dest.String() != cmp.Or(tc.dest, "invalid Prefix") || q.Proto != tc.proto {
			t.Errorf("%s: the log was asked for dest %s, proto %q", tc.query, q.Dest, q.Proto)
		}
	}
	for _, bad := range []string{
		"dest=10.20.0.300", "dest=fe80::1%eth0", "dest=acme",
		"port=0", "port=65536", "port=https",
		"proto=sctpx", "proto=256",
		"end=finished", "end=timed_out",
		"since=yesterday", "until=24h",
		"limit=0", "limit=-3", "limit=many",
	} {
		code, body := get(url.PathEscape(bad))
		k, v, _ := strings.Cut(bad, "=")
		var e api.Error
		if code != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Message, fmt.Sprintf("%s=%q", k, v)) {
			t.Errorf("%s: %d %s; want 400 naming %s=%q", bad, code, body, k, v)
		}
	}
}

// TestActivityTopByRole: top adds up what the caller may read, and no
// more; its list length is bounded.
func TestActivityTopByRole(t *testing.T) {
	rig := newScopeRig(t)
	peers := func(body []byte) []string {
		var top api.ActivityTop
		if err := json.Unmarshal(body, &top); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		var out []string
		for _, p := range top.Peers {
			out = append(out, p.Peer)
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		uid    uint32
		query  string
		status int
		peers  []string
	}{
		{uidAuditor, "", http.StatusOK, []string{"acme/laptop", "acme/server", "globex/laptop", "globex/server"}},
		{uidSponsor, "", http.StatusOK, []string{"acme/laptop", "acme/server"}},
		{uidSponsor, "?limit=1", http.StatusOK, nil},
		{uidSponsor, "?org=globex", http.StatusForbidden, nil},
		{uidExpirer, "", http.StatusForbidden, nil},
		{0, "?limit=101", http.StatusBadRequest, nil},
		{0, "?end=closed", http.StatusBadRequest, nil},
	} {
		code, body := rig.call(tc.uid, http.MethodGet, "/v1/activity/top"+tc.query)
		what := fmt.Sprintf("GET /v1/activity/top%s as uid %d", tc.query, tc.uid)
		switch {
		case code != tc.status:
			t.Errorf("%s: %d, want %d: %s", what, code, tc.status, body)
		case code == http.StatusOK && tc.peers == nil:
			if got := peers(body); len(got) != 1 || !strings.HasPrefix(got[0], "acme/") {
				t.Errorf("%s: peers %q, want one of acme's", what, got)
			}
		case code == http.StatusOK:
			if got := peers(body); !slices.Equal(got, tc.peers) {
				t.Errorf("%s: peers %q, want %q", what, got, tc.peers)
			}
		}
	}
}
