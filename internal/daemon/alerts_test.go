package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/alert"
	"github.com/extranetgw/extranet/pkg/api"
)

// TestExpiryAlertsDigestMany: up to five expiring things get an alert
// each; more get one alert that lists them, counted.
func TestExpiryAlertsDigestMany(t *testing.T) {
	var mu sync.Mutex
	var got []api.Alert
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a api.Alert
		json.NewDecoder(r.Body).Decode(&a)
		mu.Lock()
		got = append(got, a)
		mu.Unlock()
	}))
	defer srv.Close()
	s, err := alert.New(alert.Options{URL: srv.URL, Secret: []byte("0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	a := &alerts{sender: s, within: 7 * 24 * time.Hour, log: slog.New(slog.DiscardHandler)}
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	batch := func(n int) []expiring {
		var es []expiring
		for i := range n {
			es = append(es, expiring{key: fmt.Sprint(i), org: "acme", peer: fmt.Sprintf("acme/p%d", i), what: fmt.Sprintf("peer acme/p%d", i), at: now.Add(72 * time.Hour)})
		}
		return es
	}
	a.announce(batch(5), now)
	a.announce(batch(12), now)
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Sent < 6 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 6 {
		t.Fatalf("%d alerts: %+v", len(got), got)
	}
	d := got[5]
	if !strings.HasPrefix(d.Text, "12 peers and organisations expire within 7 days: acme/p0 (2026-12-10T12:00:00Z), ") || !strings.Contains(d.Text, "and 7 more") {
		t.Errorf("the digest: %q", d.Text)
	}
	if items, _ := d.Details.(map[string]any)["expiring"].([]any); len(items) != 12 {
		t.Errorf("the digest's details list %d", len(items))
	}
}
