package cli_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/cli"
	"github.com/extranetgw/extranet/pkg/api"
)

// TestRefusedBeforeAsked: a destructive verb the caller may not run is
// refused (exit 5, the daemon's message) before anyone is asked to
// confirm it, with or without a terminal; nothing is changed.
func TestRefusedBeforeAsked(t *testing.T) {
	var mu sync.Mutex
	var changes []string
	refuse := &api.Error{Code: api.CodeForbidden, Message: "alice may not see the peers (organisation globex): that needs the role admin, auditor or sponsor of globex"}
	d := fakeBackupServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			mu.Lock()
			changes = append(changes, r.Method+" "+r.URL.Path)
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(refuse.HTTPStatus())
		json.NewEncoder(w).Encode(refuse)
	})
	for _, args := range [][]string{
		{"peer", "revoke", "globex/server"},
		{"group", "delete", "globex/sales"},
		{"group", "delete", "globex/sales", "--move-to", "default"},
		{"org", "delete", "globex"},
		{"org", "delete", "globex", "--force"},
	} {
		for _, tty := range []bool{false, true} {
			var errOut bytes.Buffer
			env := &cli.Env{
				In: strings.NewReader("\n"), Out: &bytes.Buffer{}, ErrOut: &errOut,
				Now: time.Now, IsTTY: func() bool { return tty }, Getenv: func(string) string { return "" },
			}
			code := cli.Main(append([]string{"--socket", d.sock}, args...), env)
			if code != 5 || strings.Contains(errOut.String(), "confirm") || !strings.Contains(errOut.String(), refuse.Message) {
				t.Errorf("%v (terminal %v): exit %d, %q; want exit 5 and the refusal, no question", args, tty, code, errOut.String())
			}
		}
	}
	if len(changes) > 0 {
		t.Errorf("refused verbs sent changes: %v", changes)
	}
}

// TestEmptyRoleListSaysWhy: a gateway whose first start made no
// assignment (no socket group, no expire account) says so in `role
// list`, rather than showing an empty table where the documented fresh
// install shows two rows.
func TestEmptyRoleListSaysWhy(t *testing.T) {
	d := startDaemon(t, "vpn.example.com:51820")
	out := d.must("role", "list")
	for _, want := range []string{"No role assignments", "root is always admin", "extranetctl role assign"} {
		if !strings.Contains(out, want) {
			t.Errorf("role list on a gateway without assignments says nothing like %q:\n%s", want, out)
		}
	}
	if out := d.must("role", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("role list -o json: %q, want []", out)
	}
}
