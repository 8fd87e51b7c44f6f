package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
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
	db, err := store.Open(filepath.Join(t.TempDir(), "x.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 24)
	svc := service.New(service.Options{DB: db, Plan: plan, Endpoint: "gw.example:51820", EnrollURL: "https://gw.example:8443",
		GatewayPublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="})
	var logs bytes.Buffer
	return New(Options{Service: svc, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}), svc, &logs
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
	codes := map[int]int{}
	for i := 0; i < 200; i++ {
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
// connection comes from a proxy the admin named.
func TestTrustedProxy(t *testing.T) {
	s, _, _ := newServer(t)
	s.o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct{ remote, fwd, want string }{
		{"10.1.2.3:5", "192.0.2.1, 198.51.100.7", "198.51.100.7"},
		{"203.0.113.9:5", "192.0.2.1", "203.0.113.9"},
		{"10.1.2.3:5", "", "10.1.2.3"},
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
	limited := 0
	for i := 0; i < 100; i++ {
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
