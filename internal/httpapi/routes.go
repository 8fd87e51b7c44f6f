package httpapi

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

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
	// every organisation the caller may see.
	org func(*http.Request) string
	// filtered routes narrow their answer to the organisations a sponsor
	// may see; any other route refuses a caller who may see only some.
	filtered bool
	handler  http.HandlerFunc
}

func pathOrg(r *http.Request) string { return r.PathValue("org") }

// queryOrg is the organisation a listing asks for: ?org=, or the org part
// of ?peer=ORG/NAME.
func queryOrg(r *http.Request) string {
	q := r.URL.Query()
	if o := q.Get("org"); o != "" {
		return o
	}
	o, _, _ := strings.Cut(q.Get("peer"), "/")
	return o
}

func (s *Server) routeTable() []route {
	return []route{
		{"GET /v1/status", authz.ReadStatus, nil, true, s.status},
		{"GET /v1/whoami", authz.ReadWhoAmI, nil, false, s.whoami},

		{"POST /v1/orgs", authz.ManageOrgs, nil, false, s.createOrg},
		{"GET /v1/orgs", authz.ReadOrgs, nil, true, s.listOrgs},
		{"GET /v1/orgs/{org}", authz.ReadOrgs, pathOrg, false, s.getOrg},
		{"DELETE /v1/orgs/{org}", authz.ManageOrgs, pathOrg, false, s.deleteOrg},
		{"POST /v1/orgs/{org}/grant", authz.ManageOrgs, pathOrg, false, s.grants(s.svc.Grant)},
		{"POST /v1/orgs/{org}/ungrant", authz.ManageOrgs, pathOrg, false, s.grants(s.svc.Ungrant)},
		{"POST /v1/orgs/{org}/suspend", authz.ManageOrgs, pathOrg, false, s.orgAction(s.svc.SuspendOrg)},
		{"POST /v1/orgs/{org}/resume", authz.ManageOrgs, pathOrg, false, s.orgAction(s.svc.ResumeOrg)},
		{"POST /v1/orgs/{org}/extend", authz.ManageOrgs, pathOrg, false, s.extendOrg},
		{"POST /v1/orgs/{org}/peers", authz.ManagePeers, pathOrg, false, s.issuePeer},

		{"GET /v1/orgs/{org}/groups", authz.ReadOrgs, pathOrg, false, s.listGroups},
		{"POST /v1/orgs/{org}/groups", authz.ManageGroups, pathOrg, false, s.createGroup},
		{"GET /v1/orgs/{org}/groups/{name}", authz.ReadOrgs, pathOrg, false, s.getGroup},
		{"POST /v1/orgs/{org}/groups/{name}/grant", authz.ManageGroups, pathOrg, false, s.groupGrants(s.svc.GroupGrant)},
		{"POST /v1/orgs/{org}/groups/{name}/ungrant", authz.ManageGroups, pathOrg, false, s.groupGrants(s.svc.GroupUngrant)},
		{"DELETE /v1/orgs/{org}/groups/{name}", authz.ManageGroups, pathOrg, false, s.deleteGroup},

		{"GET /v1/peers", authz.ReadPeers, queryOrg, true, s.listPeers},
		{"GET /v1/peers/{org}/{name}", authz.ReadPeers, pathOrg, false, s.getPeer},
		{"GET /v1/peers/{org}/{name}/config", authz.ReadSecrets, pathOrg, false, s.peerConfig},
		{"POST /v1/peers/{org}/{name}/suspend", authz.ManagePeers, pathOrg, false, s.peerAction(s.svc.SuspendPeer)},
		{"POST /v1/peers/{org}/{name}/resume", authz.ManagePeers, pathOrg, false, s.peerAction(s.svc.ResumePeer)},
		{"POST /v1/peers/{org}/{name}/revoke", authz.ManagePeers, pathOrg, false, s.peerAction(s.svc.RevokePeer)},
		{"POST /v1/peers/{org}/{name}/rotate", authz.ManagePeers, pathOrg, false, s.rotatePeer},
		{"POST /v1/peers/{org}/{name}/extend", authz.ManagePeers, pathOrg, false, s.extendPeer},
		{"POST /v1/peers/{org}/{name}/move", authz.ManagePeers, pathOrg, false, s.movePeer},

		{"POST /v1/orgs/{org}/invites", authz.ManagePeers, pathOrg, false, s.createInvite},
		{"GET /v1/invites", authz.ReadPeers, queryOrg, true, s.listInvites},
		{"POST /v1/invites/{org}/{name}/revoke", authz.ManagePeers, pathOrg, false, s.revokeInvite},
		{"GET /v1/requests", authz.ReadPeers, queryOrg, true, s.listRequests},
		{"POST /v1/requests/{org}/{name}/approve", authz.ManagePeers, pathOrg, false, s.approveRequest},
		{"POST /v1/requests/{org}/{name}/deny", authz.ManagePeers, pathOrg, false, s.denyRequest},

		{"POST /v1/expire", authz.RunExpire, nil, false, s.expire},
		{"POST /v1/import", authz.ImportState, nil, false, s.importCSV},
		{"GET /v1/export", authz.ExportState, nil, false, s.exportCSV},
		{"GET /v1/backup", authz.ExportState, nil, false, s.backup},

		{"GET /v1/audit", authz.ReadAudit, queryOrg, true, s.audit},
		{"GET /v1/audit/verify", authz.VerifyAudit, nil, false, s.verifyAudit},

		{"GET /v1/roles", authz.ReadRoles, nil, false, s.listRoles},
		{"POST /v1/roles", authz.ManageRoles, nil, false, s.assignRole},
		{"POST /v1/roles/revoke", authz.ManageRoles, nil, false, s.revokeRole},
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
	authz.VerifyAudit:  "verify the audit log",
	authz.ManageRoles:  "assign or revoke roles",
	authz.ReadRoles:    "list roles",
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

// visible is the organisations a caller may see (a sponsor's), nil when
// there is no limit.
func visible(r *http.Request) map[string]bool {
	f, _ := r.Context().Value(filterKey{}).(map[string]bool)
	return f
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
		org := ""
		if rt.org != nil {
			org = rt.org(r)
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
			s.auditRefusal(s.withActor(r), who.caller.User, rt.action, target, d.Needs)
			writeError(w, forbidden(who.caller.User, rt.action, org, d.Needs))
			return
		}
		ctx := context.WithValue(r.Context(), whoKey{}, who)
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

func (s *Server) auditRefusal(ctx context.Context, user string, action authz.Action, target, needs string) {
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
	if err := s.svc.Refused(ctx, action, target, needs); err != nil {
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
	invites, err := s.svc.ListInvites(r.Context(), r.URL.Query().Get("org"))
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
	q := r.URL.Query()
	reqs, err := s.svc.ListRequests(r.Context(), q.Get("org"), q.Get("state"))
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
	q := r.URL.Query()
	peers, err := s.svc.ListPeers(r.Context(), service.PeerFilter{Org: q.Get("org"), State: q.Get("state")})
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
	f := service.AuditFilter{Org: q.Get("org"), Peer: q.Get("peer"), Action: q.Get("action"), Actor: q.Get("actor")}
	for _, tp := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(tp.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, api.Errorf(api.CodeInvalid, "%s=%q is not an RFC 3339 time", tp.name, v))
				return
			}
			*tp.dst = t
		}
	}
	evs, err := s.svc.Audit(r.Context(), f)
	if v := visible(r); v != nil {
		// A sponsor reads the events about its organisations and their
		// peers, nothing else.
		evs = slices.DeleteFunc(evs, func(e api.AuditEvent) bool {
			org, _, _ := strings.Cut(e.Target, "/")
			return !v[org] || !strings.HasPrefix(e.Action, "org.") && !strings.HasPrefix(e.Action, "peer.")
		})
	}
	reply(w, http.StatusOK, evs, err)
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
