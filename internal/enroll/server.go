// Package enroll serves the partner enrollment page: the page itself,
// embedded in the binary, and the two calls it makes. A partner opens an
// invite's link, names the device and submits; the browser makes the key
// pair (WebCrypto X25519) and sends only the public key; the page then
// polls until a sponsor decides, and builds the wg-quick config around
// the private key it kept. Tokens and private keys never reach a log.
package enroll

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
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
	// refusals written to the audit log. For all sources together, which
	// may be more than the per-source limits can tell apart: submissions
	// and polls a second, refusals written a minute. Per invite:
	// submissions.
	submits, polls, refusals          *limiter
	allSubmits, allPolls, allRefusals *limiter
	invites                           *limiter
	// turn lets one call at a time through the limits, and answers
	// there those over them: however many calls a flood has in flight,
	// the others wait parked, not runnable, so the bulk of a flood takes
	// one core at most and the admins' requests find the other. Nothing
	// that waits on a client or a disk is done in turn.
	turn chan struct{}
	// summaryAfter is how long after the first refusal left out of the
	// audit log the count of those left out is written.
	summaryAfter time.Duration
	leftOut      leftOut
	mux          *http.ServeMux
}

// leftOut counts the refusals not written to the audit log one by one,
// and their sources, until the count is written.
type leftOut struct {
	mu      sync.Mutex
	n       int
	since   time.Time
	sources map[string]struct{}
	capped  bool
}

// maxLeftOutSources bounds the sources remembered for the count of
// refusals left out; beyond it the count says "at least".
const maxLeftOutSources = 10000

// New returns the server.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{
		o: o, log: o.Logger,
		// A company's partners may share one address; a person submits a
		// few times a minute at most, and a page polls every 2 s.
		submits:  newLimiter(30, time.Minute, 10000),
		polls:    newLimiter(600, time.Minute, 10000),
		refusals: newLimiter(1, time.Minute, 10000),
		// An enrollment drive brings a few submissions a second and a
		// few hundred pages waiting. Above what one source may send in a
		// burst, so one flooder alone never shuts the others out; a flood
		// from many sources beyond these is refused before it costs a
		// read of the store.
		allSubmits:   newLimiter(50, time.Second, 1),
		allPolls:     newLimiter(1000, time.Second, 1),
		allRefusals:  newLimiter(60, time.Minute, 1),
		invites:      newLimiter(60, 10*time.Minute, 10000),
		turn:         make(chan struct{}, 1),
		summaryAfter: time.Minute,
		leftOut:      leftOut{sources: map[string]struct{}{}},
		mux:          http.NewServeMux(),
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
// reverse proxy, the last address it put in X-Forwarded-For. It is always
// an address, so what the audit log and the CLI show holds nothing a
// partner chose.
func (s *Server) source(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		// net/http sets ADDR:PORT for every TCP connection.
		return "unknown"
	}
	// A link-local peer's zone is our interface's name: no part of who
	// the partner is.
	addr := ap.Addr().WithZone("").Unmap()
	if !s.trusted(addr) {
		return addr.String()
	}
	// Right to left through X-Forwarded-For, each entry put there by the
	// hop after it: past every trusted proxy of a chain, the first other
	// address is the partner's. Anything to its left the partner wrote.
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := forwardedAddr(hops[i])
		if !ok {
			// Unreadable: the last address that can be vouched for.
			break
		}
		addr = a.Unmap()
		if !s.trusted(addr) {
			break
		}
	}
	return addr.String()
}

// trusted tells whether a is one of the reverse proxies in front of the page.
func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.o.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedAddr reads an entry of X-Forwarded-For: an address, or an
// address and port (198.51.100.7:5678, [2001:db8::7]:443), which some
// proxies write. An address with a zone is refused: the zone may hold any
// bytes, a terminal's escape sequences among them, and no partner on the
// Internet has one.
func forwardedAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	if a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
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

// internalMessage is all a partner reads of a failure of the gateway
// itself; a reference to the log follows it.
const internalMessage = "the gateway could not take this now; try again in a minute"

// forPartner are the codes of errors whose message is meant for the
// partner: what is wrong with the request, a refusal, a limit.
var forPartner = map[string]bool{api.CodeInvalid: true, api.CodeNotFound: true, api.CodeTooLarge: true, api.CodeRateLimited: true}

// fail answers a call that did not succeed. A refusal is answered with
// its message and audited (within the audit budget). Anything else is the
// gateway's own failure, whose cause (a disk error, a path) is for the
// log: the partner reads a fixed sentence with a reference to the log
// line.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, source, what string, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) || !forPartner[ae.Code] {
		ref := reference()
		s.log.Error("enrollment failed", "call", what, "source", source, "reference", ref, "err", err)
		writeJSON(w, http.StatusInternalServerError, &api.Error{Code: api.CodeInternal, Message: internalMessage + " (reference " + ref + ")"})
		return
	}
	audit := s.auditable(source)
	writeJSON(w, ae.HTTPStatus(), ae)
	if audit {
		s.audit(r.Context(), source, what, ae.Code+": "+err.Error())
	}
}

// reference names one failure in the log.
func reference() string {
	b := make([]byte, 5)
	// crypto/rand.Read never returns an error: it crashes the program if
	// the system has no randomness to give.
	rand.Read(b)
	return hex.EncodeToString(b)
}

var (
	errSlowDown = &api.Error{Code: api.CodeRateLimited, Message: "too many attempts; wait a minute and try again"}
	errBusy     = &api.Error{Code: api.CodeRateLimited, Message: "the gateway is busy; wait a minute and try again"}
)

// limited reports whether a call is over its source's limit or the limit
// for all sources, and if so answers it. Calls pass one at a time (see
// turn), and a refusal's audit event, if any, is written after its turn.
func (s *Server) limited(w http.ResponseWriter, r *http.Request, source, what string, perSource, all *limiter) bool {
	select {
	case s.turn <- struct{}{}:
	case <-r.Context().Done():
		// Nobody is left to answer.
		return true
	}
	var err *api.Error
	switch {
	case !perSource.allow(sourceKey(source)):
		err = errSlowDown
	case !all.allow(""):
		err = errBusy
	}
	if err == nil {
		<-s.turn
		return false
	}
	audit := s.auditable(source)
	writeJSON(w, err.HTTPStatus(), err)
	<-s.turn
	if audit {
		s.audit(r.Context(), source, what, err.Code+": "+err.Message)
	}
	return true
}

// auditable decides whether a refusal goes to the audit log: at most once
// a minute per source and 60 times a minute in all, so a flood of bad
// tokens cannot fill the log or keep the disk busy. Those left out are
// counted, and the count is written once summaryAfter has passed.
func (s *Server) auditable(source string) bool {
	if s.refusals.allow(sourceKey(source)) && s.allRefusals.allow("") {
		return true
	}
	l := &s.leftOut
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == 0 {
		l.since = time.Now()
		time.AfterFunc(s.summaryAfter, s.writeLeftOut)
	}
	l.n++
	key := sourceKey(source)
	if _, ok := l.sources[key]; !ok {
		if len(l.sources) < maxLeftOutSources {
			l.sources[key] = struct{}{}
		} else {
			l.capped = true
		}
	}
	return false
}

func (s *Server) audit(ctx context.Context, source, what, why string) {
	if err := s.o.Service.AuditEnrollRefusal(ctx, source, what, why); err != nil {
		s.log.Error("audit an enrollment refusal", "err", err)
	}
}

// writeLeftOut writes the count of refusals left out of the audit log.
func (s *Server) writeLeftOut() {
	l := &s.leftOut
	l.mu.Lock()
	n, sources, capped, since := l.n, len(l.sources), l.capped, l.since
	l.n, l.capped = 0, false
	clear(l.sources)
	l.mu.Unlock()
	if err := s.o.Service.AuditEnrollSuppressed(context.Background(), n, sources, capped, since); err != nil {
		s.log.Error("audit the count of enrollment refusals left out", "refusals", n, "err", err)
	}
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	source := s.source(r)
	if s.limited(w, r, source, "submit", s.submits, s.allSubmits) {
		return
	}
	var req api.EnrollRequest
	if err := decode(r, w, &req); err != nil {
		s.fail(w, r, source, "submit", err)
		return
	}
	// A made-up token is refused here, on a read. Counted per invite, so
	// made-up tokens cost a real one nothing.
	invite, err := s.o.Service.InviteOf(req.Token)
	if err != nil {
		s.fail(w, r, source, "submit", err)
		return
	}
	if !s.invites.allow(invite) {
		s.fail(w, r, source, "submit", errSlowDown)
		return
	}
	out, err := s.o.Service.Enroll(r.Context(), source, req)
	if err != nil {
		s.fail(w, r, source, "submit", err)
		return
	}
	s.log.Info("enrollment request", "request", out.Request, "source", source, "state", out.State)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	source := s.source(r)
	if s.limited(w, r, source, "status", s.polls, s.allPolls) {
		return
	}
	var req api.EnrollStatusRequest
	if err := decode(r, w, &req); err != nil {
		s.fail(w, r, source, "status", err)
		return
	}
	out, err := s.o.Service.EnrollStatus(r.Context(), source, req)
	if err != nil {
		s.fail(w, r, source, "status", err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
