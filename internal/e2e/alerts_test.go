package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/alert"
	"github.com/extranetgw/extranet/pkg/api"
)

// TestAlerts: a webhook receiver that is down when the alerts happen gets
// each of them once it is up, signed with the shared secret: a peer about
// to expire, a partner's enrollment request waiting, a scan warned about
// and a scanner suspended. status counts the failed attempts. (The scan
// alerts, which the data plane raises, are also checked in both WireGuard
// modes by TestActivity.)
func TestAlerts(t *testing.T) {
	controlPlane(t)
	r := NewRig(t)
	r.Serve(r.IN1, in1Addr, "in1", tcpPorts, nil)
	hook := newWebhook(t, r)
	certPath, keyPath, _, pool := testCA(t, r.Dir)
	r.StartDaemon(append(hook.flags(),
		"--scan-warn", "3", "--scan-suspend", "5",
		"--enroll-listen", "0.0.0.0:"+enrollPort, "--enroll-tls-cert", certPath, "--enroll-tls-key", keyPath)...)
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24:tcp/22")

	// A peer that expires in three days.
	conf := r.PartnerUp(r.PA, "pa"+r.id, r.Issue("acme/laptop", "--expires", "3d"))
	defer r.PartnerDown(r.PA, conf)
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")

	// A device asks to join through an invite.
	var inv api.CreatedInvite
	if err := json.Unmarshal([]byte(r.MustCTL("invite", "create", "acme", "-o", "json")), &inv); err != nil {
		t.Fatal(err)
	}
	_, token, _ := strings.Cut(inv.Link, "#")
	key, _ := wgtypes.GeneratePrivateKey()
	body, _ := json.Marshal(api.EnrollRequest{Token: token, Device: "tablet", PublicKey: key.PublicKey().String(), KeyFrom: "pasted"})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err := client.Post("https://127.0.0.1:"+forward(t, r.GW, "127.0.0.1:"+enrollPort)+"/enroll/api/submit", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enrollment submission: %s: %s", resp.Status, b)
	}

	// A sweep of six ports: warned at three, suspended at five.
	_ = inNS(r.PA, func() error {
		for p := 3000; p < 3006; p++ {
			if c, err := net.DialTimeout("tcp4", hostPort(in1Addr, p), 100*time.Millisecond); err == nil {
				c.Close()
			}
		}
		return nil
	})
	Eventually(t, 10*time.Second, "the webhook's failures are counted", func() error {
		var st api.Status
		if err := json.Unmarshal([]byte(r.MustCTL("status", "-o", "json")), &st); err != nil {
			return err
		}
		if st.Alerts == nil || st.Alerts.Failures == 0 || st.Alerts.Pending == 0 || st.Alerts.Sent != 0 {
			return fmt.Errorf("status: %+v", st.Alerts)
		}
		if strings.Contains(st.Alerts.Webhook+st.Alerts.LastError, "T0KEN") {
			t.Errorf("status shows the webhook URL's secret path: %+v", st.Alerts)
		}
		return nil
	})

	// Now the receiver comes up.
	hook.up()
	got := hook.await(40*time.Second, api.AlertKinds...)
	for kind, want := range map[string][]string{
		api.AlertExpiring:      {"peer acme/laptop expires on ", "extranetctl peer extend acme/laptop"},
		api.AlertEnrollRequest: {`device "tablet" asks to join`, "extranetctl request approve acme/"},
		api.AlertScanWarned:    {"acme/laptop (100.64.1.1) was refused at 3 distinct destinations"},
		api.AlertScanSuspended: {"was refused at 5 distinct destinations", "suspended by extranetd", "extranetctl peer resume acme/laptop"},
	} {
		a := got[kind]
		if a.Org != "acme" {
			t.Errorf("%s alert's organisation: %+v", kind, a)
		}
		for _, w := range want {
			if !strings.Contains(a.Text, w) {
				t.Errorf("%s alert's text lacks %q: %q", kind, w, a.Text)
			}
		}
	}
}

// webhook is an alert receiver in the rig's gateway host namespace, on
// that namespace's loopback at a port found free there, and closed until
// up. It checks every delivery as a receiver would: the secret path, the
// signature over the body and its timestamp, and the ID in the header and
// the body.
type webhook struct {
	t          *testing.T
	r          *Rig
	port       int
	secret     []byte
	secretFile string

	mu  sync.Mutex
	got map[string]api.Alert
	bad []string
}

func newWebhook(t *testing.T, r *Rig) *webhook {
	t.Helper()
	h := &webhook{t: t, r: r, secret: []byte("e2e-alert-secret-0123456789"), secretFile: filepath.Join(r.Dir, "alert.secret"), got: map[string]api.Alert{}}
	if err := os.WriteFile(h.secretFile, append(h.secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	h.port = freePort(t, r.GW)
	return h
}

// flags are the daemon's flags that send alerts here.
func (h *webhook) flags() []string {
	return []string{"--alert-webhook", fmt.Sprintf("http://127.0.0.1:%d/hooks/T0KEN", h.port), "--alert-webhook-secret-file", h.secretFile}
}

// up starts receiving, until the test ends.
func (h *webhook) up() {
	h.t.Helper()
	var l net.Listener
	if err := inNS(h.r.GW, func() error {
		var err error
		l, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", h.port))
		return err
	}); err != nil {
		h.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if req.URL.Path != "/hooks/T0KEN" {
			h.bad = append(h.bad, "path "+req.URL.Path)
		}
		if err := alert.Verify(h.secret, req.Header.Get(alert.HeaderSignature), req.Header.Get(alert.HeaderTimestamp), body, time.Now(), 5*time.Minute); err != nil {
			h.bad = append(h.bad, err.Error())
		}
		var a api.Alert
		if err := json.Unmarshal(body, &a); err != nil || a.ID != req.Header.Get(alert.HeaderID) {
			h.bad = append(h.bad, fmt.Sprintf("body %s: %v", body, err))
		}
		h.got[a.Kind] = a
	})}
	go srv.Serve(l)
	h.t.Cleanup(func() { srv.Close() })
}

// await waits for an alert of each kind and returns the last of each,
// after checking what every alert carries.
func (h *webhook) await(timeout time.Duration, kinds ...string) map[string]api.Alert {
	h.t.Helper()
	Eventually(h.t, timeout, "every kind of alert arrives", func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, k := range kinds {
			if _, ok := h.got[k]; !ok {
				return fmt.Errorf("no %s alert yet (have %d kinds)", k, len(h.got))
			}
		}
		return nil
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.bad) > 0 {
		h.t.Errorf("bad deliveries: %v", h.bad)
	}
	got := make(map[string]api.Alert, len(h.got))
	for kind, a := range h.got {
		if a.Gateway != h.r.Endpoint || a.Time.IsZero() || a.Org == "" {
			h.t.Errorf("%s alert: %+v", kind, a)
		}
		got[kind] = a
	}
	return got
}
