package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// TestKeyAliasesRefusedEverywhere: a public key with bit 255 set is the
// key of the same device as the one without it (X25519 ignores the bit),
// so a second peer with it would slip past the check that no two peers
// share a key. Every way a key comes in refuses it (issue, rotate, import,
// an enrollment with a pasted key), naming it and the key to give instead,
// and changes nothing.
func TestKeyAliasesRefusedEverywhere(t *testing.T) {
	rig := newScopeRig(t)
	var used string
	if err := rig.db.View(func(tx *store.Tx) error {
		p, err := tx.Peer("acme", "laptop")
		if err == nil {
			used = p.PublicKey
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(used)
	if err != nil {
		t.Fatal(err)
	}
	raw[31] |= 0x80
	alias := base64.StdEncoding.EncodeToString(raw)
	refused := func(what string, code int, msg string) {
		t.Helper()
		if code != http.StatusBadRequest || !strings.Contains(msg, alias) || !strings.Contains(msg, used) || !strings.Contains(msg, "bit 255") {
			t.Errorf("%s with %s, the same device's key as acme/laptop's %s: %d %s; want 400 naming both keys and the bit", what, alias, used, code, msg)
		}
	}
	body := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	before := rig.snapshot(t)
	code, b := rig.send(0, http.MethodPost, "/v1/orgs/acme/peers", body(api.IssuePeerRequest{Name: "twin", PublicKey: alias}))
	refused("peer issue", code, string(b))
	code, b = rig.send(0, http.MethodPost, "/v1/peers/globex/server/rotate", body(api.RotateRequest{PublicKey: alias}))
	refused("peer rotate", code, string(b))
	csv := strings.Join(service.CSVHeader[:8], ",") + "\npeer,globex,twin,,,," + alias + ",\n"
	code, b = rig.send(0, http.MethodPost, "/v1/import", body(api.CSV{CSV: csv}))
	refused("import", code, string(b))
	_, err = rig.svc.Enroll(context.Background(), "203.0.113.7", api.EnrollRequest{Token: rig.tokens["acme"], Device: "twin", PublicKey: alias, KeyFrom: service.KeyFromPasted})
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Errorf("enrollment with a pasted %s: %v; want a refusal", alias, err)
	} else {
		refused("enrollment (pasted key)", ae.HTTPStatus(), ae.Message)
	}
	if after := rig.snapshot(t); after != before {
		t.Error("a refused key changed the store")
	}
}
