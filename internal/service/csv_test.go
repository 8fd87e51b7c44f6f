package service

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

func newPub(t *testing.T) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

// peersOf reads every stored peer, secrets included, keyed by ORG/NAME.
func peersOf(t *testing.T, db *store.DB) map[string]store.Peer {
	t.Helper()
	out := map[string]store.Peer{}
	if err := db.View(func(tx *store.Tx) error {
		return tx.Peers("", func(p *store.Peer) error {
			out[p.ID()] = *p
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestExportImportRoundTrip moves a gateway holding every state of
// organisation and peer into an empty one, and expects the same gateway.
func TestExportImportRoundTrip(t *testing.T) {
	ctx := WithActor(context.Background(), "alice")
	src, clk, srcDB := newTestService(t)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	partnerKey := "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="

	// zeta is created first, so its block comes before acme's: an import
	// in name order must not swap them.
	must(src.CreateOrg(ctx, api.CreateOrgRequest{Name: "zeta", Grants: []string{"10.9.0.0/16:icmp"}}))
	must(src.IssuePeer(ctx, "zeta", api.IssuePeerRequest{Name: "z1"}))
	must(src.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme", DisplayName: "ACME, Corp", Contact: "noc@acme.example",
		Grants: []string{"10.20.0.0/24", "10.20.5.10/32:tcp/443"}, Expires: "2027-06-30"}))
	must(src.CreateGroup(ctx, "acme", api.CreateGroupRequest{Name: "support", Grants: []string{"10.20.0.10/32:tcp/22", "10.20.5.10/32:tcp/443"}}))
	must(src.CreateGroup(ctx, "acme", api.CreateGroupRequest{Name: "empty"}))
	must(src.CreateOrg(ctx, api.CreateOrgRequest{Name: "paused", Grants: []string{"10.30.0.0/16"}}))
	must(src.CreateOrg(ctx, api.CreateOrgRequest{Name: "ended", Grants: []string{"10.40.0.0/16"}, Expires: "1d"}))
	table := []struct {
		org, name, key, expires, group string
	}{
		{"acme", "active", "", "", ""},
		{"acme", "supplied", partnerKey, "90d", "support"},
		{"acme", "suspended", "", "", "support"},
		{"acme", "revoked", "", "", "support"},
		{"acme", "dated", "", "1d", ""},
		{"acme", "online", "", "", ""},
		{"paused", "p1", "", "", ""},
		{"ended", "e1", "", "", ""},
	}
	for _, p := range table {
		must(src.IssuePeer(ctx, p.org, api.IssuePeerRequest{Name: p.name, PublicKey: p.key, Expires: p.expires, Group: p.group}))
	}
	must(src.SuspendPeer(ctx, "acme", "suspended"))
	must(src.RevokePeer(ctx, "acme", "revoked"))
	must(src.SuspendOrg(ctx, "paused"))
	clk.Advance(2 * 24 * time.Hour)
	setHandshake(t, srcDB, "acme", "online", clk.Now().Add(-time.Minute))
	must(src.Expire(ctx, api.ExpireRequest{}))

	wantStates := map[string]string{
		"acme/active": api.StateActive, "acme/supplied": api.StateActive, "acme/suspended": api.StateSuspended,
		"acme/revoked": api.StateRevoked, "acme/dated": api.StateExpired, "acme/online": api.StateActive,
		"paused/p1": api.StateActive, "ended/e1": api.StateExpired, "zeta/z1": api.StateActive,
	}
	before := peersOf(t, srcDB)
	for id, st := range wantStates {
		if before[id].State != st {
			t.Fatalf("setup: %s is %s, want %s", id, before[id].State, st)
		}
	}
	srcOrgs, err := src.ListOrgs(ctx)
	if err != nil {
		t.Fatal(err)
	}

	csv, err := src.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dst, dstClk, dstDB := newTestService(t)
	dstClk.t = clk.Now()
	if _, err := dst.Import(ctx, csv); err != nil {
		t.Fatalf("import of the export: %v\n%s", err, csv)
	}

	dstOrgs, err := dst.ListOrgs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Who made a record and when it last changed are the import's.
	norm := func(os []api.Org) []api.Org {
		out := append([]api.Org(nil), os...)
		for i := range out {
			out[i].CreatedBy, out[i].UpdatedAt = "", time.Time{}
		}
		return out
	}
	if got, want := norm(dstOrgs), norm(srcOrgs); !reflect.DeepEqual(got, want) {
		t.Errorf("organisations differ after the round trip:\n got  %+v\n want %+v", got, want)
	}
	for _, org := range []string{"acme", "zeta"} {
		sg, err1 := src.ListGroups(ctx, org)
		dg, err2 := dst.ListGroups(ctx, org)
		// Ids are each gateway's own; names are what travels.
		for i := range sg {
			sg[i].CreatedBy, sg[i].UpdatedAt, sg[i].ID = "", time.Time{}, 0
		}
		for i := range dg {
			dg[i].CreatedBy, dg[i].UpdatedAt, dg[i].ID = "", time.Time{}, 0
			// The default group is made by the import.
			if dg[i].Default && i < len(sg) {
				dg[i].CreatedAt = sg[i].CreatedAt
			}
		}
		if err1 != nil || err2 != nil || !reflect.DeepEqual(dg, sg) {
			t.Errorf("%s's groups differ after the round trip (%v %v):\n got  %+v\n want %+v", org, err1, err2, dg, sg)
		}
	}

	after := peersOf(t, dstDB)
	if len(after) != len(before) {
		t.Errorf("%d peers after the round trip, want %d", len(after), len(before))
	}
	for id, b := range before {
		a, ok := after[id]
		if !ok {
			t.Errorf("%s: missing after the round trip", id)
			continue
		}
		type fields struct {
			PublicKey, PresharedKey, State, KeyOrigin string
			Address, Group                            string
			Expires, LastHandshake                    *time.Time
			CreatedAt                                 time.Time
		}
		pick := func(p store.Peer) fields {
			f := fields{p.PublicKey, p.PresharedKey, p.State, p.KeyOrigin, p.Address.String(), p.Group, p.Expires, p.LastHandshake, p.CreatedAt}
			if p.State == api.StateRevoked {
				// A revoked peer's preshared key opens nothing; it need not travel.
				f.PresharedKey = ""
			}
			return f
		}
		if got, want := pick(a), pick(b); !reflect.DeepEqual(got, want) {
			t.Errorf("%s differs after the round trip:\n got  %+v\n want %+v", id, got, want)
		}
	}
	// A key revoked on the old gateway stays burnt on the new one.
	if err := dstDB.View(func(tx *store.Tx) error {
		if owner := tx.KeyOwner(before["acme/revoked"].PublicKey); owner != "acme/revoked" {
			t.Errorf("revoked key owner on the new gateway: %q, want acme/revoked", owner)
		}
		for id, p := range after {
			if p.State != api.StateRevoked && tx.AddrOwner(p.Address) != id {
				t.Errorf("address %s of %s is not claimed by it (owner %q)", p.Address, id, tx.AddrOwner(p.Address))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestImportOldFormat keeps files written before the lossless columns
// importable: peers come in active with a new preshared key.
func TestImportOldFormat(t *testing.T) {
	ctx := context.Background()
	svc, _, db := newTestService(t)
	old := "kind,org,name,display_name,contact,grants,public_key,expires\n" +
		"org,acme,,ACME Corp,noc@acme.example,10.20.0.0/24 10.20.5.10/32:tcp/443,,2027-06-30\n" +
		"peer,acme,laptop-1,,,,xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=,\n"
	res, err := svc.Import(ctx, old)
	if err != nil || res.Orgs != 1 || res.Peers != 1 {
		t.Fatalf("old-format import: %+v, %v", res, err)
	}
	p := peersOf(t, db)["acme/laptop-1"]
	if p.State != api.StateActive || p.KeyOrigin != api.KeySupplied || p.PresharedKey == "" || p.Address.String() != "100.64.1.1" {
		t.Errorf("imported peer: %+v", p)
	}
	if !strings.Contains(strings.Join(CSVHeader, ","), "kind,org,name,display_name,contact,grants,public_key,expires") {
		t.Errorf("the header no longer starts with the old columns: %v", CSVHeader)
	}
}

// TestImportChecksLosslessColumns: the new columns are checked like the
// old ones, and every bad field is named.
func TestImportChecksLosslessColumns(t *testing.T) {
	svc, _, _ := newTestService(t)
	in := strings.Join(CSVHeader, ",") + "\n" +
		"org,acme,,,,10.20.0.0/24,,2001-01-01,dormant,yesterday,100.64.1.0/24 100.64.0.0/24 10.0.0.0/24,,,,\n" +
		"peer,acme,a,,,,xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=,,active,,,100.64.9.1,short,stolen,\n" +
		"peer,acme,b,,,," + newPub(t) + ",,active,,,100.64.1.0,,,\n"
	_, err := svc.Import(context.Background(), in)
	var ae *api.Error
	if err == nil || !errors.As(err, &ae) || ae.Code != api.CodeInvalid {
		t.Fatalf("import: %v, want invalid", err)
	}
	for _, want := range []string{
		`row 2, state: "dormant" is not one of active, suspended, expired`,
		`row 2, created_at: "yesterday" is not an RFC 3339 time`,
		"row 2, blocks: 100.64.0.0/24 is the gateway's own block",
		"row 2, blocks: 10.0.0.0/24 is not a /24 block of this gateway's tunnel network",
		"row 3, address: 100.64.9.1 is not a peer address in the blocks of its organisation (100.64.1.0/24)",
		"row 3, preshared_key: not base64 of 32 bytes",
		`row 3, key_origin: "stolen" is not supplied or generated`,
		"row 4, address: 100.64.1.0 is not a peer address",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "row 2, expires") {
		t.Errorf("an ended contract was refused: %v", err)
	}
}

// TestImportAllocatesAroundGivenAddresses: a peer without an address never
// takes one that a later row gives.
func TestImportAllocatesAroundGivenAddresses(t *testing.T) {
	svc, _, db := newTestService(t)
	in := strings.Join(CSVHeader, ",") + "\n" +
		"org,acme,,,,10.20.0.0/24,,,,,100.64.1.0/24,,,,\n" +
		"peer,acme,new,,,,xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=,,,,,,,,\n" +
		"peer,acme,moved,,,," + newPub(t) + ",,,,,100.64.1.1,,,\n"
	if _, err := svc.Import(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	ps := peersOf(t, db)
	if ps["acme/moved"].Address.String() != "100.64.1.1" || ps["acme/new"].Address == ps["acme/moved"].Address {
		t.Errorf("addresses: new %s, moved %s; want moved on 100.64.1.1 and new elsewhere", ps["acme/new"].Address, ps["acme/moved"].Address)
	}
}
