package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/httpapi"
	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/client"
	"github.com/extranetgw/extranet/pkg/wgconfig"
)

// startServer serves the real API on a real unix socket over a real bbolt
// file in a temp dir; only the kernel side is absent.
func startServer(t *testing.T) (*client.Client, string, *store.DB) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "extranet.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	plan, err := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 24)
	if err != nil {
		t.Fatal(err)
	}
	svc := service.New(service.Options{
		DB: db, Plan: plan, Endpoint: "vpn.example.com:51820",
		GatewayPublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httpapi.New(svc, log)
	sock := filepath.Join(dir, "api.sock")
	l, err := httpapi.Listen(sock, "", log)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return client.New(sock), sock, db
}

func TestSocketIsPrivate(t *testing.T) {
	_, sock, _ := startServer(t)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %o, want 600 when no group is configured", fi.Mode().Perm())
	}
	if _, err := httpapi.Listen(sock, "", slog.Default()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Listen on a live socket: err = %v, want 'in use'", err)
	}
}

func TestOrgAndPeerLifecycle(t *testing.T) {
	c, _, _ := startServer(t)
	ctx := context.Background()
	o, err := c.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24", "10.20.5.10/32:tcp/443"}})
	if err != nil {
		t.Fatal(err)
	}
	if o.State != api.StateActive || len(o.Grants) != 2 {
		t.Fatalf("created org = %+v", o)
	}
	if o.CreatedBy == "" || o.CreatedBy == "unknown" {
		t.Errorf("CreatedBy = %q, want the caller's unix user from SO_PEERCRED", o.CreatedBy)
	}
	res, err := c.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Peer.Address != "100.64.1.1" {
		t.Errorf("first peer address = %s, want 100.64.1.1 (block 0 is the gateway's)", res.Peer.Address)
	}
	if !strings.Contains(res.Config, "PrivateKey = ") || !strings.Contains(res.Config, "Endpoint = vpn.example.com:51820") {
		t.Errorf("issued config lacks the private key or endpoint:\n%s", res.Config)
	}
	cfg, err := c.PeerConfig(ctx, "acme", "laptop")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := wgconfig.Parse([]byte(cfg.Config)); err != nil || again.Interface.PrivateKey != "" {
		t.Errorf("config printed again does not parse, or carries a private key: %v\n%s", err, cfg.Config)
	}
	if _, err := c.PeerAction(ctx, "acme", "laptop", "revoke"); err != nil {
		t.Fatal(err)
	}
	_, err = c.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "again", PublicKey: res.Peer.PublicKey})
	assertCode(t, err, api.CodeConflict, "revoked key reused")

	evs, err := c.Audit(ctx, client.AuditQuery{Org: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Action)
	}
	if got := strings.Join(actions, ","); got != "org.create,peer.issue,peer.config,peer.revoke" {
		t.Errorf("audit actions = %s", got)
	}
	v, err := c.VerifyAudit(ctx)
	if err != nil || !v.OK {
		t.Errorf("audit verify = %+v, %v", v, err)
	}
}

func assertCode(t *testing.T, err error, code, what string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != code {
		t.Errorf("%s: err = %v, want code %s", what, err, code)
	}
}

func TestBadInputLeavesStoreUnchanged(t *testing.T) {
	c, _, db := startServer(t)
	ctx := context.Background()
	if _, err := c.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		var b bytes.Buffer
		db.View(func(tx *store.Tx) error {
			tx.Orgs(func(o *store.Org) error { fmt.Fprintf(&b, "%+v\n", *o); return nil })
			tx.Peers("", func(p *store.Peer) error { fmt.Fprintf(&b, "%+v\n", *p); return nil })
			return tx.Events(0, func(e *store.Event) error { fmt.Fprintf(&b, "%d %s\n", e.Seq, e.Hash); return nil })
		})
		return b.String()
	}
	before := snapshot()
	cases := []struct {
		name string
		call func() error
		code string
	}{
		{"uppercase org", func() error { _, err := c.CreateOrg(ctx, api.CreateOrgRequest{Name: "ACME"}); return err }, api.CodeInvalid},
		{"duplicate org", func() error { _, err := c.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}); return err }, api.CodeConflict},
		{"host bits", func() error { _, err := c.Grant(ctx, "acme", []string{"10.20.0.1/24"}, false); return err }, api.CodeInvalid},
		{"unknown proto", func() error { _, err := c.Grant(ctx, "acme", []string{"10.20.0.0/24:sctp/1"}, false); return err }, api.CodeInvalid},
		{"port zero", func() error { _, err := c.Grant(ctx, "acme", []string{"10.20.0.0/24:tcp/0"}, false); return err }, api.CodeInvalid},
		{"reversed range", func() error { _, err := c.Grant(ctx, "acme", []string{"10.20.0.0/24:udp/9-1"}, false); return err }, api.CodeInvalid},
		{"icmp port", func() error { _, err := c.Grant(ctx, "acme", []string{"10.20.0.0/24:icmp/8"}, false); return err }, api.CodeInvalid},
		{"tunnel overlap", func() error { _, err := c.Grant(ctx, "acme", []string{"100.64.0.0/10"}, false); return err }, api.CodeInvalid},
		{"one good one bad grant", func() error { _, err := c.Grant(ctx, "acme", []string{"10.1.0.0/16", "bad"}, false); return err }, api.CodeInvalid},
		{"ungrant absent", func() error { _, err := c.Ungrant(ctx, "acme", []string{"10.9.0.0/16"}); return err }, api.CodeNotFound},
		{"control char contact", func() error {
			_, err := c.CreateOrg(ctx, api.CreateOrgRequest{Name: "beta", Contact: "a\nb"})
			return err
		}, api.CodeInvalid},
		{"bad key", func() error {
			_, err := c.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "p", PublicKey: "abc"})
			return err
		}, api.CodeInvalid},
		{"zero key", func() error {
			_, err := c.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "p", PublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
			return err
		}, api.CodeInvalid},
		{"past expiry", func() error {
			_, err := c.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "p", Expires: "2001-01-01"})
			return err
		}, api.CodeInvalid},
		{"unknown org", func() error { _, err := c.IssuePeer(ctx, "nope", api.IssuePeerRequest{Name: "p"}); return err }, api.CodeNotFound},
		{"unknown peer", func() error { _, err := c.GetPeer(ctx, "acme", "nope"); return err }, api.CodeNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assertCode(t, tc.call(), tc.code, tc.name)
		})
	}
	if after := snapshot(); after != before {
		t.Errorf("failed requests changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestSuspendedOrgCannotIssue(t *testing.T) {
	c, _, _ := startServer(t)
	ctx := context.Background()
	c.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"})
	if _, err := c.OrgAction(ctx, "acme", "suspend"); err != nil {
		t.Fatal(err)
	}
	_, err := c.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "p"})
	assertCode(t, err, api.CodeConflict, "issue in suspended org")
}

func TestConcurrentIssueGetsDistinctAddresses(t *testing.T) {
	c, _, _ := startServer(t)
	ctx := context.Background()
	if _, err := c.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	addrs := make([]string, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := c.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: fmt.Sprintf("p%d", i)})
			addrs[i], errs[i] = res.Peer.Address, err
		}(i)
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("issue p%d: %v", i, errs[i])
		}
		if seen[addrs[i]] {
			t.Fatalf("address %s handed out twice", addrs[i])
		}
		seen[addrs[i]] = true
	}
}

func TestFullBlockGetsAnother(t *testing.T) {
	c, _, _ := startServer(t)
	ctx := context.Background()
	c.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"})
	var last api.IssuedPeer
	for i := 0; i < 255; i++ {
		var err error
		if last, err = c.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: fmt.Sprintf("p%d", i)}); err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
	}
	if last.Peer.Address != "100.64.2.1" {
		t.Errorf("255th peer address = %s, want 100.64.2.1 (254 fit in a /24 block)", last.Peer.Address)
	}
	o, _ := c.GetOrg(ctx, "acme")
	if strings.Join(o.Blocks, ",") != "100.64.1.0/24,100.64.2.0/24" {
		t.Errorf("blocks = %v", o.Blocks)
	}
}

// rawRequest sends a hand-made request, to test what a sloppy or hostile
// client could send.
func rawRequest(t *testing.T, sock, method, path string, body io.Reader) (int, api.Error) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequest(method, "http://x"+path, body)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ae api.Error
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &ae)
	return resp.StatusCode, ae
}

func TestRequestChecks(t *testing.T) {
	_, sock, _ := startServer(t)
	big := strings.NewReader(`{"name":"` + strings.Repeat("a", httpapi.MaxBody) + `"}`)
	if code, ae := rawRequest(t, sock, "POST", "/v1/orgs", big); code != http.StatusRequestEntityTooLarge || ae.Code != api.CodeTooLarge {
		t.Errorf("oversized body: %d %+v", code, ae)
	}
	// An import may be larger (a whole gateway's export), though not without end.
	csv := func(n int) io.Reader { return strings.NewReader(`{"csv":"` + strings.Repeat("a", n) + `"}`) }
	if code, ae := rawRequest(t, sock, "POST", "/v1/import", csv(4*httpapi.MaxBody)); code == http.StatusRequestEntityTooLarge {
		t.Errorf("a 4 MiB import was refused as too large: %+v", ae)
	}
	if code, ae := rawRequest(t, sock, "POST", "/v1/import", csv(httpapi.MaxImportBody)); code != http.StatusRequestEntityTooLarge || ae.Code != api.CodeTooLarge {
		t.Errorf("oversized import: %d %+v", code, ae)
	}
	if code, ae := rawRequest(t, sock, "POST", "/v1/orgs", strings.NewReader(`{"name":"x","grantz":["10.0.0.0/8"]}`)); code != http.StatusBadRequest || !strings.Contains(ae.Message, "grantz") {
		t.Errorf("unknown field: %d %+v", code, ae)
	}
	if code, ae := rawRequest(t, sock, "GET", "/v2/orgs", nil); code != http.StatusNotFound || !strings.Contains(ae.Message, "v1") {
		t.Errorf("unknown version: %d %+v", code, ae)
	}
}

// TestCheckDecidesWithoutActing: a request with api.CheckHeader is decided
// (here allowed: the caller is root) and answered 204 without running, so
// nothing changes; its answer to a bad query is the error as usual.
func TestCheckDecidesWithoutActing(t *testing.T) {
	c, _, _ := startServer(t)
	ctx := context.Background()
	if _, err := c.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.20.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "laptop"}); err != nil {
		t.Fatal(err)
	}
	check := c.Checking()
	if _, err := check.PeerAction(ctx, "acme", "laptop", "revoke"); err != nil {
		t.Fatalf("check of a revoke root may make: %v", err)
	}
	if err := check.DeleteOrg(ctx, "acme", true); err != nil {
		t.Fatalf("check of a delete root may make: %v", err)
	}
	if p, err := c.GetPeer(ctx, "acme", "laptop"); err != nil || p.State != api.StateActive {
		t.Errorf("after the checks the peer is %+v (%v), want active", p, err)
	}
	if _, err := c.GetOrg(ctx, "acme"); err != nil {
		t.Errorf("after the checks the org is gone: %v", err)
	}
	if _, err := check.ListPeers(ctx, "ACME", ""); err == nil {
		t.Error("a check with a bad query was not refused")
	}
}
