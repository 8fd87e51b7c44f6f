package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extranetgw/extranet/pkg/api"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestSignAndVerify(t *testing.T) {
	body := []byte(`{"kind":"scan.suspended"}`)
	now := time.Unix(1_800_000_000, 0)
	sig := Sign(secret, now.Unix(), body)
	if err := Verify(secret, sig, "1800000000", body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"another body":   Verify(secret, sig, "1800000000", []byte(`{"kind":"x"}`), now, 5*time.Minute),
		"another secret": Verify([]byte("another secret, 16+ bytes"), sig, "1800000000", body, now, 5*time.Minute),
		"another time":   Verify(secret, sig, "1800000001", body, now, 5*time.Minute),
		"replayed later": Verify(secret, sig, "1800000000", body, now.Add(10*time.Minute), 5*time.Minute),
		"no timestamp":   Verify(secret, sig, "", body, now, 5*time.Minute),
	} {
		if err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

// receiver is a webhook that fails its first failures requests.
type receiver struct {
	mu       sync.Mutex
	failures int
	got      []api.Alert
	ids      []string
	bad      []string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := Verify(secret, r.Header.Get(HeaderSignature), r.Header.Get(HeaderTimestamp), body, time.Now(), 5*time.Minute); err != nil {
		rc.bad = append(rc.bad, err.Error())
	}
	rc.ids = append(rc.ids, r.Header.Get(HeaderID))
	if rc.failures > 0 {
		rc.failures--
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	var a api.Alert
	if err := json.Unmarshal(body, &a); err != nil {
		rc.bad = append(rc.bad, err.Error())
	}
	rc.got = append(rc.got, a)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got)
}

// running returns a Sender that runs until the test ends.
func running(t *testing.T, o Options) *Sender {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// TestDeliversInOrderAfterFailures: alerts arrive signed, in order, each
// once, after the receiver failed twice; the retry keeps the alert's ID;
// the counts say what happened.
func TestDeliversInOrderAfterFailures(t *testing.T) {
	rc := &receiver{failures: 2}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s := running(t, Options{URL: srv.URL + "/hook/T0KEN", Secret: secret, Gateway: "vpn.example.com:51820", MaxBackoff: 50 * time.Millisecond})
	s.Send(api.Alert{Kind: api.AlertScanWarned, Text: "first"})
	s.Send(api.Alert{Kind: api.AlertScanSuspended, Text: "second"})
	deadline := time.Now().Add(10 * time.Second)
	for rc.count() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.got) != 2 || rc.got[0].Text != "first" || rc.got[1].Text != "second" || rc.got[0].Gateway != "vpn.example.com:51820" || rc.got[0].ID == "" {
		t.Fatalf("received %+v", rc.got)
	}
	if len(rc.bad) > 0 {
		t.Errorf("bad deliveries: %v", rc.bad)
	}
	// Three attempts of the first alert, all with its ID, then the second.
	if len(rc.ids) != 4 || rc.ids[0] != rc.ids[2] || rc.ids[2] != rc.got[0].ID || rc.ids[3] != rc.got[1].ID {
		t.Errorf("ids of the attempts: %v", rc.ids)
	}
	st := s.Stats()
	if st.Sent != 2 || st.Failures != 2 || st.Pending != 0 || st.Dropped != 0 || st.LastError != "" || st.Webhook != strings.TrimPrefix(srv.URL, "http://") {
		t.Errorf("stats: %+v", st)
	}
}

// TestErrorsKeepTheURLsSecret: a webhook URL's path can be a token; no
// error or status shows it.
func TestErrorsKeepTheURLsSecret(t *testing.T) {
	s, err := New(Options{URL: "http://127.0.0.1:1/services/T0KEN", Secret: secret, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.post(context.Background(), "x", []byte("{}")); err == nil || strings.Contains(err.Error(), "T0KEN") {
		t.Errorf("post: %v", err)
	}
	if _, err := New(Options{URL: "ftp://h/T0KEN", Secret: secret}); err == nil || strings.Contains(err.Error(), "T0KEN") {
		t.Errorf("a bad URL: %v", err)
	}
	if _, err := New(Options{URL: "https://h/x", Secret: []byte("short")}); err == nil {
		t.Error("a short secret was taken")
	}
}

// TestAFullQueueDrops: with the receiver away, alerts beyond the queue are
// dropped and counted, never blocking the caller.
func TestAFullQueueDrops(t *testing.T) {
	s, err := New(Options{URL: "http://127.0.0.1:1/", Secret: secret, Queue: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		s.Send(api.Alert{Kind: api.AlertExpiring})
	}
	if st := s.Stats(); st.Pending != 3 || st.Dropped != 2 {
		t.Errorf("stats: %+v", st)
	}
}

// TestTheDocumentedSignature: docs/alerts.md's worked example, which its
// receiver-side check (openssl) verifies in e2e TestDocs, is what Sign
// makes of the same body, secret and time.
func TestTheDocumentedSignature(t *testing.T) {
	doc, err := os.ReadFile("../../docs/alerts.md")
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("{\"id\":\"5f0c1e2d3a4b5c6d7e8f9a0b\",\"kind\":\"expiry.soon\",\"time\":\"2026-12-07T12:00:00Z\",\"gateway\":\"vpn.example.com:51820\",\"org\":\"acme\",\"peer\":\"acme/laptop\",\"text\":\"peer acme/laptop expires on 2026-12-10T12:00:00Z (in 72h0m0s); to keep it: `extranetctl peer extend acme/laptop --expires DATE`\",\"details\":{\"expires\":\"2026-12-10T12:00:00Z\"}}")
	if !bytes.Contains(doc, body) {
		t.Fatal("docs/alerts.md no longer shows the body this test signs")
	}
	sig := Sign([]byte("hunter2-but-longer-0123456789"), 1796644800, body)
	if !bytes.Contains(doc, []byte("sig="+sig+"\n")) {
		t.Errorf("docs/alerts.md's signature is not %s", sig)
	}
	// And the body is what the daemon marshals of such an alert.
	exp := time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC)
	b, err := json.Marshal(api.Alert{ID: "5f0c1e2d3a4b5c6d7e8f9a0b", Kind: api.AlertExpiring, Time: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC),
		Gateway: "vpn.example.com:51820", Org: "acme", Peer: "acme/laptop",
		Text:    "peer acme/laptop expires on 2026-12-10T12:00:00Z (in 72h0m0s); to keep it: `extranetctl peer extend acme/laptop --expires DATE`",
		Details: map[string]any{"expires": exp}})
	if err != nil || !bytes.Equal(b, body) {
		t.Errorf("marshalled:\n%s\nthe doc shows:\n%s", b, body)
	}
}

// TestARefusedAlertDoesNotBlockTheRest: a receiver that refuses an alert
// for good (HTTP 410) gets three tries of it, then the next alert; "later"
// (429) is retried.
func TestARefusedAlertDoesNotBlockTheRest(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a api.Alert
		json.NewDecoder(r.Body).Decode(&a)
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, a.Text)
		switch {
		case a.Text == "gone":
			w.WriteHeader(http.StatusGone)
		case a.Text == "later" && len(seen) < 6:
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	defer srv.Close()
	s := running(t, Options{URL: srv.URL, Secret: secret, MaxBackoff: time.Millisecond})
	s.Send(api.Alert{Kind: api.AlertExpiring, Text: "gone"})
	s.Send(api.Alert{Kind: api.AlertExpiring, Text: "later"})
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Sent < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(seen, ","); got != "gone,gone,gone,later,later,later" {
		t.Errorf("attempts: %s", got)
	}
	if st := s.Stats(); st.Sent != 1 || st.Dropped != 1 || st.LastError != "" {
		t.Errorf("stats: %+v", st)
	}
}
