package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/pkg/api"
)

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /v1/status", s.status)

	m.HandleFunc("POST /v1/orgs", s.createOrg)
	m.HandleFunc("GET /v1/orgs", s.listOrgs)
	m.HandleFunc("GET /v1/orgs/{org}", s.getOrg)
	m.HandleFunc("DELETE /v1/orgs/{org}", s.deleteOrg)
	m.HandleFunc("POST /v1/orgs/{org}/grant", s.grants(s.svc.Grant))
	m.HandleFunc("POST /v1/orgs/{org}/ungrant", s.grants(s.svc.Ungrant))
	m.HandleFunc("POST /v1/orgs/{org}/suspend", s.orgAction(s.svc.SuspendOrg))
	m.HandleFunc("POST /v1/orgs/{org}/resume", s.orgAction(s.svc.ResumeOrg))
	m.HandleFunc("POST /v1/orgs/{org}/extend", s.extendOrg)
	m.HandleFunc("POST /v1/orgs/{org}/peers", s.issuePeer)

	m.HandleFunc("GET /v1/peers", s.listPeers)
	m.HandleFunc("GET /v1/peers/{org}/{name}", s.getPeer)
	m.HandleFunc("GET /v1/peers/{org}/{name}/config", s.peerConfig)
	m.HandleFunc("POST /v1/peers/{org}/{name}/suspend", s.peerAction(s.svc.SuspendPeer))
	m.HandleFunc("POST /v1/peers/{org}/{name}/resume", s.peerAction(s.svc.ResumePeer))
	m.HandleFunc("POST /v1/peers/{org}/{name}/revoke", s.peerAction(s.svc.RevokePeer))
	m.HandleFunc("POST /v1/peers/{org}/{name}/rotate", s.rotatePeer)
	m.HandleFunc("POST /v1/peers/{org}/{name}/extend", s.extendPeer)

	m.HandleFunc("POST /v1/expire", s.expire)
	m.HandleFunc("POST /v1/import", s.importCSV)
	m.HandleFunc("GET /v1/export", s.exportCSV)
	m.HandleFunc("GET /v1/backup", s.backup)

	m.HandleFunc("GET /v1/audit", s.audit)
	m.HandleFunc("GET /v1/audit/verify", s.verifyAudit)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.svc.Status(r.Context())
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
