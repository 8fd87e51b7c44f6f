package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

func newServer(t *testing.T) (*Server, *service.Service, *bytes.Buffer) {
	t.Helper()
	s, svc, _, logs := newServerDB(t)
	return s, svc, logs
}

func newServerDB(t *testing.T) (*Server, *service.Service, *store.DB, *bytes.Buffer) {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "x.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 24)
	svc := service.New(service.Options{DB: db, Plan: plan, Endpoint: "gw.example:51820", EnrollURL: "https://gw.example:8443",
		GatewayPublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="})
	var logs bytes.Buffer
	return New(Options{Service: svc, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}), svc, db, &logs
}

// clock gives every limiter of s one clock, which the returned function
// moves on.
func clock(s *Server) func(time.Duration) {
	now := time.Now()
	for _, l := range []*limiter{s.submits, s.polls, s.refusals, s.allSubmits, s.allPolls, s.allRefusals, s.invites} {
		l.now = func() time.Time { return now }
	}
	return func(d time.Duration) { now = now.Add(d) }
}

func post(t *testing.T, s *Server, path, source string, body any) *httptest.ResponseRecorder {
	t.Helper()
	raw, _ := json.Marshal(body)
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(raw))
	req.RemoteAddr = source + ":40000"
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	return w
}

func pub(t *testing.T) string {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

// TestPageHeaders: the page and every answer forbid what the page does not
// need (other hosts, framing, inline script, cookies, a Referer).
func TestPageHeaders(t *testing.T) {
	s, _, _ := newServer(t)
	for _, path := range []string{"/enroll", "/enroll/app.js", "/enroll/qrcode.js", "/enroll/style.css", "/nothing"} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		h := w.Result().Header
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		if h.Get("Referrer-Policy") != "no-referrer" || h.Get("Set-Cookie") != "" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", path, h)
		}
		if path != "/nothing" && w.Code != http.StatusOK {
			t.Errorf("%s: %d", path, w.Code)
		}
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/enroll", nil))
	if page := w.Body.String(); strings.Contains(page, "<script>") || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Errorf("the page has inline script or names another host:\n%s", page)
	}
}

// TestFloodIsLimited: a flood of bad tokens from one address is refused
// with 429 after a few, audited once a minute at most, and a partner with
// a good link from another address is served all the while. Neither a
// token nor a body reaches the log.
func TestFloodIsLimited(t *testing.T) {
	s, svc, logs := newServer(t)
	ctx := service.WithActor(context.Background(), "root")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	inv, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Devices: 5})
	if err != nil {
		t.Fatal(err)
	}
	_, token, _ := strings.Cut(inv.Link, "#")
	// Ten a second for 20 s: within the cap for all sources together.
	advance := clock(s)
	codes := map[int]int{}
	for i := 0; i < 200; i++ {
		advance(100 * time.Millisecond)
		w := post(t, s, "/enroll/api/submit", "198.51.100.66", api.EnrollRequest{Token: "guess-" + string(rune('a'+i%26)), Device: "x", PublicKey: pub(t), KeyFrom: "browser"})
		codes[w.Code]++
	}
	if codes[http.StatusNotFound] == 0 || codes[http.StatusTooManyRequests] < 160 {
		t.Errorf("a flood of bad tokens: %v", codes)
	}
	w := post(t, s, "/enroll/api/submit", "203.0.113.5", api.EnrollRequest{Token: token, Device: "laptop", PublicKey: pub(t), KeyFrom: "browser"})
	if w.Code != http.StatusCreated {
		t.Fatalf("a good link during the flood: %d %s", w.Code, w.Body)
	}
	evs, err := svc.Audit(ctx, service.AuditFilter{Action: "enroll.refused"})
	if err != nil || len(evs) != 1 || evs[0].Actor != "partner@198.51.100.66" {
		t.Errorf("refusals audited: %d %v", len(evs), err)
	}
	// Bodies are bounded.
	big := httptest.NewRequest(http.MethodPost, "/enroll/api/submit", strings.NewReader(`{"token":"`+strings.Repeat("a", 10000)+`"}`))
	big.RemoteAddr = "192.0.2.200:1"
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, big)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 10 kB body: %d", rec.Code)
	}
	if strings.Contains(logs.String(), token) || strings.Contains(logs.String(), "guess-") {
		t.Errorf("a token reached the log:\n%s", logs)
	}
}

// TestTrustedProxy: X-Forwarded-For names the partner only when the
// connection comes from a proxy the admin named. An entry with a port
// names its address (so partners behind such a proxy keep buckets of
// their own); an IPv6 zone, which may hold any bytes (a terminal's escape
// sequences among them), is no address and names nobody.
func TestTrustedProxy(t *testing.T) {
	s, _, _ := newServer(t)
	s.o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, tc := range []struct{ remote, fwd, want string }{
		{"10.1.2.3:5", "192.0.2.1, 198.51.100.7", "198.51.100.7"},
		{"203.0.113.9:5", "192.0.2.1", "203.0.113.9"},
		{"10.1.2.3:5", "", "10.1.2.3"},
		{"10.1.2.3:5", "198.51.100.7:5678", "198.51.100.7"},
		{"10.1.2.3:5", "192.0.2.1, [2001:db8::7]:443", "2001:db8::7"},
		{"10.1.2.3:5", "2001:db8::8", "2001:db8::8"},
		{"10.1.2.3:5", "::ffff:198.51.100.9", "198.51.100.9"},
		{"10.1.2.3:5", "fe80::1%\x1b]0;pwned\x07", "10.1.2.3"},
		{"10.1.2.3:5", "[fe80::1%\x1b[2J]:443", "10.1.2.3"},
		{"10.1.2.3:5", "fe80::1%eth0", "10.1.2.3"},
		{"10.1.2.3:5", "198.51.100.7:99999", "10.1.2.3"},
		{"10.1.2.3:5", "not an address", "10.1.2.3"},
		{"[fd00::1]:5", "198.51.100.7", "198.51.100.7"},
		{"[fe80::1%\x1b[2J]:5", "", "fe80::1"},
		// A chain of trusted proxies: the partner is the first address
		// past them, whatever the partner wrote to its left.
		{"10.1.2.3:5", "6.6.6.6, 198.51.100.7, 10.9.9.9", "198.51.100.7"},
		{"10.1.2.3:5", "10.8.8.8, 10.9.9.9", "10.8.8.8"},
		{"10.1.2.3:5", "198.51.100.7, not an address, 10.9.9.9", "10.9.9.9"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.RemoteAddr = tc.remote
		if tc.fwd != "" {
			r.Header.Set("X-Forwarded-For", tc.fwd)
		}
		if got := s.source(r); got != tc.want {
			t.Errorf("from %s with %q: %s, want %s", tc.remote, tc.fwd, got, tc.want)
		}
	}
}

// TestFloodFromManySources: addresses are plentiful, above all in IPv6.
// One /64 counts as one source; made-up tokens never use up a real
// invite's turns; a full table forgets its oldest entry rather than
// refusing newcomers; and refusals reach the audit log at most 60 times a
// minute whatever the number of sources. A partner with a real link gets
// through all the while.
func TestFloodFromManySources(t *testing.T) {
	s, svc, _ := newServer(t)
	ctx := service.WithActor(context.Background(), "root")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	inv, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Devices: 5})
	if err != nil {
		t.Fatal(err)
	}
	_, token, _ := strings.Cut(inv.Link, "#")
	// Ten a second: within the cap for all sources together.
	advance := clock(s)
	limited := 0
	for i := 0; i < 100; i++ {
		advance(100 * time.Millisecond)
		w := post(t, s, "/enroll/api/submit", "[2001:db8::"+strconv.Itoa(i+1)+"]", api.EnrollRequest{Token: "guess", Device: "x", PublicKey: pub(t), KeyFrom: "browser"})
		if w.Code == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited != 70 {
		t.Errorf("100 submissions from one /64: %d limited, want 70", limited)
	}
	// 300 made-up tokens from 10 addresses of 30 each: no 429 for the
	// real invite afterwards, and at most 60 refusals audited.
	for i := 0; i < 300; i++ {
		advance(100 * time.Millisecond)
		post(t, s, "/enroll/api/submit", "198.51.100."+strconv.Itoa(1+i%10), api.EnrollRequest{Token: "guess" + strconv.Itoa(i), Device: "x", PublicKey: pub(t), KeyFrom: "browser"})
	}
	w := post(t, s, "/enroll/api/submit", "203.0.113.5", api.EnrollRequest{Token: token, Device: "laptop", PublicKey: pub(t), KeyFrom: "browser"})
	if w.Code != http.StatusCreated {
		t.Fatalf("a real link after the flood: %d %s", w.Code, w.Body)
	}
	if evs, err := svc.Audit(ctx, service.AuditFilter{Action: "enroll.refused"}); err != nil || len(evs) > 60 {
		t.Errorf("%d refusals audited in a minute (%v), want at most 60", len(evs), err)
	}

	l := newLimiter(1, time.Minute, 3)
	for _, k := range []string{"a", "b", "c", "d"} {
		if !l.allow(k) {
			t.Errorf("a newcomer %q refused by a full table", k)
		}
	}
	if _, kept := l.seen["d"]; !kept || len(l.seen) != 3 {
		t.Errorf("a full table holds %v, want 3 keys, the newest among them", l.seen)
	}
}

// TestInternalErrorsStayInTheLog: a failure of the gateway itself (here
// its database, closed under it) reaches the partner as one fixed
// sentence with a reference; the cause, under the same reference, is in
// the log alone. A refusal meant for the partner keeps its message.
func TestInternalErrorsStayInTheLog(t *testing.T) {
	s, svc, db, logs := newServerDB(t)
	ctx := service.WithActor(context.Background(), "root")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	inv, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, token, _ := strings.Cut(inv.Link, "#")
	w := post(t, s, "/enroll/api/submit", "192.0.2.1", api.EnrollRequest{Token: token, Device: "Bad Name", PublicKey: pub(t), KeyFrom: "browser"})
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "device name") {
		t.Errorf("a bad device name: %d %s", w.Code, w.Body)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		body any
	}{
		{"/enroll/api/submit", api.EnrollRequest{Token: token, Device: "laptop", PublicKey: pub(t), KeyFrom: "browser"}},
		{"/enroll/api/status", api.EnrollStatusRequest{Request: "acme/abcdefgh", Secret: "s"}},
	} {
		w := post(t, s, tc.path, "192.0.2.2", tc.body)
		var e api.Error
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
			t.Fatalf("%s: %v %s", tc.path, err, w.Body)
		}
		ref, ok := strings.CutPrefix(e.Message, "the gateway could not take this now; try again in a minute")
		if w.Code != http.StatusInternalServerError || e.Code != api.CodeInternal || !ok || !refRE.MatchString(ref) {
			t.Errorf("%s: the partner reads %d %+v, want the fixed sentence and a reference", tc.path, w.Code, e)
			continue
		}
		id := refRE.FindStringSubmatch(ref)[1]
		line := ""
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "reference="+id) {
				line = l
			}
		}
		if !strings.Contains(line, "database not open") {
			t.Errorf("%s: the log has no cause under reference %s:\n%s", tc.path, id, logs)
		}
	}
}

var refRE = regexp.MustCompile(`^ \(reference ([a-z0-9]{8,})\)$`)

// TestRefusalsSayTheSame: whatever a submission is refused for (a link
// made up, used up or revoked; a device name enrolled or waiting already
// in the organisation; a public key in use by any peer), the page answers
// the same status and the same body, so the holder of a link learns
// nothing of which names and keys exist.
func TestRefusalsSayTheSame(t *testing.T) {
	s, svc, _ := newServer(t)
	ctx := service.WithActor(context.Background(), "root")
	for _, org := range []string{"acme", "globex"} {
		if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: org, Grants: []string{"10.20.0.0/24"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "laptop"}); err != nil {
		t.Fatal(err)
	}
	other, err := svc.IssuePeer(ctx, "globex", api.IssuePeerRequest{Name: "server"})
	if err != nil {
		t.Fatal(err)
	}
	link := func(devices int) string {
		inv, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Devices: devices})
		if err != nil {
			t.Fatal(err)
		}
		_, token, _ := strings.Cut(inv.Link, "#")
		return token
	}
	token, one := link(5), link(1)
	if w := post(t, s, "/enroll/api/submit", "192.0.2.1", api.EnrollRequest{Token: token, Device: "phone", PublicKey: pub(t), KeyFrom: "browser"}); w.Code != http.StatusCreated {
		t.Fatalf("a good submission: %d %s", w.Code, w.Body)
	}
	if w := post(t, s, "/enroll/api/submit", "192.0.2.1", api.EnrollRequest{Token: one, Device: "tablet", PublicKey: pub(t), KeyFrom: "browser"}); w.Code != http.StatusCreated {
		t.Fatalf("a good submission: %d %s", w.Code, w.Body)
	}
	var first *httptest.ResponseRecorder
	for i, tc := range []struct {
		why string
		req api.EnrollRequest
	}{
		{"a made-up link", api.EnrollRequest{Token: "guess", Device: "desk", PublicKey: pub(t), KeyFrom: "browser"}},
		{"a used link", api.EnrollRequest{Token: one, Device: "desk", PublicKey: pub(t), KeyFrom: "browser"}},
		{"a device name enrolled already", api.EnrollRequest{Token: token, Device: "laptop", PublicKey: pub(t), KeyFrom: "browser"}},
		{"a device name waiting already", api.EnrollRequest{Token: token, Device: "phone", PublicKey: pub(t), KeyFrom: "browser"}},
		{"a key of another organisation's peer", api.EnrollRequest{Token: token, Device: "desk", PublicKey: other.Peer.PublicKey, KeyFrom: "pasted"}},
	} {
		w := post(t, s, "/enroll/api/submit", "192.0.2."+strconv.Itoa(10+i), tc.req)
		if first == nil {
			first = w
			continue
		}
		if w.Code != first.Code || w.Body.String() != first.Body.String() {
			t.Errorf("%s: %d %s; a made-up link: %d %s", tc.why, w.Code, w.Body, first.Code, first.Body)
		}
	}
}

// TestGlobalCaps: beside the per-source limits, submissions and polls
// are capped for all sources together, so a flood from more addresses
// than the per-source limits can tell apart still costs the daemon a
// bounded amount of work a second.
func TestGlobalCaps(t *testing.T) {
	s, _, _ := newServer(t)
	key := pub(t)
	for _, tc := range []struct {
		what, path string
		body       any
		limit      int
	}{
		{"polls", "/enroll/api/status", api.EnrollStatusRequest{Request: "acme/abcdefgh", Secret: "s"}, 1000},
		{"submissions", "/enroll/api/submit", api.EnrollRequest{Token: "guess", Device: "x", PublicKey: key, KeyFrom: "browser"}, 50},
	} {
		passed := 0
		start := time.Now()
		for i := 0; i < 3000; i++ {
			src := "198.51." + strconv.Itoa(100+i/250) + "." + strconv.Itoa(1+i%250)
			if w := post(t, s, tc.path, src, tc.body); w.Code != http.StatusTooManyRequests {
				passed++
			}
		}
		seconds := int(time.Since(start)/time.Second) + 1
		if passed > tc.limit*seconds {
			t.Errorf("%d %s from 3000 sources passed in %d s, want at most %d a second", passed, tc.what, seconds, tc.limit)
		}
	}
}

// TestSuppressedRefusalsAreCounted: the refusals not audited one by one
// (one a minute per source, 60 a minute in all) are counted, and the
// count, with the number of sources, reaches the audit log.
func TestSuppressedRefusalsAreCounted(t *testing.T) {
	s, svc, _ := newServer(t)
	s.summaryAfter = 50 * time.Millisecond
	key := pub(t)
	for i := 0; i < 100; i++ {
		src := "198.51.100." + strconv.Itoa(1+i%80)
		post(t, s, "/enroll/api/submit", src, api.EnrollRequest{Token: "guess", Device: "x", PublicKey: key, KeyFrom: "browser"})
	}
	ctx := service.WithActor(context.Background(), "root")
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs, err := svc.Audit(ctx, service.AuditFilter{Action: "enroll.refused"})
		if err != nil {
			t.Fatal(err)
		}
		var summary string
		for _, ev := range evs {
			if ev.Target == "summary" {
				raw, _ := json.Marshal(ev.After)
				summary = string(raw)
			}
		}
		// 60 audited one by one, from 60 sources; 40 not, from 20 of
		// those and the 20 others.
		if len(evs) == 61 && strings.Contains(summary, "40 more refusals from 40 sources") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d refusals audited, summary %s; want 60 and 40 more refusals from 40 sources", len(evs), summary)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stalled is a body whose sender has gone quiet until released.
type stalled struct {
	reading, release chan struct{}
	once             sync.Once
}

func (b *stalled) Read([]byte) (int, error) {
	b.once.Do(func() { close(b.reading) })
	<-b.release
	return 0, io.ErrUnexpectedEOF
}

// TestSlowClientHoldsNobody: calls pass the limits one at a time, but no
// call waits on its client in turn: a partner whose body trickles in (or
// never comes) holds up no other.
func TestSlowClientHoldsNobody(t *testing.T) {
	s, _, _ := newServer(t)
	body := &stalled{reading: make(chan struct{}), release: make(chan struct{})}
	slow := httptest.NewRequest(http.MethodPost, "/enroll/api/submit", body)
	slow.RemoteAddr = "192.0.2.1:40000"
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeHTTP(httptest.NewRecorder(), slow)
	}()
	t.Cleanup(func() {
		close(body.release)
		<-done
	})
	<-body.reading
	answered := make(chan int, 1)
	go func() {
		answered <- post(t, s, "/enroll/api/status", "192.0.2.2", api.EnrollStatusRequest{Request: "acme/abcdefgh", Secret: "s"}).Code
	}()
	select {
	case code := <-answered:
		if code != http.StatusNotFound {
			t.Errorf("a poll while another partner's body is stalled: %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Error("a poll waited 5 s behind a stalled body")
	}
}
