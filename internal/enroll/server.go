// Package enroll serves the partner enrollment page: the page itself,
// embedded in the binary, and the two calls it makes. A partner opens an
// invite's link, names the device and submits; the browser makes the key
// pair (WebCrypto X25519) and sends only the public key; the page then
// polls until a sponsor decides, and builds the wg-quick config around
// the private key it kept. Tokens and private keys never reach a log.
package enroll

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/pkg/api"
)

//go:embed web
var web embed.FS

// maxBody bounds what a partner may send: a token, a name and a key.
const maxBody = 4096

// securityHeaders go on every answer. The page loads only its own script
// and style, talks only to this server, and may not be framed; nothing is
// cached, and no Referer ever carries the page's address anywhere.
var securityHeaders = map[string]string{
	"Content-Security-Policy":    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
	"Referrer-Policy":            "no-referrer",
	"X-Content-Type-Options":     "nosniff",
	"X-Frame-Options":            "DENY",
	"Cache-Control":              "no-store",
	"Strict-Transport-Security":  "max-age=31536000",
	"Cross-Origin-Opener-Policy": "same-origin",
}

// Options configure the enrollment server.
type Options struct {
	Service *service.Service
	Logger  *slog.Logger
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the partner's address; from anyone else the header is ignored.
	TrustedProxies []netip.Prefix
}

// Server is the enrollment page and its API.
type Server struct {
	o   Options
	log *slog.Logger
	// Per source (an IPv4 address, an IPv6 /64): submissions, polls, and
	// refusals written to the audit log; of those, also a bound for all
	// sources together. Per invite: submissions.
	submits, polls, refusals, allRefusals, invites *limiter
	mux                                            *http.ServeMux
}

// New returns the server.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{
		o: o, log: o.Logger,
		// A company's partners may share one address; a person submits a
		// few times a minute at most, and a page polls every 2 s.
		submits:     newLimiter(30, time.Minute, 10000),
		polls:       newLimiter(600, time.Minute, 10000),
		refusals:    newLimiter(1, time.Minute, 10000),
		allRefusals: newLimiter(60, time.Minute, 1),
		invites:     newLimiter(60, 10*time.Minute, 10000),
		mux:         http.NewServeMux(),
	}
	s.mux.HandleFunc("GET /enroll", s.page("web/index.html", "text/html; charset=utf-8"))
	s.mux.HandleFunc("GET /enroll/app.js", s.page("web/app.js", "text/javascript; charset=utf-8"))
	s.mux.HandleFunc("GET /enroll/qrcode.js", s.page("web/qrcode.js", "text/javascript; charset=utf-8"))
	s.mux.HandleFunc("GET /enroll/style.css", s.page("web/style.css", "text/css; charset=utf-8"))
	s.mux.HandleFunc("POST /enroll/api/submit", s.submit)
	s.mux.HandleFunc("POST /enroll/api/status", s.status)
	return s
}

// ServeHTTP answers every request with the security headers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for k, v := range securityHeaders {
		w.Header().Set(k, v)
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) page(name, typ string) http.HandlerFunc {
	body, err := web.ReadFile(name)
	return func(w http.ResponseWriter, _ *http.Request) {
		if err != nil {
			http.Error(w, "missing", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", typ)
		w.Write(body)
	}
}

// source is the partner's address: the peer's, or, behind a trusted
// reverse proxy, the last address it put in X-Forwarded-For.
func (s *Server) source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	addr = addr.Unmap()
	for _, p := range s.o.TrustedProxies {
		if !p.Contains(addr) {
			continue
		}
		fwd := r.Header.Values("X-Forwarded-For")
		if len(fwd) == 0 {
			break
		}
		parts := strings.Split(fwd[len(fwd)-1], ",")
		if a, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
			return a.Unmap().String()
		}
		break
	}
	return addr.String()
}

func decode(r *http.Request, w http.ResponseWriter, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.Errorf(api.CodeTooLarge, "the request is over %d bytes", maxBody)
		}
		return api.Errorf(api.CodeInvalid, "the request is not valid JSON of the expected shape")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return api.Errorf(api.CodeInvalid, "the request has data after its JSON object")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) writeError(w http.ResponseWriter, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		// Internal detail stays in our log; the partner reads a plain
		// sentence.
		s.log.Error("enrollment", "err", err)
		ae = &api.Error{Code: api.CodeInternal, Message: "the gateway could not take this now; try again in a minute"}
	}
	writeJSON(w, ae.HTTPStatus(), ae)
}

var errSlowDown = &api.Error{Code: api.CodeRateLimited, Message: "too many attempts; wait a minute and try again"}

// refused records a refusal in the audit log, at most once a minute per
// source and 60 times a minute in all, so a flood of bad tokens cannot
// fill the log or keep the disk busy.
func (s *Server) refused(ctx context.Context, source, what string, err error) {
	if !s.refusals.allow(sourceKey(source)) || !s.allRefusals.allow("") {
		return
	}
	why := err.Error()
	var ae *api.Error
	if errors.As(err, &ae) {
		why = ae.Code + ": " + ae.Message
	}
	if err := s.o.Service.AuditEnrollRefusal(ctx, source, what, why); err != nil {
		s.log.Error("audit an enrollment refusal", "err", err)
	}
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	source := s.source(r)
	if !s.submits.allow(sourceKey(source)) {
		s.refused(r.Context(), source, "submit", errSlowDown)
		s.writeError(w, errSlowDown)
		return
	}
	var req api.EnrollRequest
	if err := decode(r, w, &req); err != nil {
		s.refused(r.Context(), source, "submit", err)
		s.writeError(w, err)
		return
	}
	// Counted per invite, so made-up tokens cost a real one nothing.
	if invite, ok := s.o.Service.InviteOf(req.Token); ok && !s.invites.allow(invite) {
		s.refused(r.Context(), source, "submit", errSlowDown)
		s.writeError(w, errSlowDown)
		return
	}
	out, err := s.o.Service.Enroll(r.Context(), source, req)
	if err != nil {
		s.refused(r.Context(), source, "submit", err)
		s.writeError(w, err)
		return
	}
	s.log.Info("enrollment request", "request", out.Request, "source", source, "state", out.State)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	source := s.source(r)
	if !s.polls.allow(sourceKey(source)) {
		s.refused(r.Context(), source, "status", errSlowDown)
		s.writeError(w, errSlowDown)
		return
	}
	var req api.EnrollStatusRequest
	if err := decode(r, w, &req); err != nil {
		s.refused(r.Context(), source, "status", err)
		s.writeError(w, err)
		return
	}
	out, err := s.o.Service.EnrollStatus(r.Context(), source, req)
	if err != nil {
		s.refused(r.Context(), source, "status", err)
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
