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

// TestRefusedBeforeAskedWhenOnlyReading: a caller who may see the object
// but not change it (an auditor; a sponsor deleting its own organisation)
// is refused before the question too: the CLI has the daemon decide the
// change without carrying it out (api.CheckHeader), and carries out
// nothing.
func TestRefusedBeforeAskedWhenOnlyReading(t *testing.T) {
	var mu sync.Mutex
	var changes, checks []string
	refuse := &api.Error{Code: api.CodeForbidden, Message: "audra may not change the peers (organisation acme): that needs the role admin or sponsor of acme"}
	d := fakeBackupServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			// Visible: any object will do.
			w.Write([]byte("{}"))
			return
		}
		mu.Lock()
		if r.Header.Get(api.CheckHeader) == api.CheckMay {
			checks = append(checks, r.Method+" "+r.URL.Path)
		} else {
			changes = append(changes, r.Method+" "+r.URL.Path)
		}
		mu.Unlock()
		w.WriteHeader(refuse.HTTPStatus())
		json.NewEncoder(w).Encode(refuse)
	})
	for _, args := range [][]string{
		{"peer", "revoke", "acme/laptop"},
		{"group", "delete", "acme/sales"},
		{"org", "delete", "acme"},
	} {
		var errOut bytes.Buffer
		env := &cli.Env{
			In: strings.NewReader("acme\n"), Out: &bytes.Buffer{}, ErrOut: &errOut,
			Now: time.Now, IsTTY: func() bool { return true }, Getenv: func(string) string { return "" },
		}
		code := cli.Main(append([]string{"--socket", d.sock}, args...), env)
		if code != 5 || strings.Contains(errOut.String(), "confirm") || !strings.Contains(errOut.String(), refuse.Message) {
			t.Errorf("%v: exit %d, %q; want exit 5 and the refusal, no question", args, code, errOut.String())
		}
	}
	if len(changes) > 0 || len(checks) != 3 {
		t.Errorf("changes sent %v, checks %v; want none and 3", changes, checks)
	}
}
