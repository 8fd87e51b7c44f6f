package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/pkg/api"
)

// httpGet fetches a URL from inside a namespace. The connection is made on
// the thread switched into ns and handed to the transport, which would
// otherwise dial from a goroutine of its own, in the host's namespace.
func httpGet(ns, host, path string) (int, string, error) {
	var conn net.Conn
	if err := inNS(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", host, scaled(2*time.Second))
		return err
	}); err != nil {
		return 0, "", err
	}
	c := &http.Client{Timeout: scaled(2 * time.Second), Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
	}}
	resp, err := c.Get("http://" + host + path)
	if err != nil {
		conn.Close()
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func pubKey(t *testing.T) string {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

func TestOperations(t *testing.T) {
	controlPlane(t)
	r := NewRig(t)
	r.Serve(r.IN1, in1Addr, "in1", tcpPorts, nil)
	r.StartDaemon("--metrics-listen", "127.0.0.1:9586", "--pprof-listen", "127.0.0.1:6060")
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	conf := r.PartnerUp(r.PA, "pa"+r.id, r.Issue("acme/laptop"))
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")

	t.Run("metrics and health", func(t *testing.T) {
		Eventually(t, 5*time.Second, "metrics show the online peer", func() error {
			code, body, err := httpGet(r.GW, "127.0.0.1:9586", "/metrics")
			if err != nil || code != 200 {
				return fmt.Errorf("%d %v", code, err)
			}
			for _, want := range []string{
				`extranet_peers{org="acme",state="active"} 1`,
				`extranet_peers_online{org="acme"} 1`,
				`extranet_reconcile_duration_seconds_count`,
				`extranet_org_received_bytes_total{org="acme"}`,
				`extranet_peer_handshake_age_seconds_count 1`,
			} {
				if !strings.Contains(body, want) {
					return fmt.Errorf("no %q", want)
				}
			}
			return nil
		})
		if code, body, err := httpGet(r.GW, "127.0.0.1:9586", "/healthz"); err != nil || code != 200 || strings.TrimSpace(body) != "ok" {
			t.Errorf("healthz: %d %q %v", code, body, err)
		}
	})

	t.Run("profiler on loopback when asked", func(t *testing.T) {
		if code, body, err := httpGet(r.GW, "127.0.0.1:6060", "/debug/pprof/cmdline"); err != nil || code != 200 || !strings.Contains(body, "extranetd") {
			t.Errorf("pprof: %d %q %v", code, body, err)
		}
	})

	t.Run("import is all or nothing, export round-trips", func(t *testing.T) {
		bad := filepath.Join(r.Dir, "bad.csv")
		os.WriteFile(bad, []byte("kind,org,name,display_name,contact,grants,public_key,expires\n"+
			"org,globex,,Globex,noc@globex.example,10.10.2.0/24,,\n"+
			"peer,globex,gw1,,,,"+pubKey(t)+",\n"+
			"peer,globex,gw2,,,,not-a-key,\n"+
			"org,initech,,,,10.1.2.3/24,,\n"), 0o600)
		_, errOut, code := r.CTL("import", bad)
		if code != 2 || !strings.Contains(errOut, "row 4, public_key") || !strings.Contains(errOut, "row 5, grants") {
			t.Fatalf("bad import: exit %d, %s", code, errOut)
		}
		if _, _, code := r.CTL("org", "show", "globex"); code != 3 {
			t.Fatal("a failed import left organisation globex behind")
		}
		good := filepath.Join(r.Dir, "good.csv")
		os.WriteFile(good, []byte("kind,org,name,display_name,contact,grants,public_key,expires\n"+
			"org,globex,,Globex,noc@globex.example,10.10.2.0/24 10.10.1.2/32:tcp/22,,\n"+
			"peer,globex,gw1,,,,"+pubKey(t)+",\n"), 0o600)
		if out := r.MustCTL("import", good); !strings.Contains(out, "Imported 1 organisation, 1 group and 1 peer.") {
			t.Errorf("import: %s", out)
		}
		if p := r.peerJSON("globex/gw1"); p.KeyOrigin != api.KeySupplied || p.State != api.StateActive {
			t.Errorf("imported peer: %+v", p)
		}
		exp := r.MustCTL("export")
		for _, want := range []string{"org,globex,,Globex,noc@globex.example,10.10.1.2/32:tcp/22 10.10.2.0/24,,", "peer,globex,gw1,", "peer,acme,laptop,"} {
			if !strings.Contains(exp, want) {
				t.Errorf("export lacks %q:\n%s", want, exp)
			}
		}
	})

	t.Run("backup and restore serve the same peers, and keep revoked keys revoked", func(t *testing.T) {
		r.Issue("acme/spare")
		backup := filepath.Join(r.Dir, "backup.db")
		r.MustCTL("backup", backup)
		if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("backup file: %v %v", fi, err)
		}
		// Reading every preshared key is on record, by who did it.
		for _, action := range []string{"state.backup", "state.export"} {
			raw := strings.TrimSpace(r.MustCTL("audit", "--action", action, "-o", "json"))
			for _, l := range strings.Split(raw, "\n") {
				var ev api.AuditEvent
				if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Actor != "root" {
					t.Errorf("%s is not audited by root: %v %s", action, err, raw)
				}
			}
		}
		before := r.MustCTL("peer", "list", "-o", "json")
		// Revoked after the backup was taken: the restore must not bring it back.
		r.MustCTL("peer", "revoke", "acme/spare", "--yes")
		stateDir := filepath.Join(r.Dir, "state")
		if out, err := r.run(r.GW, bin+"/extranetd", "restore", backup, "--state-dir", stateDir); err == nil {
			t.Errorf("restore while the daemon runs succeeded: %s", out)
		}
		r.StopDaemon()
		r.PartnerDown(r.PA, conf)
		// A rebuilt host has no state to compare with: the backup comes back as it is.
		if out, err := r.run(r.GW, bin+"/extranetd", "restore", backup, "--state-dir", filepath.Join(r.Dir, "rebuilt"), "--dry-run"); err != nil || !strings.Contains(out, "No current state to compare with") {
			t.Errorf("restore on a rebuilt host: %v: %s", err, out)
		}
		out, err := r.run(r.GW, bin+"/extranetd", "restore", backup, "--state-dir", stateDir)
		if err != nil {
			t.Fatalf("restore: %v: %s", err, out)
		}
		if !strings.Contains(out, "restored revoked (pass --allow-revoked") || !strings.Contains(out, "acme/spare: active in the backup, revoked (by acme/spare) now") {
			t.Errorf("restore does not list the key revoked since the backup:\n%s", out)
		}
		r.StartDaemon()
		if p := r.peerJSON("acme/spare"); p.State != api.StateRevoked {
			t.Errorf("acme/spare, revoked after the backup, is %s after the restore", p.State)
		}
		// One event per line.
		var ev api.AuditEvent
		raw := strings.TrimSpace(r.MustCTL("audit", "--action", "state.restore", "-o", "json"))
		if err := json.Unmarshal([]byte(raw), &ev); err != nil || ev.Actor != "root" || !strings.Contains(raw, `"kept_revoked":[{"now":"revoked (by acme/spare)","peer":"acme/spare"`) {
			t.Errorf("the restore is not audited once, by root, with what it kept revoked: %v %s", err, raw)
		}
		after := r.MustCTL("peer", "list", "-o", "json")
		var b, a []api.Peer
		json.Unmarshal([]byte(before), &b)
		json.Unmarshal([]byte(after), &a)
		if len(a) != len(b) || len(a) == 0 {
			t.Fatalf("peers before %d, after restore %d", len(b), len(a))
		}
		for i := range b {
			if b[i].ID() == "acme/spare" {
				continue
			}
			if a[i].ID() != b[i].ID() || a[i].PublicKey != b[i].PublicKey || a[i].Address != b[i].Address || a[i].State != b[i].State {
				t.Errorf("peer %d differs: %+v vs %+v", i, a[i], b[i])
			}
		}
		conf = r.PartnerUp(r.PA, "pa"+r.id, readFile(t, conf))
		reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	})

	t.Run("a change the kernel refuses is reported, then repaired", func(t *testing.T) {
		// A set of acme's group (acme has no port grant yet, so it does not
		// exist), made by hand with the wrong type, makes every firewall
		// apply fail: ipset cannot swap across types.
		r.Must(r.NS, "ipset", "create", "extranet-g1-port", "hash:ip")
		_, errOut, code := r.CTL("org", "grant", "acme", "10.10.1.0/24:tcp/443")
		if code != 1 || !strings.Contains(errOut, "saved") || !strings.Contains(errOut, "not in force") || !strings.Contains(errOut, "swap") {
			t.Fatalf("grant the kernel refused: exit %d, %s", code, errOut)
		}
		if out := r.MustCTL("org", "show", "acme", "-o", "json"); !strings.Contains(out, "10.10.1.0/24:tcp/443") {
			t.Errorf("the grant was not saved: %s", out)
		}
		if st := r.status(); !strings.HasPrefix(st.ReconcileResult, "error") {
			t.Errorf("status after the failure: %q", st.ReconcileResult)
		}
		// Once the obstacle is gone, the next periodic run puts it in force.
		r.Must(r.NS, "ipset", "destroy", "extranet-g1-port")
		Eventually(t, 10*time.Second, "the grant is in force", func() error {
			if st := r.status(); st.ReconcileResult != "ok" {
				return errors.New(st.ReconcileResult)
			}
			if out, _ := r.run(r.NS, "ipset", "list", "extranet-g1-port"); !strings.Contains(out, "10.10.1.0/24,tcp:443") {
				return fmt.Errorf("set: %s", out)
			}
			return nil
		})
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
