package httpapi

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/activity"
	"github.com/extranetgw/extranet/internal/authz"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/internal/validate"
	"github.com/extranetgw/extranet/pkg/api"
)

// route is one API route and the permission it needs. Every route is
// here, so none can be served without one (TestEveryRouteHasAPermission).
type route struct {
	pattern string
	action  authz.Action
	// org names the organisation a request is about, from its path or its
	// query; nil for routes that are about none. An empty answer means
	// every organisation the caller may see. guard decides on it, and a
	// listing lists by it (listOrg), never by the query again.
	org func(*http.Request) (string, error)
	// params are the query parameters the route reads; guard refuses any
	// other, so no parameter can narrow or widen an answer unchecked.
	params []string
	// filtered routes narrow their answer to the organisations a sponsor
	// may see; any other route refuses a caller who may see only some.
	filtered bool
	handler  http.HandlerFunc
}

func pathOrg(r *http.Request) (string, error) { return r.PathValue("org"), nil }

// queryOrg is the organisation a listing asks for: ?org=, or the org part
// of ?peer=ORG/NAME. A query that names two organisations, or one twice,
// is refused rather than read one way here and another in the handler.
func queryOrg(r *http.Request) (string, error) {
	q := r.URL.Query()
	for _, k := range []string{"org", "peer"} {
		if n := len(q[k]); n > 1 {
			return "", api.Errorf(api.CodeInvalid, "query parameter %q is given %d times; give it once", k, n)
		}
	}
	org, hasOrg := "", false
	if vs, ok := q["org"]; ok {
		org, hasOrg = vs[0], true
		if err := validate.Name("org", org); err != nil {
			return "", api.Errorf(api.CodeInvalid, "?org=: %v", err)
		}
	}
	if vs, ok := q["peer"]; ok {
		porg, name, found := strings.Cut(vs[0], "/")
		if !found {
			return "", api.Errorf(api.CodeInvalid, "?peer=%q is not ORG/NAME", validate.Printable(vs[0]))
		}
		if err := validate.Name("org", porg); err != nil {
			return "", api.Errorf(api.CodeInvalid, "?peer=: %v", err)
		}
		if err := validate.Name("peer", name); err != nil {
			return "", api.Errorf(api.CodeInvalid, "?peer=: %v", err)
		}
		if hasOrg && porg != org {
			return "", api.Errorf(api.CodeInvalid, "?org=%s and ?peer=%s name different organisations; give one, or both of the same", org, vs[0])
		}
		org = porg
	}
	return org, nil
}

// checkQuery refuses a query the route does not read entirely: a
// parameter it does not know, one given twice, or one that does not
// parse. Ignoring one would answer as if it had been read (a typo in a
// filter would list everything), and a parameter read by a handler but not
// by guard is how a listing once escaped its organisation.
func checkQuery(r *http.Request, params []string) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return api.Errorf(api.CodeInvalid, "the query %q is not valid: %v", validate.Printable(r.URL.RawQuery), err)
	}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		if !slices.Contains(params, k) {
			takes := "none"
			if len(params) > 0 {
				takes = strings.Join(params, ", ")
			}
			return api.Errorf(api.CodeInvalid, "unknown query parameter %q; this request takes %s", validate.Printable(k), takes)
		}
		if n := len(q[k]); n > 1 {
			return api.Errorf(api.CodeInvalid, "query parameter %q is given %d times; give it once", k, n)
		}
	}
	return nil
}

func (s *Server) routeTable() []route {
	return []route{
		{"GET /v1/status", authz.ReadStatus, nil, nil, true, s.status},
		{"GET /v1/whoami", authz.ReadWhoAmI, nil, nil, false, s.whoami},
		{"POST /v1/cluster/switchover", authz.Switchover, nil, nil, false, s.switchover},

		{"POST /v1/orgs", authz.ManageOrgs, nil, nil, false, s.createOrg},
		{"GET /v1/orgs", authz.ReadOrgs, nil, nil, true, s.listOrgs},
		{"GET /v1/orgs/{org}", authz.ReadOrgs, pathOrg, nil, false, s.getOrg},
		{"DELETE /v1/orgs/{org}", authz.ManageOrgs, pathOrg, []string{"force"}, false, s.deleteOrg},
		{"POST /v1/orgs/{org}/grant", authz.ManageOrgs, pathOrg, nil, false, s.grants(s.svc.Grant)},
		{"POST /v1/orgs/{org}/ungrant", authz.ManageOrgs, pathOrg, nil, false, s.grants(s.svc.Ungrant)},
		{"POST /v1/orgs/{org}/suspend", authz.ManageOrgs, pathOrg, nil, false, s.orgAction(s.svc.SuspendOrg)},
		{"POST /v1/orgs/{org}/resume", authz.ManageOrgs, pathOrg, nil, false, s.orgAction(s.svc.ResumeOrg)},
		{"POST /v1/orgs/{org}/extend", authz.ManageOrgs, pathOrg, nil, false, s.extendOrg},
		{"POST /v1/orgs/{org}/peers", authz.ManagePeers, pathOrg, nil, false, s.issuePeer},

		{"GET /v1/orgs/{org}/groups", authz.ReadOrgs, pathOrg, nil, false, s.listGroups},
		{"POST /v1/orgs/{org}/groups", authz.ManageGroups, pathOrg, nil, false, s.createGroup},
		{"GET /v1/orgs/{org}/groups/{name}", authz.ReadOrgs, pathOrg, nil, false, s.getGroup},
		{"POST /v1/orgs/{org}/groups/{name}/grant", authz.ManageGroups, pathOrg, nil, false, s.groupGrants(s.svc.GroupGrant)},
		{"POST /v1/orgs/{org}/groups/{name}/ungrant", authz.ManageGroups, pathOrg, nil, false, s.groupGrants(s.svc.GroupUngrant)},
		{"DELETE /v1/orgs/{org}/groups/{name}", authz.ManageGroups, pathOrg, []string{"move_to"}, false, s.deleteGroup},

		{"GET /v1/peers", authz.ReadPeers, queryOrg, []string{"org", "state"}, true, s.listPeers},
		{"GET /v1/peers/{org}/{name}", authz.ReadPeers, pathOrg, nil, false, s.getPeer},
		{"GET /v1/peers/{org}/{name}/config", authz.ReadSecrets, pathOrg, nil, false, s.peerConfig},
		{"POST /v1/peers/{org}/{name}/suspend", authz.ManagePeers, pathOrg, nil, false, s.peerAction(s.svc.SuspendPeer)},
		{"POST /v1/peers/{org}/{name}/resume", authz.ManagePeers, pathOrg, nil, false, s.peerAction(s.svc.ResumePeer)},
		{"POST /v1/peers/{org}/{name}/revoke", authz.ManagePeers, pathOrg, nil, false, s.peerAction(s.svc.RevokePeer)},
		{"POST /v1/peers/{org}/{name}/rotate", authz.ManagePeers, pathOrg, nil, false, s.rotatePeer},
		{"POST /v1/peers/{org}/{name}/extend", authz.ManagePeers, pathOrg, nil, false, s.extendPeer},
		{"POST /v1/peers/{org}/{name}/move", authz.ManagePeers, pathOrg, nil, false, s.movePeer},

		{"POST /v1/orgs/{org}/invites", authz.ManagePeers, pathOrg, nil, false, s.createInvite},
		{"GET /v1/invites", authz.ReadPeers, queryOrg, []string{"org"}, true, s.listInvites},
		{"POST /v1/invites/{org}/{name}/revoke", authz.ManagePeers, pathOrg, nil, false, s.revokeInvite},
		{"GET /v1/requests", authz.ReadPeers, queryOrg, []string{"org", "state"}, true, s.listRequests},
		{"POST /v1/requests/{org}/{name}/approve", authz.ManagePeers, pathOrg, nil, false, s.approveRequest},
		{"POST /v1/requests/{org}/{name}/deny", authz.ManagePeers, pathOrg, nil, false, s.denyRequest},

		{"POST /v1/expire", authz.RunExpire, nil, nil, false, s.expire},
		{"POST /v1/import", authz.ImportState, nil, nil, false, s.importCSV},
		{"GET /v1/export", authz.ExportState, nil, nil, false, s.exportCSV},
		{"GET /v1/backup", authz.ExportState, nil, nil, false, s.backup},

		{"GET /v1/audit", authz.ReadAudit, queryOrg, []string{"org", "peer", "action", "actor", "since", "until"}, true, s.audit},
		{"GET /v1/audit/verify", authz.VerifyAudit, nil, nil, false, s.verifyAudit},

		{"GET /v1/activity", authz.ReadActivity, queryOrg, []string{"org", "peer", "dest", "port", "proto", "end", "since", "until", "limit"}, true, s.activity},
		{"GET /v1/activity/top", authz.ReadActivity, queryOrg, []string{"org", "peer", "dest", "port", "proto", "since", "until", "limit"}, true, s.activityTop},

		{"GET /v1/roles", authz.ReadRoles, nil, nil, false, s.listRoles},
		{"POST /v1/roles", authz.ManageRoles, nil, nil, false, s.assignRole},
		{"POST /v1/roles/revoke", authz.ManageRoles, nil, nil, false, s.revokeRole},
	}
}

func (s *Server) routes() {
	for _, rt := range s.routeTable() {
		s.mux.HandleFunc(rt.pattern, s.guard(rt))
	}
}

// actionText says what an action does, for refusals people read.
var actionText = map[authz.Action]string{
	authz.ReadStatus:   "read the gateway's status",
	authz.ManageOrgs:   "manage organisations and their grants",
	authz.ReadOrgs:     "see organisations",
	authz.ManagePeers:  "manage the peers",
	authz.ManageGroups: "manage access groups",
	authz.ReadPeers:    "see the peers",
	authz.ReadSecrets:  "read peer configs (they hold preshared keys)",
	authz.RunExpire:    "run expire",
	authz.ImportState:  "import",
	authz.ExportState:  "export or back up the state (it holds preshared keys)",
	authz.ReadAudit:    "read the audit log",
	authz.ReadActivity: "read partner activity",
	authz.VerifyAudit:  "verify the audit log",
	authz.ManageRoles:  "assign or revoke roles",
	authz.ReadRoles:    "list roles",
	authz.Switchover:   "move the cluster's active role",
}

// forbidden is the refusal of action (on org, when it is about one).
func forbidden(user string, action authz.Action, org, needs string) *api.Error {
	what := actionText[action]
	if what == "" {
		what = string(action)
	}
	if org != "" {
		what += " (organisation " + org + ")"
	}
	return api.Errorf(api.CodeForbidden, "%s may not %s: that needs the role %s (`extranetctl whoami` shows yours; an admin assigns roles with `extranetctl role assign`)", user, what, needs)
}

type filterKey struct{}

type whoKey struct{}

type orgKey struct{}

// visible is the organisations a caller may see (a sponsor's), nil when
// there is no limit.
func visible(r *http.Request) map[string]bool {
	f, _ := r.Context().Value(filterKey{}).(map[string]bool)
	return f
}

// listOrg is the organisation a listing is about, as guard decided on it
// (route.org); empty for every one the caller may see.
func listOrg(r *http.Request) string {
	o, _ := r.Context().Value(orgKey{}).(string)
	return o
}

// caller is who a guarded request came from.
func callerOf(r *http.Request) who {
	w, _ := r.Context().Value(whoKey{}).(who)
	return w
}

// guard is the one place that checks permissions: it works out the
// caller's roles and lets the request through, narrows what it may see,
// or refuses it, saying which role it needs, into the audit log too.
func (s *Server) guard(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// Names are checked before anything is decided or written down,
		// so a refusal's audit event holds only a valid name.
		for _, kind := range []string{"org", "name"} {
			if v := r.PathValue(kind); v != "" {
				if err := validate.Name(kind, v); err != nil {
					writeError(w, api.Errorf(api.CodeInvalid, "%v", err))
					return
				}
			}
		}
		if err := checkQuery(r, rt.params); err != nil {
			writeError(w, err)
			return
		}
		org := ""
		if rt.org != nil {
			o, err := rt.org(r)
			if err != nil {
				writeError(w, err)
				return
			}
			org = o
		}
		if org != "" {
			if err := validate.Name("org", org); err != nil {
				writeError(w, api.Errorf(api.CodeInvalid, "%v", err))
				return
			}
		}
		who, err := s.caller(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		d := who.grants.Decide(rt.action, org)
		if d.Allowed && d.Filter == nil && org != "" && rt.filtered {
			// A caller who sees only some organisations gets its answer
			// narrowed however it asks: naming one of its own is no way
			// past what the handler keeps from it (other organisations,
			// and in the audit log, events about none).
			if all := who.grants.Decide(rt.action, ""); all.Filter != nil {
				d.Filter = map[string]bool{org: true}
			}
		}
		if d.Allowed && d.Filter != nil && !rt.filtered {
			// Fail closed: a route that cannot narrow its answer gives
			// a partial view to nobody.
			d = authz.Decision{Needs: "admin"}
		}
		if !d.Allowed {
			target := org
			if name := r.PathValue("name"); org != "" && name != "" {
				target = org + "/" + name
			}
			if target == "" {
				target = strings.TrimPrefix(rt.pattern, r.Method+" /v1/")
			}
			s.auditRefusal(s.withActor(r), who.caller.User, rt.action, org, target, d.Needs)
			writeError(w, forbidden(who.caller.User, rt.action, org, d.Needs))
			return
		}
		if r.Header.Get(api.CheckHeader) == api.CheckMay {
			// Decided, not carried out: the CLI asks before it asks a
			// person to confirm what it may not do anyway.
			w.WriteHeader(http.StatusNoContent)
			return
		}
		ctx := context.WithValue(r.Context(), whoKey{}, who)
		ctx = context.WithValue(ctx, orgKey{}, org)
		if d.Filter != nil {
			ctx = context.WithValue(ctx, filterKey{}, d.Filter)
		}
		rt.handler(w, r.WithContext(ctx))
	}
}

// refusalQuiet is how long the same refusal (caller, action, target) is
// not audited again: any member of the socket group can be refused, and a
// loop of refusals must not fill the audit log.
const refusalQuiet = time.Minute

func (s *Server) auditRefusal(ctx context.Context, user string, action authz.Action, org, target, needs string) {
	key := user + "\x00" + string(action) + "\x00" + target
	now := time.Now()
	s.refusalsMu.Lock()
	last, seen := s.refusals[key]
	if !seen || now.Sub(last.at) >= refusalQuiet {
		s.refusals[key] = refusal{at: now}
	} else {
		last.repeats++
		s.refusals[key] = last
	}
	if len(s.refusals) > 10000 {
		// Bounded: old entries go; at worst a refusal is audited again.
		for k, v := range s.refusals {
			if now.Sub(v.at) >= refusalQuiet {
				delete(s.refusals, k)
			}
		}
	}
	s.refusalsMu.Unlock()
	if seen && now.Sub(last.at) < refusalQuiet {
		s.log.Debug("refusal repeated; audited once a minute", "user", user, "action", action, "target", target, "repeats", last.repeats+1)
		return
	}
	if err := s.svc.Refused(ctx, action, org, target, needs); err != nil {
		s.log.Error("audit a refusal", "err", err)
	}
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	// A sponsor's counts are of its own organisations.
	st, err := s.svc.Status(r.Context(), visible(r))
	reply(w, http.StatusOK, st, err)
}

func (s *Server) createOrg(w http.ResponseWriter, r *http.Request) {
	var req api.CreateOrgRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	o, err := s.svc.CreateOrg(s.withActor(r), req)
	reply(w, http.StatusCreated, o, err)
}

func (s *Server) listOrgs(w http.ResponseWriter, r *http.Request) {
	orgs, err := s.svc.ListOrgs(r.Context())
	if f := visible(r); f != nil {
		orgs = slices.DeleteFunc(orgs, func(o api.Org) bool { return !f[o.Name] })
	}
	reply(w, http.StatusOK, orgs, err)
}

func (s *Server) getOrg(w http.ResponseWriter, r *http.Request) {
	o, err := s.svc.GetOrg(r.Context(), r.PathValue("org"))
	reply(w, http.StatusOK, o, err)
}

func (s *Server) deleteOrg(w http.ResponseWriter, r *http.Request) {
	force := r.URL.Query().Get("force") == "true"
	err := s.svc.DeleteOrg(s.withActor(r), r.PathValue("org"), force)
	reply(w, http.StatusOK, struct{}{}, err)
}

func (s *Server) grants(fn func(ctx context.Context, org string, req api.GrantsRequest) (api.Org, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.GrantsRequest
		if err := decode(r, &req); err != nil {
			writeError(w, err)
			return
		}
		o, err := fn(s.withActor(r), r.PathValue("org"), req)
		reply(w, http.StatusOK, o, err)
	}
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) {
	gs, err := s.svc.ListGroups(r.Context(), r.PathValue("org"))
	reply(w, http.StatusOK, gs, err)
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request) {
	var req api.CreateGroupRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	g, err := s.svc.CreateGroup(s.withActor(r), r.PathValue("org"), req)
	reply(w, http.StatusCreated, g, err)
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) {
	g, err := s.svc.GetGroup(r.Context(), r.PathValue("org"), r.PathValue("name"))
	reply(w, http.StatusOK, g, err)
}

func (s *Server) groupGrants(fn func(ctx context.Context, org, name string, req api.GrantsRequest) (api.Group, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.GrantsRequest
		if err := decode(r, &req); err != nil {
			writeError(w, err)
			return
		}
		g, err := fn(s.withActor(r), r.PathValue("org"), r.PathValue("name"), req)
		reply(w, http.StatusOK, g, err)
	}
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request) {
	err := s.svc.DeleteGroup(s.withActor(r), r.PathValue("org"), r.PathValue("name"), r.URL.Query().Get("move_to"))
	reply(w, http.StatusOK, struct{}{}, err)
}

func (s *Server) createInvite(w http.ResponseWriter, r *http.Request) {
	var req api.CreateInviteRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	inv, err := s.svc.CreateInvite(s.withActor(r), r.PathValue("org"), req)
	reply(w, http.StatusCreated, inv, err)
}

func (s *Server) listInvites(w http.ResponseWriter, r *http.Request) {
	invites, err := s.svc.ListInvites(r.Context(), listOrg(r))
	if f := visible(r); f != nil {
		invites = slices.DeleteFunc(invites, func(i api.Invite) bool { return !f[i.Org] })
	}
	reply(w, http.StatusOK, invites, err)
}

func (s *Server) revokeInvite(w http.ResponseWriter, r *http.Request) {
	inv, err := s.svc.RevokeInvite(s.withActor(r), r.PathValue("org")+"/"+r.PathValue("name"))
	reply(w, http.StatusOK, inv, err)
}

func (s *Server) listRequests(w http.ResponseWriter, r *http.Request) {
	reqs, err := s.svc.ListRequests(r.Context(), listOrg(r), r.URL.Query().Get("state"))
	if f := visible(r); f != nil {
		reqs = slices.DeleteFunc(reqs, func(x api.Request) bool { return !f[x.Org] })
	}
	reply(w, http.StatusOK, reqs, err)
}

func (s *Server) approveRequest(w http.ResponseWriter, r *http.Request) {
	out, err := s.svc.ApproveRequest(s.withActor(r), r.PathValue("org")+"/"+r.PathValue("name"))
	reply(w, http.StatusOK, out, err)
}

func (s *Server) denyRequest(w http.ResponseWriter, r *http.Request) {
	var req api.DenyRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.svc.DenyRequest(s.withActor(r), r.PathValue("org")+"/"+r.PathValue("name"), req)
	reply(w, http.StatusOK, out, err)
}

func (s *Server) movePeer(w http.ResponseWriter, r *http.Request) {
	var req api.MoveRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	p, err := s.svc.MovePeer(s.withActor(r), r.PathValue("org"), r.PathValue("name"), req)
	reply(w, http.StatusOK, p, err)
}

func (s *Server) orgAction(fn func(ctx context.Context, org string) (api.Org, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		o, err := fn(s.withActor(r), r.PathValue("org"))
		reply(w, http.StatusOK, o, err)
	}
}

func (s *Server) extendOrg(w http.ResponseWriter, r *http.Request) {
	var req api.ExtendRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	o, err := s.svc.ExtendOrg(s.withActor(r), r.PathValue("org"), req.Expires)
	reply(w, http.StatusOK, o, err)
}

func (s *Server) issuePeer(w http.ResponseWriter, r *http.Request) {
	var req api.IssuePeerRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	p, err := s.svc.IssuePeer(s.withActor(r), r.PathValue("org"), req)
	reply(w, http.StatusCreated, p, err)
}

func (s *Server) listPeers(w http.ResponseWriter, r *http.Request) {
	peers, err := s.svc.ListPeers(r.Context(), service.PeerFilter{Org: listOrg(r), State: r.URL.Query().Get("state")})
	if f := visible(r); f != nil {
		peers = slices.DeleteFunc(peers, func(p api.Peer) bool { return !f[p.Org] })
	}
	reply(w, http.StatusOK, peers, err)
}

func (s *Server) getPeer(w http.ResponseWriter, r *http.Request) {
	p, err := s.svc.GetPeer(r.Context(), r.PathValue("org"), r.PathValue("name"))
	reply(w, http.StatusOK, p, err)
}

func (s *Server) peerConfig(w http.ResponseWriter, r *http.Request) {
	c, err := s.svc.PeerConfig(s.withActor(r), r.PathValue("org"), r.PathValue("name"))
	reply(w, http.StatusOK, c, err)
}

func (s *Server) peerAction(fn func(ctx context.Context, org, name string) (api.Peer, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := fn(s.withActor(r), r.PathValue("org"), r.PathValue("name"))
		reply(w, http.StatusOK, p, err)
	}
}

func (s *Server) rotatePeer(w http.ResponseWriter, r *http.Request) {
	var req api.RotateRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	p, err := s.svc.RotatePeer(s.withActor(r), r.PathValue("org"), r.PathValue("name"), req)
	reply(w, http.StatusOK, p, err)
}

func (s *Server) extendPeer(w http.ResponseWriter, r *http.Request) {
	var req api.ExtendRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	p, err := s.svc.ExtendPeer(s.withActor(r), r.PathValue("org"), r.PathValue("name"), req.Expires)
	reply(w, http.StatusOK, p, err)
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	// guard checked that ?peer= is of the organisation it decided on.
	f := service.AuditFilter{Org: listOrg(r), Peer: q.Get("peer"), Action: q.Get("action"), Actor: q.Get("actor")}
	if err := sinceUntil(q, &f.Since, &f.Until); err != nil {
		writeError(w, err)
		return
	}
	evs, err := s.svc.Audit(r.Context(), f)
	if v := visible(r); v != nil {
		evs = slices.DeleteFunc(evs, func(e api.AuditEvent) bool { return !sponsorSees(e, v) })
	}
	reply(w, http.StatusOK, evs, err)
}

// orgEvents are the kinds of audit event whose target is an organisation
// or one of its objects (ORG/NAME). The others are about no organisation,
// whatever their target looks like: a role change names a user (who may
// share an organisation's name), a refused enrollment the page's step. A
// refusal ("denied") is about the organisation it records, if any: its
// target may be a route's name instead.
var orgEvents = []string{"org.", "peer.", "group.", "invite.", "request.", "enroll.request", "enroll.config"}

// sponsorSees says whether a caller who sees the organisations in visible
// alone may read an event: one about one of them, and nothing else. That
// includes the refusals of anyone about one of them (docs/permissions.md:
// a sponsor reads its organisations' audit events).
func sponsorSees(e api.AuditEvent, visible map[string]bool) bool {
	if e.Action == "denied" {
		// Refusals recorded before they kept their organisation
		// stay an admin's and an auditor's.
		raw, _ := e.After.(json.RawMessage)
		var d struct {
			Org string `json:"org"`
		}
		return json.Unmarshal(raw, &d) == nil && d.Org != "" && visible[d.Org]
	}
	org, _, _ := strings.Cut(e.Target, "/")
	return visible[org] && slices.ContainsFunc(orgEvents, func(kind string) bool {
		return e.Action == kind || strings.HasSuffix(kind, ".") && strings.HasPrefix(e.Action, kind)
	})
}

// sinceUntil reads ?since= and ?until=, RFC 3339 times, where given.
func sinceUntil(q url.Values, since, until *time.Time) error {
	for _, tp := range []struct {
		name string
		dst  *time.Time
	}{{"since", since}, {"until", until}} {
		if v := q.Get(tp.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return api.Errorf(api.CodeInvalid, "%s=%q is not an RFC 3339 time", tp.name, v)
			}
			*tp.dst = t
		}
	}
	return nil
}

func (s *Server) activity(w http.ResponseWriter, r *http.Request) {
	q, err := activityQuery(r)
	if err != nil {
		writeError(w, err)
		return
	}
	flows, err := s.svc.Activity(s.withActor(r), q)
	reply(w, http.StatusOK, flows, err)
}

// How many of each list activity/top returns: by default, and at most.
const (
	defaultTopLimit = 10
	maxTopLimit     = 100
)

func (s *Server) activityTop(w http.ResponseWriter, r *http.Request) {
	q, err := activityQuery(r)
	if err != nil {
		writeError(w, err)
		return
	}
	n := defaultTopLimit
	if r.URL.Query().Get("limit") != "" {
		if n = q.Limit; n > maxTopLimit {
			writeError(w, api.Errorf(api.CodeInvalid, "limit=%d: top lists at most %d of each", n, maxTopLimit))
			return
		}
	}
	// Every record in the window counts, not only the newest.
	q.Limit = 0
	top, err := s.svc.ActivityTop(s.withActor(r), q, n)
	reply(w, http.StatusOK, top, err)
}

// activityQuery reads the filters of GET /v1/activity (and /top), and the
// caller's scope; an error names the parameter and its value.
func activityQuery(r *http.Request) (activity.Query, error) {
	v := r.URL.Query()
	// guard checked that ?peer= is of the organisation it decided on.
	q := activity.Query{Org: listOrg(r), Peer: v.Get("peer")}
	if vis := visible(r); vis != nil {
		// Never nil, even for a sponsor of nothing: nil is every
		// organisation.
		q.Orgs = []string{}
		for org, ok := range vis {
			if ok {
				q.Orgs = append(q.Orgs, org)
			}
		}
		slices.Sort(q.Orgs)
	}
	if s := v.Get("dest"); s != "" {
		if p, err := netip.ParsePrefix(s); err == nil {
			q.Dest = p.Masked()
		} else if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			a = a.Unmap()
			q.Dest = netip.PrefixFrom(a, a.BitLen())
		} else {
			return q, api.Errorf(api.CodeInvalid, "dest=%q is not a prefix (10.20.0.0/24) or an address", validate.Printable(s))
		}
	}
	if s := v.Get("port"); s != "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return q, api.Errorf(api.CodeInvalid, "port=%q is not a port from 1 to 65535", validate.Printable(s))
		}
		q.Port = uint16(n)
	}
	if s := v.Get("proto"); s != "" {
		p, ok := flowProto(s)
		if !ok {
			return q, api.Errorf(api.CodeInvalid, "proto=%q is not tcp, udp, icmp or a protocol number from 0 to 255", validate.Printable(s))
		}
		q.Proto = p
	}
	if s := v.Get("end"); s != "" {
		if !slices.Contains(api.FlowEnds, s) {
			return q, api.Errorf(api.CodeInvalid, "end=%q is not how a flow ends: use one of %q", validate.Printable(s), api.FlowEnds)
		}
		q.End = s
	}
	if err := sinceUntil(v, &q.Since, &q.Until); err != nil {
		return q, err
	}
	// The answer is built in memory: a query over a full log, unbounded,
	// would take the daemon's memory (hundreds of MB per request).
	q.Limit = defaultActivityLimit
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxActivityLimit {
			return q, api.Errorf(api.CodeInvalid, "limit=%q is not a number from 1 to %d", validate.Printable(s), maxActivityLimit)
		}
		q.Limit = n
	}
	return q, nil
}

// How many flows one activity query returns: by default, and at most (the
// newest; --since and --until page back).
const (
	defaultActivityLimit = 1000
	maxActivityLimit     = 100000
)

// flowProto is a protocol as the activity log names it: tcp, udp and icmp
// by name, any other by its number.
func flowProto(s string) (string, bool) {
	switch s = strings.ToLower(s); s {
	case "tcp", "udp", "icmp":
		return s, true
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return "", false
	}
	switch n {
	case 1:
		return "icmp", true
	case 6:
		return "tcp", true
	case 17:
		return "udp", true
	}
	return strconv.FormatUint(n, 10), true
}

func (s *Server) switchover(w http.ResponseWriter, r *http.Request) {
	res, err := s.svc.Switchover(s.withActor(r))
	reply(w, http.StatusOK, res, err)
}

func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request) {
	res, err := s.svc.VerifyAudit(r.Context())
	reply(w, http.StatusOK, res, err)
}

func (s *Server) expire(w http.ResponseWriter, r *http.Request) {
	var req api.ExpireRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	// The expirer runs the policy the daemon was configured with; choosing
	// another (expire everything idle for a second, say) is an admin's.
	if (req.Idle != "" || req.Unused != "" || req.Action != "") && !req.DryRun && !callerOf(r).grants.Roles[authz.Admin] {
		writeError(w, api.Errorf(api.CodeForbidden, "%s may run expire with the configured policy only: --idle, --unused and --action need the role admin (or use --dry-run)", callerOf(r).caller.User))
		return
	}
	res, err := s.svc.Expire(s.withActor(r), req)
	reply(w, http.StatusOK, res, err)
}

func (s *Server) importCSV(w http.ResponseWriter, r *http.Request) {
	var req api.CSV
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	res, err := s.svc.Import(s.withActor(r), req.CSV)
	reply(w, http.StatusOK, res, err)
}

func (s *Server) exportCSV(w http.ResponseWriter, r *http.Request) {
	out, err := s.svc.Export(s.withActor(r))
	reply(w, http.StatusOK, api.CSV{CSV: out}, err)
}

// backupStall is how long a backup client may read nothing before its
// stream is abandoned. It reads a temporary copy, so a slow client holds
// no database lock, only that copy's disk space.
var backupStall = 30 * time.Second

// backup streams the state file. It holds preshared keys, so it goes only
// to callers the socket admits, like every other request. The length is
// sent first: a stream cut short closes the connection, and the client can
// tell it from a whole one.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	f, n, err := s.svc.Backup(s.withActor(r))
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	buf := make([]byte, 256<<10)
	var sent int64
	for sent < n {
		k, err := f.Read(buf)
		if k > 0 {
			if derr := rc.SetWriteDeadline(time.Now().Add(backupStall)); derr != nil {
				s.log.Error("backup: set write deadline", "err", derr)
				return
			}
			if _, werr := w.Write(buf[:k]); werr != nil {
				s.log.Warn("backup abandoned: the client stopped reading or went away", "sent", sent, "size", n, "err", werr)
				return
			}
			sent += int64(k)
		}
		if err != nil {
			if sent < n {
				s.log.Error("backup: read the temporary copy", "sent", sent, "size", n, "err", err)
			}
			return
		}
	}
	_ = rc.SetWriteDeadline(time.Time{})
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	who, err := s.caller(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	roles := who.grants.Describe()
	if roles == nil {
		roles = []string{}
	}
	groups := who.caller.Groups
	if groups == nil {
		groups = []string{}
	}
	reply(w, http.StatusOK, api.WhoAmI{User: who.caller.User, UID: who.caller.UID, Groups: groups, Roles: roles}, nil)
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request) {
	roles, err := s.svc.ListRoles(r.Context())
	reply(w, http.StatusOK, roles, err)
}

func (s *Server) assignRole(w http.ResponseWriter, r *http.Request) {
	var req api.RoleRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	a, err := s.svc.AssignRole(s.withActor(r), req)
	reply(w, http.StatusOK, a, err)
}

func (s *Server) revokeRole(w http.ResponseWriter, r *http.Request) {
	var req api.RoleRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	err := s.svc.RevokeRole(s.withActor(r), req)
	reply(w, http.StatusOK, struct{}{}, err)
}
