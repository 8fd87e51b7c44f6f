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
// and a scanner suspended. status counts the failed attempts.
func TestAlerts(t *testing.T) {
	controlPlane(t)
	r := NewRig(t)
	r.Serve(r.IN1, in1Addr, "in1", tcpPorts, nil)
	secret := []byte("e2e-alert-secret-0123456789")
	secretFile := filepath.Join(r.Dir, "alert.secret")
	if err := os.WriteFile(secretFile, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	// The daemon runs in the rig's gateway host namespace; the receiver
	// listens on that namespace's loopback, at a port found free there and
	// left closed until the alerts have happened.
	var port int
	if err := inNS(r.GW, func() error {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	}); err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, _, pool := testCA(t, r.Dir)
	r.StartDaemon("--alert-webhook", fmt.Sprintf("http://127.0.0.1:%d/hooks/T0KEN", port), "--alert-webhook-secret-file", secretFile,
		"--scan-warn", "3", "--scan-suspend", "5",
		"--enroll-listen", "0.0.0.0:"+enrollPort, "--enroll-tls-cert", certPath, "--enroll-tls-key", keyPath)
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
	var mu sync.Mutex
	got := map[string]api.Alert{}
	var bad []string
	var l net.Listener
	if err := inNS(r.GW, func() error {
		var err error
		l, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		mu.Lock()
		defer mu.Unlock()
		if req.URL.Path != "/hooks/T0KEN" {
			bad = append(bad, "path "+req.URL.Path)
		}
		if err := alert.Verify(secret, req.Header.Get(alert.HeaderSignature), req.Header.Get(alert.HeaderTimestamp), body, time.Now(), 5*time.Minute); err != nil {
			bad = append(bad, err.Error())
		}
		var a api.Alert
		if err := json.Unmarshal(body, &a); err != nil || a.ID != req.Header.Get(alert.HeaderID) {
			bad = append(bad, fmt.Sprintf("body %s: %v", body, err))
		}
		got[a.Kind] = a
	})}
	go srv.Serve(l)
	defer srv.Close()
	Eventually(t, 40*time.Second, "every kind of alert arrives", func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range api.AlertKinds {
			if _, ok := got[k]; !ok {
				return fmt.Errorf("no %s alert yet (have %d kinds)", k, len(got))
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("bad deliveries: %v", bad)
	}
	for kind, want := range map[string][]string{
		api.AlertExpiring:      {"peer acme/laptop expires on ", "extranetctl peer extend acme/laptop"},
		api.AlertEnrollRequest: {`device "tablet" asks to join`, "extranetctl request approve acme/"},
		api.AlertScanWarned:    {"acme/laptop (100.64.1.1) was refused at 3 distinct destinations"},
		api.AlertScanSuspended: {"was refused at 5 distinct destinations", "suspended by extranetd", "extranetctl peer resume acme/laptop"},
	} {
		a := got[kind]
		for _, w := range want {
			if !strings.Contains(a.Text, w) {
				t.Errorf("%s alert's text lacks %q: %q", kind, w, a.Text)
			}
		}
		if a.Org != "acme" || a.Gateway != r.Endpoint || a.Time.IsZero() {
			t.Errorf("%s alert: %+v", kind, a)
		}
	}
}
