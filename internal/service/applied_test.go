package service

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// applier answers every Apply with err, or never when hang is set.
type applier struct {
	err  error
	hang bool
}

func (a *applier) Apply(store.Changes) <-chan error {
	ch := make(chan error, 1)
	if !a.hang {
		ch <- a.err
	}
	return ch
}

func TestChangesNotInForceAreReported(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "x.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	plan, _ := ipam.NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 24)
	a := &applier{}
	svc := New(Options{DB: db, Plan: plan, Applier: a, Endpoint: "vpn.example.com:51820",
		GatewayPublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", ApplyTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	notApplied := func(err error) bool {
		var ae *api.Error
		return errors.As(err, &ae) && ae.Code == api.CodeNotApplied && strings.Contains(ae.Message, "saved")
	}

	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", Grants: []string{"10.1.0.0/16"}}); err != nil {
		t.Fatal(err)
	}
	a.err = errors.New("apply firewall: iptables-restore: exit status 4")
	// An ungrant the kernel did not take must not look done…
	if _, err := svc.Ungrant(ctx, "acme", api.GrantsRequest{Grants: []string{"10.1.0.0/16"}}); !notApplied(err) || !strings.Contains(err.Error(), "exit status 4") {
		t.Errorf("ungrant not in force: err = %v, want not_applied naming the cause", err)
	}
	// … though it is saved, and audited.
	if o, _ := svc.GetOrg(ctx, "acme"); len(o.Grants) != 0 {
		t.Errorf("the ungrant was not saved: grants %v", o.Grants)
	}
	// A new peer keeps its config, private key and all, with the warning.
	res, err := svc.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "laptop"})
	if err != nil || !strings.Contains(res.Config, "PrivateKey") || !strings.Contains(res.Warning, "not in force") {
		t.Errorf("issue not in force: err %v, warning %q, config kept %v", err, res.Warning, strings.Contains(res.Config, "PrivateKey"))
	}
	// A reconcile that never answers is reported too, after the timeout.
	a.hang = true
	if _, err := svc.RevokePeer(ctx, "acme", "laptop"); !notApplied(err) || !strings.Contains(err.Error(), "within") {
		t.Errorf("revoke with no reconcile: err = %v", err)
	}
	if p, _ := svc.GetPeer(ctx, "acme", "laptop"); p.State != api.StateRevoked {
		t.Errorf("the revoke was not saved: %s", p.State)
	}
}
