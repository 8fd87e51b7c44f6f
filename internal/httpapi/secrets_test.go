package httpapi_test

import (
	"context"
	"io"
	"os/user"
	"testing"

	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/client"
)

// TestReadingSecretsIsAudited: what shows a preshared key (peer config,
// backup, export) leaves an event naming the caller, from SO_PEERCRED.
func TestReadingSecretsIsAudited(t *testing.T) {
	c, _, _ := startServer(t)
	ctx := context.Background()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.IssuePeer(ctx, "acme", api.IssuePeerRequest{Name: "laptop"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PeerConfig(ctx, "acme", "laptop"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Export(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Backup(ctx, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ action, target string }{
		{"peer.config", "acme/laptop"},
		{"state.export", "state"},
		{"state.backup", "state"},
	} {
		evs, err := c.Audit(ctx, client.AuditQuery{Action: want.action})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Target != want.target || evs[0].Actor != me.Username {
			t.Errorf("%s: events %+v, want one on %s by %s", want.action, evs, want.target, me.Username)
		}
	}
}
