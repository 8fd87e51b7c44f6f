package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// TestFloodKeepsPeerIssueFast measures what a flood of made-up tokens
// costs an admin: the median time of `peer issue` (the real service on a
// real store, fsync and all) while idle, then while 1,000 sources post
// bad tokens through the enrollment handler, for as long again; and fails
// if the flood more than doubles it. The flood comes from a number of
// flooders (goroutines, like the server's connections), at a rate in all
// (0: as fast as they can, which on a small machine measures the
// flooders as much as the server). It runs only when asked, for the time
// asked (each phase):
//
//	EXTRANET_FLOOD=60s [EXTRANET_FLOOD_RATE=10000] [EXTRANET_FLOOD_WORKERS=8] \
//	  go test -count=1 -run TestFloodKeepsPeerIssueFast -v ./internal/enroll/
func TestFloodKeepsPeerIssueFast(t *testing.T) {
	phase, err := time.ParseDuration(os.Getenv("EXTRANET_FLOOD"))
	if err != nil {
		t.Skip("a measurement of some seconds: set EXTRANET_FLOOD=10s (each phase) to run it")
	}
	workers, rate := 8, 10000
	if n, err := strconv.Atoi(os.Getenv("EXTRANET_FLOOD_WORKERS")); err == nil && n > 0 {
		workers = n
	}
	if n, err := strconv.Atoi(os.Getenv("EXTRANET_FLOOD_RATE")); err == nil && n >= 0 {
		rate = n
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "x.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/10"), 24)
	svc := service.New(service.Options{DB: db, Plan: plan, Endpoint: "gw.example:51820", EnrollURL: "https://gw.example:8443",
		GatewayPublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="})
	s := New(Options{Service: svc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx := service.WithActor(context.Background(), "root")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateInvite(ctx, "acme", api.CreateInviteRequest{Devices: 5}); err != nil {
		t.Fatal(err)
	}
	issued := 0
	// issue calls `peer issue` ten times a second, as admins might in a
	// busy hour, for d, and returns the median.
	issue := func(d time.Duration) (time.Duration, int) {
		var took []time.Duration
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
			issued++
			start := time.Now()
			if _, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "p" + strconv.Itoa(issued)}); err != nil {
				t.Fatal(err)
			}
			took = append(took, time.Since(start))
		}
		slices.Sort(took)
		return took[len(took)/2], len(took)
	}
	idle, n := issue(phase)
	t.Logf("idle: peer issue p50 %s over %d calls", idle, n)

	// What each source sends, made before the clock runs: the flooders'
	// own work is not the server's.
	key := pub(t)
	bodies, addrs := make([][]byte, 1000), make([]string, 1000)
	for i := range bodies {
		bodies[i], _ = json.Marshal(api.EnrollRequest{Token: "guess-" + strconv.Itoa(i), Device: "x", PublicKey: key, KeyFrom: "browser"})
		addrs[i] = fmt.Sprintf("198.18.%d.%d:40000", i/250, 1+i%250)
	}
	var sent atomic.Int64
	codes := make([]atomic.Int64, 600)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k, i := 0, w; ; k, i = k+1, i+workers {
				if rate > 0 {
					// This flooder's k-th request is due at k/(rate/workers) s.
					if wait := time.Until(start.Add(time.Duration(k) * time.Second * time.Duration(workers) / time.Duration(rate))); wait > 0 {
						select {
						case <-stop:
							return
						case <-time.After(wait):
						}
					}
				}
				select {
				case <-stop:
					return
				default:
				}
				r := httptest.NewRequest(http.MethodPost, "/enroll/api/submit", bytes.NewReader(bodies[i%1000]))
				r.RemoteAddr = addrs[i%1000]
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, r)
				sent.Add(1)
				if rec.Code < len(codes) {
					codes[rec.Code].Add(1)
				}
			}
		}()
	}
	flooded, n := issue(phase)
	close(stop)
	wg.Wait()
	answers := map[int]int64{}
	for c := range codes {
		if v := codes[c].Load(); v > 0 {
			answers[c] = v
		}
	}
	evs, err := svc.Audit(ctx, service.AuditFilter{Action: "enroll.refused"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flood: peer issue p50 %s over %d calls (%.2fx idle); %d bad submissions from 1000 sources by %d flooders (%.0f/s, asked %d/s), answered %v; %d refusals audited",
		flooded, n, float64(flooded)/float64(idle), sent.Load(), workers, float64(sent.Load())/phase.Seconds(), rate, answers, len(evs))
	if flooded > 2*idle {
		t.Errorf("a flood of bad tokens takes peer issue's p50 from %s to %s, more than twice", idle, flooded)
	}
}
