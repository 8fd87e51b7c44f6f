package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os/user"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/activity"
	"github.com/extranetgw/extranet/internal/authz"
	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// knownParams is every query parameter the API knows, with values that
// matter: the caller's own organisation, another, one that does not
// exist, and ill-formed ones. A route that reads a parameter not listed
// here fails TestEveryRouteHasAPermission, so it is tried below.
var knownParams = map[string][]string{
	"org":     {"acme", "globex", "nosuch", "", "ACME"},
	"peer":    {"acme/laptop", "globex/laptop", "acme/nosuch", "acme", "globex"},
	"state":   {"active"},
	"action":  {"peer."},
	"actor":   {"root"},
	"since":   {"2000-01-01T00:00:00Z"},
	"until":   {"2999-01-01T00:00:00Z"},
	"force":   {"true"},
	"move_to": {"default"},
	"dest":    {"10.20.0.10", "10.30.0.0/24"},
	"port":    {"443"},
	"proto":   {"tcp"},
	"end":     {"timed out"},
	// Above what the rig holds: a limit keeps the newest of what the
	// caller may see, which is not a part of what admin is shown.
	"limit": {"1000"},
}

// unknownParams are names no route reads, some close to real ones.
var unknownParams = []string{"bogus", "orgs", "Org", "organisation", "peer_org"}

// The callers: root is admin; the others have no account on this host, so
// they are named uid:N, and their roles are written straight to the store.
const (
	uidSponsor uint32 = 3999999901 + iota
	uidAuditor
	uidExpirer
	uidNobody
)

type scopeRole struct {
	name string
	uid  uint32
}

var scopeRoles = []scopeRole{{"admin", 0}, {"auditor", uidAuditor}, {"sponsor", uidSponsor}, {"expirer", uidExpirer}, {"nobody", uidNobody}}

type scopeRig struct {
	srv *Server
	svc *service.Service
	db  *store.DB
	// tokens are each organisation's invite token, with a device left.
	tokens map[string]string
	// ids are the names to put in a route's path, by organisation and
	// by the kind of object the path is about (peers, groups, invites,
	// requests).
	ids map[string]map[string]string
	// markers are globex data: none may reach the sponsor of acme.
	markers []string
	// flows is the activity log, with each organisation's flows.
	flows *askedLog
}

// askedLog is an activity log that remembers what it was last asked.
type askedLog struct {
	*activity.Log
	mu    sync.Mutex
	reads int
	last  activity.Query
}

func (l *askedLog) Read(q activity.Query) ([]api.Flow, error) {
	l.mu.Lock()
	l.reads++
	l.last = q
	l.mu.Unlock()
	return l.Log.Read(q)
}

// asked is the last query and how many reads there were.
func (l *askedLog) asked() (activity.Query, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, l.reads
}

// newScopeRig seeds two organisations, each with peers, a group, an
// invite, a request and their audit events.
func newScopeRig(t *testing.T) *scopeRig {
	t.Helper()
	for _, uid := range []uint32{uidSponsor, uidAuditor, uidExpirer, uidNobody} {
		if _, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
			t.Fatalf("uid %d has an account on this host; the test needs callers without one", uid)
		}
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "extranet.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	plan, err := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 24)
	if err != nil {
		t.Fatal(err)
	}
	flows, err := activity.Open(t.TempDir(), activity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flows.Close() })
	asked := &askedLog{Log: flows}
	svc := service.New(service.Options{
		DB: db, Plan: plan, Endpoint: "vpn.example.com:51820", EnrollURL: "https://vpn.example.com:8443",
		GatewayPublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", Activity: asked,
	})
	rig := &scopeRig{srv: New(svc, slog.New(slog.NewTextHandler(io.Discard, nil))), svc: svc, db: db, tokens: map[string]string{}, ids: map[string]map[string]string{}, flows: asked}
	if err := db.Update(func(tx *store.Tx) error {
		for _, a := range []authz.Assignment{
			{Subject: fmt.Sprintf("uid:%d", uidSponsor), Role: authz.Sponsor, Orgs: []string{"acme"}},
			{Subject: fmt.Sprintf("uid:%d", uidAuditor), Role: authz.Auditor},
			{Subject: fmt.Sprintf("uid:%d", uidExpirer), Role: authz.Expirer},
		} {
			if err := tx.PutRole(a); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx := service.WithActor(context.Background(), "root")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range []struct{ name, grant, host, contact, source string }{
		{"acme", "10.20.0.0/24", "10.20.0.10/32", "Wile E. Coyote", "203.0.113.7"},
		{"globex", "10.30.0.0/24", "10.30.0.10/32", "Hank Scorpio", "198.51.100.9"},
	} {
		_, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: o.name, Grants: []string{o.grant}})
		must(err)
		_, err = svc.CreateGroup(ctx, o.name, api.CreateGroupRequest{Name: "laptop", Grants: []string{o.host}})
		must(err)
		var keys []string
		for i, n := range []string{"laptop", "server"} {
			p, err := svc.IssuePeer(ctx, o.name, api.IssuePeerRequest{Name: n})
			must(err)
			keys = append(keys, p.Peer.PublicKey, p.Peer.Address)
			// After the organisation was made: a sponsor reads nothing
			// from before (a deleted namesake's).
			closed := time.Now().UTC().Truncate(time.Minute).Add(time.Hour + time.Duration(len(keys))*time.Minute)
			f := api.Flow{Opened: closed.Add(-time.Minute), Closed: closed, Org: o.name, Group: api.DefaultGroup, Peer: p.Peer.ID(), Address: p.Peer.Address,
				Proto: "tcp", Dest: strings.TrimSuffix(o.host, "/32"), Port: 443, BytesOut: 100, BytesIn: 1000, PacketsOut: 2, PacketsIn: 3, End: api.FlowClosed}
			if i == 1 {
				f.Proto, f.Port, f.End = "udp", 53, api.FlowTimedOut
			}
			must(flows.Append(f))
		}
		inv, err := svc.CreateInvite(ctx, o.name, api.CreateInviteRequest{Contact: o.contact, Devices: 2})
		must(err)
		_, token, _ := strings.Cut(inv.Link, "#")
		rig.tokens[o.name] = token
		k, err := wgtypes.GeneratePrivateKey()
		must(err)
		acc, err := svc.Enroll(context.Background(), o.source, api.EnrollRequest{Token: token, Device: "tablet", PublicKey: k.PublicKey().String(), KeyFrom: service.KeyFromPasted})
		must(err)
		_, reqID, _ := strings.Cut(acc.Request, "/")
		_, invID, _ := strings.Cut(inv.Invite.ID, "/")
		rig.ids[o.name] = map[string]string{"peers": "laptop", "groups": "laptop", "invites": invID, "requests": reqID}
		if o.name == "globex" {
			rig.markers = append(keys, o.grant[:len("10.30.0.")], o.contact, o.source, k.PublicKey().String(), inv.Invite.ID, "globex/"+reqID)
		}
	}
	return rig
}

// call makes one request as the caller with uid, as the socket would
// name it.
func (r *scopeRig) call(uid uint32, method, target string) (int, []byte) {
	return r.send(uid, method, target, "{}")
}

// send makes one request with a body.
func (r *scopeRig) send(uid uint32, method, target, body string) (int, []byte) {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	cred := peer{cred: &unix.Ucred{Uid: uid, Gid: uid}, groups: []uint32{}}
	rec := httptest.NewRecorder()
	r.srv.ServeHTTP(rec, req.WithContext(context.WithValue(req.Context(), credKey{}, cred)))
	return rec.Code, rec.Body.Bytes()
}

// snapshot is the store as text, but for refusals (which are audited).
func (r *scopeRig) snapshot(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	put := func(v any) error { fmt.Fprintf(&b, "%+v\n", v); return nil }
	err := r.db.View(func(tx *store.Tx) error {
		as, err := tx.Roles()
		put(as)
		return errors.Join(err,
			tx.Orgs(func(o *store.Org) error { return put(*o) }),
			tx.Peers("", func(p *store.Peer) error { return put(*p) }),
			tx.Invites("", func(i *store.Invite) error { return put(*i) }),
			tx.Requests("", func(q *store.Request) error { return put(*q) }),
			tx.Events(0, func(e *store.Event) error {
				if e.Action == "denied" {
					return nil
				}
				return put(e.Seq)
			}),
		)
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// param is one query parameter as sent; queries keep their order and
// may repeat a name.
type param struct{ k, v string }

func encode(q []param) string {
	parts := make([]string, len(q))
	for i, p := range q {
		parts[i] = url.QueryEscape(p.k) + "=" + url.QueryEscape(p.v)
	}
	return strings.Join(parts, "&")
}

// queries are what each route is tried with: nothing, every known
// parameter and value alone, every pair of two known parameters, each
// parameter twice, unknown names, and queries that do not parse.
func queries() [][]param {
	out := [][]param{nil}
	var singles []param
	for _, k := range slices.Sorted(maps.Keys(knownParams)) {
		for _, v := range knownParams[k] {
			singles = append(singles, param{k, v})
		}
	}
	for _, p := range singles {
		out = append(out, []param{p})
	}
	for i, a := range singles {
		for _, b := range singles[i+1:] {
			if a.k != b.k {
				out = append(out, []param{a, b})
			}
		}
	}
	for k, vs := range knownParams {
		out = append(out, []param{{k, vs[0]}, {k, vs[0]}}, []param{{k, vs[0]}, {k, vs[len(vs)-1]}})
	}
	for _, u := range unknownParams {
		out = append(out, []param{{u, "acme"}}, []param{{u, "globex"}}, []param{{"org", "acme"}, {u, "globex"}})
	}
	return out
}

// malformed are raw queries that do not parse as a whole.
var malformed = []string{"org=acme;peer=globex/laptop", "org=%zz", "org=acme&peer=%2"}

// queryScope is the organisation a query is about and the peer it names,
// as a reader of the API would take it.
func queryScope(q []param) (org, peer string) {
	for _, p := range q {
		switch p.k {
		case "org":
			org = p.v
		case "peer":
			peer = p.v
		}
	}
	if org == "" {
		org, _, _ = strings.Cut(peer, "/")
	}
	return org, peer
}

// ambiguous tells whether a query must be refused, whatever the route and
// the caller: an unknown parameter, a repeated one, or two that name
// different organisations.
func ambiguous(q []param, path string) string {
	seen := map[string]bool{}
	org, peer := "", ""
	for _, p := range q {
		if _, ok := knownParams[p.k]; !ok {
			return p.k
		}
		if seen[p.k] {
			return p.k
		}
		seen[p.k] = true
		switch p.k {
		case "org":
			org = p.v
		case "peer":
			peer = p.v
		}
		// The path names the organisation; the query may not name one.
		if (p.k == "org" || p.k == "peer") && strings.Contains(path, "{org}") {
			return p.k
		}
	}
	if porg, _, ok := strings.Cut(peer, "/"); ok && org != "" && porg != org {
		return "peer"
	}
	return ""
}

// itemOrg is the organisation an item of an answer is about: its org, the
// first part of an audit event's target, or an organisation's name. An
// item about none (a role assignment) has none.
func itemOrg(m map[string]any) string {
	if o, ok := m["org"].(string); ok {
		return o
	}
	if tgt, ok := m["target"].(string); ok {
		o, _, _ := strings.Cut(tgt, "/")
		return o
	}
	if _, isOrg := m["blocks"]; isOrg {
		n, _ := m["name"].(string)
		return n
	}
	return ""
}

// sponsorEvents are the families of audit events about an organisation,
// which its sponsor reads; role changes and the gateway's own events are
// about no organisation. A refusal is about the organisation it records.
var sponsorEvents = []string{"org.", "peer.", "group.", "invite.", "request.", "enroll.request", "enroll.config"}

// maySee says whether a role may see an item of a listing.
func maySee(role string, m map[string]any) bool {
	switch role {
	case "admin", "auditor":
		return true
	case "sponsor":
		if itemOrg(m) != "acme" {
			return false
		}
		if action, isEvent := m["action"].(string); isEvent {
			if action == "denied" {
				after, _ := m["after"].(map[string]any)
				return after["org"] == "acme"
			}
			return slices.ContainsFunc(sponsorEvents, func(f string) bool { return action == f || strings.HasSuffix(f, ".") && strings.HasPrefix(action, f) })
		}
		return true
	}
	return false
}

// inScope says whether an item lies within what the query asked for.
func inScope(m map[string]any, org, peer string) bool {
	if peer != "" {
		if tgt, ok := m["target"].(string); ok {
			return tgt == peer
		}
	}
	return org == "" || itemOrg(m) == org
}

func list(body []byte) ([]map[string]any, bool) {
	var items []map[string]any
	if json.Unmarshal(body, &items) != nil {
		return nil, false
	}
	return items, true
}

// TestEveryRouteEveryQueryEveryRole: every route of the real table, with
// every query parameter the API knows, alone, in pairs and repeated, and
// with unknown ones, as admin, auditor, sponsor of acme, expirer and a
// caller without a role. Whatever comes back is what that caller may see
// and what the query asked for, and nothing of globex reaches acme's
// sponsor. An unknown parameter, a repeated one, or two that name
// different organisations are refused (400) for everyone.
func TestEveryRouteEveryQueryEveryRole(t *testing.T) {
	rig := newScopeRig(t)
	qs := queries()
	// Reads first: a change that got through by mistake would leave
	// them nothing to read.
	routes := rig.srv.routeTable()
	isWrite := func(rt route) int {
		if strings.HasPrefix(rt.pattern, "GET ") {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(routes, func(a, b route) int { return cmp.Compare(isWrite(a), isWrite(b)) })
	for _, rt := range routes {
		method, path, _ := strings.Cut(rt.pattern, " ")
		for _, org := range []string{"acme", "globex"} {
			if !strings.Contains(path, "{org}") && org == "globex" {
				continue
			}
			base := strings.Replace(path, "{org}", org, 1)
			if strings.Contains(base, "{name}") {
				segs := strings.Split(path, "/")
				kind := segs[slices.Index(segs, "{org}")-1]
				if i := slices.Index(segs, "{name}"); segs[i-1] != "{org}" {
					kind = segs[i-1]
				}
				name := rig.ids[org][kind]
				if name == "" {
					name = "laptop"
				}
				base = strings.Replace(base, "{name}", name, 1)
			}
			if method == http.MethodGet {
				for _, q := range qs {
					rig.checkRead(t, rt, path, base, org, q)
				}
				for _, raw := range malformed {
					for _, role := range scopeRoles {
						if code, body := rig.call(role.uid, method, base+"?"+raw); code != http.StatusBadRequest {
							t.Errorf("%s?%s as %s: %d, want 400 (the query does not parse): %.200s", base, raw, role.name, code, body)
						}
					}
				}
				continue
			}
			rig.checkWrite(t, rt, method, path, base, org)
		}
	}
}

// checkRead tries one read with one query as every role.
func (r *scopeRig) checkRead(t *testing.T, rt route, path, base, inPath string, q []param) {
	target := base
	if len(q) > 0 {
		target += "?" + encode(q)
	}
	org, peer := queryScope(q)
	byPath := strings.Contains(path, "{org}")
	if byPath {
		org, peer = inPath, ""
	}
	bad := ambiguous(q, path)
	var adminCode int
	var adminBody []byte
	for _, role := range scopeRoles {
		code, body := r.call(role.uid, http.MethodGet, target)
		what := fmt.Sprintf("GET %s as %s", target, role.name)
		if role.name == "admin" {
			adminCode, adminBody = code, body
		}
		if role.name == "sponsor" {
			r.checkMarkers(t, what, target, body)
			if code == http.StatusOK && bytes.Contains(body, []byte("globex")) {
				t.Errorf("%s: answer names globex: %.300s", what, body)
			}
		}
		if bad != "" {
			if code != http.StatusBadRequest || !namesParam(body, q) {
				t.Errorf("%s: %d, want 400 naming a parameter (%q is ambiguous or unknown): %.300s", what, code, bad, body)
			}
			continue
		}
		if code == http.StatusBadRequest {
			// A refused parameter is refused for everyone alike.
			if adminCode != http.StatusBadRequest || !bytes.Equal(body, adminBody) {
				t.Errorf("%s: 400 %.200s, but admin gets %d", what, body, adminCode)
			}
			continue
		}
		// About another organisation, or one that does not exist,
		// acme's sponsor hears the same; by its path, that is a refusal.
		if role.name == "sponsor" && org != "" && org != "acme" && (code == http.StatusNotFound || byPath && code != http.StatusForbidden) {
			t.Errorf("%s: %d, want 403: acme's sponsor asked about %s", what, code, org)
		}
		if code != http.StatusOK {
			continue
		}
		if rt.pattern == "GET /v1/status" {
			r.checkStatus(t, what, role.name, body)
		}
		items, isList := list(body)
		if !isList {
			continue
		}
		admin, _ := list(adminBody)
		var want []map[string]any
		for _, m := range admin {
			if maySee(role.name, m) {
				want = append(want, m)
			}
		}
		if len(items) != len(want) || len(items) > 0 && !reflect.DeepEqual(items, want) {
			t.Errorf("%s: %d items, want the %d of admin's %d that %s may see\n got: %.400s", what, len(items), len(want), len(admin), role.name, body)
		}
		for _, m := range items {
			if !maySee(role.name, m) {
				t.Errorf("%s: an item %s may not see: %v", what, role.name, m)
			}
		}
		if out := slices.IndexFunc(items, func(m map[string]any) bool { return !inScope(m, org, peer) }); out >= 0 {
			// A route that ignores a parameter must answer as if it
			// had not been given.
			var rest []param
			for _, p := range q {
				if p.k != "org" && p.k != "peer" {
					rest = append(rest, p)
				}
			}
			wo := base
			if len(rest) > 0 {
				wo += "?" + encode(rest)
			}
			if c, b := r.call(role.uid, http.MethodGet, wo); c != code || !bytes.Equal(b, body) {
				t.Errorf("%s: %v is outside the query's organisation %q or peer %q, and the answer is not the one without them", what, items[out], org, peer)
			}
		}
	}
}

// checkMarkers: nothing of globex reaches acme's sponsor, but what it
// sent itself.
func (r *scopeRig) checkMarkers(t *testing.T, what, target string, body []byte) {
	for _, m := range r.markers {
		if bytes.Contains(body, []byte(m)) && !strings.Contains(target, m) {
			t.Errorf("%s: answer holds globex's %q: %.300s", what, m, body)
		}
	}
}

// namesParam tells whether an error answer names a parameter of the
// query, so that the caller knows what to fix.
func namesParam(body []byte, q []param) bool {
	var e api.Error
	if json.Unmarshal(body, &e) != nil {
		return false
	}
	return slices.ContainsFunc(q, func(p param) bool {
		return strings.Contains(e.Message, strconv.Quote(p.k)) || strings.Contains(e.Message, p.k+"=")
	})
}

// checkStatus: a status counts only what the role may see.
func (r *scopeRig) checkStatus(t *testing.T, what, role string, body []byte) {
	var st api.Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	_, ob := r.call(0, http.MethodGet, "/v1/orgs")
	_, pb := r.call(0, http.MethodGet, "/v1/peers?state=active")
	orgs, _ := list(ob)
	peers, _ := list(pb)
	orgs = slices.DeleteFunc(orgs, func(m map[string]any) bool { return !maySee(role, m) })
	peers = slices.DeleteFunc(peers, func(m map[string]any) bool { return !maySee(role, m) })
	if st.Orgs != len(orgs) || st.PeersActive != len(peers) {
		t.Errorf("%s: counts %d organisations and %d active peers, want %d and %d", what, st.Orgs, st.PeersActive, len(orgs), len(peers))
	}
}

// checkWrite tries a change only where it must change nothing: as a role
// that may not make it, and with a query that must be refused; the store
// is the same after (but for the refusal's audit event).
func (r *scopeRig) checkWrite(t *testing.T, rt route, method, path, base, org string) {
	qs := [][]param{nil, {{"org", "globex"}, {"peer", "acme/laptop"}}}
	for k, vs := range knownParams {
		for _, v := range vs {
			qs = append(qs, []param{{k, v}})
		}
		qs = append(qs, []param{{k, vs[0]}, {k, vs[0]}})
	}
	for _, u := range unknownParams {
		qs = append(qs, []param{{u, "globex"}})
	}
	before := r.snapshot(t)
	defer func() {
		if after := r.snapshot(t); after != before {
			t.Errorf("%s %s: a request that had to be refused changed the store", method, base)
		}
	}()
	for _, q := range qs {
		target := base
		if len(q) > 0 {
			target += "?" + encode(q)
		}
		bad := ambiguous(q, path)
		if bad == "" && len(q) > 0 {
			// A known parameter alone: the route may read it (force),
			// so only refused roles try it.
			continue
		}
		for _, role := range scopeRoles {
			about := ""
			if rt.org != nil {
				about = org
			}
			grants := authz.Grants{}
			if err := r.db.View(func(tx *store.Tx) error {
				as, err := tx.Roles()
				grants = authz.For(authz.Caller{User: fmt.Sprintf("uid:%d", role.uid), UID: role.uid}, as)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			mayChange := grants.Decide(rt.action, about).Allowed
			if bad == "" && mayChange {
				continue
			}
			if role.name == "sponsor" && org == "globex" && mayChange {
				t.Errorf("%s %s: acme's sponsor may change globex", method, target)
			}
			code, body := r.call(role.uid, method, target)
			what := fmt.Sprintf("%s %s as %s", method, target, role.name)
			switch {
			case bad != "" && (code != http.StatusBadRequest || !namesParam(body, q)):
				t.Errorf("%s: %d, want 400 naming a parameter (%q is ambiguous or unknown): %.300s", what, code, bad, body)
			case bad == "" && code != http.StatusForbidden:
				t.Errorf("%s: %d, want 403: %.300s", what, code, body)
			}
			if role.name == "sponsor" {
				r.checkMarkers(t, what, target, body)
			}
		}
	}
}

// TestSponsorReadsRefusalsOnItsOrganisations: a sponsor's audit view holds
// the refusals about its organisations, whoever was refused, and no
// other: not those about another organisation, nor those about no
// organisation whose route shares a name with one of its own (an
// organisation may be called "backup").
func TestSponsorReadsRefusalsOnItsOrganisations(t *testing.T) {
	rig := newScopeRig(t)
	if _, err := rig.svc.CreateOrg(service.WithActor(context.Background(), "root"), api.CreateOrgRequest{Name: "backup"}); err != nil {
		t.Fatal(err)
	}
	if err := rig.db.Update(func(tx *store.Tx) error {
		return tx.PutRole(authz.Assignment{Subject: fmt.Sprintf("uid:%d", uidSponsor), Role: authz.Sponsor, Orgs: []string{"acme", "backup"}})
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, target string
	}{
		{"GET", "/v1/peers/acme/laptop"},
		{"POST", "/v1/peers/acme/laptop/revoke"},
		{"GET", "/v1/peers/globex/laptop"},
		{"GET", "/v1/backup"},
	} {
		if code, body := rig.call(uidNobody, c.method, c.target); code != http.StatusForbidden {
			t.Fatalf("%s %s as nobody: %d, want 403: %s", c.method, c.target, code, body)
		}
	}
	for _, q := range []string{"", "?org=acme", "?org=backup", "?action=denied"} {
		code, body := rig.call(uidSponsor, "GET", "/v1/audit"+q)
		if code != http.StatusOK {
			t.Fatalf("audit%s as sponsor: %d %s", q, code, body)
		}
		var evs []api.AuditEvent
		if err := json.Unmarshal(body, &evs); err != nil {
			t.Fatal(err)
		}
		var denied []string
		for _, e := range evs {
			if e.Action == "denied" {
				denied = append(denied, e.Target)
			}
		}
		want := []string{"acme/laptop", "acme/laptop"}
		if q == "?org=backup" {
			want = nil
		}
		if !slices.Equal(denied, want) {
			t.Errorf("audit%s as sponsor of acme and backup: refusals about %q, want %q", q, denied, want)
		}
	}
}
