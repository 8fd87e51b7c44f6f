package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/pkg/api"
)

// TestActivity: what stock partners do through the tunnel is in
// `extranetctl activity`. First what the firewall refused them, and a
// partner that scans (refusalsAndScan, in scan_test.go); then an allowed
// connection with its peer, group, destination and bytes each way, and a
// revoke's killed flow says so; while it is open it has interim records,
// and its records add up. A partner of another organisation's flows are not
// in a filter for this one. The scan's alerts reach a webhook. One rig for
// both halves: it is the costly part under emulation.
func TestActivity(t *testing.T) {
	r := NewRig(t)
	r.Serve(r.IN1, in1Addr, "in1", tcpPorts, nil)
	hook := newWebhook(t, r)
	hook.up()
	r.StartDaemon(append(hook.flags(), "--activity-interim", "2s")...)
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24:tcp/22")
	r.MustCTL("org", "create", "globex", "--grant", "10.10.1.0/24:tcp/443")
	acme := r.PartnerUp(r.PA, "pa"+r.id, r.Issue("acme/laptop"))
	defer r.PartnerDown(r.PA, acme)
	globex := r.PartnerUp(r.PB, "pb"+r.id, r.Issue("globex/server"))
	defer r.PartnerDown(r.PB, globex)
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	reaches(t, r.PB, hostPort(in1Addr, 443), "in1")
	if !t.Run("refusals and a scan", func(t *testing.T) { refusalsAndScan(t, r, hook) }) {
		return
	}
	t.Run("flows, and a revoke's kill", func(t *testing.T) { flowsAndAKill(t, r) })
}

func flowsAndAKill(t *testing.T, r *Rig) {
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	c := openFlow(t, r.PA, hostPort(in1Addr, 22))
	defer c.Close()
	payload := strings.Repeat("x", 3000)
	if got, err := c.Echo(payload, 5*time.Second); err != nil || !strings.Contains(got, payload) {
		t.Fatalf("echo through the tunnel: %v", err)
	}
	// Open for longer than --activity-interim: in the log already, with
	// what it carried so far.
	var interim *api.Flow
	Eventually(t, scaled(10*time.Second), "an interim record of the open flow", func() error {
		for _, f := range r.activity("--peer", "acme/laptop", "--end", "open") {
			if f.Port == 22 && f.BytesOut >= 3000 && f.Since.IsZero() {
				interim = &f
				return nil
			}
		}
		return fmt.Errorf("no interim record of the open flow to port 22")
	})
	if got, err := c.Echo(payload, 5*time.Second); err != nil || !strings.Contains(got, payload) {
		t.Fatalf("echo through the tunnel: %v", err)
	}
	r.MustCTL("peer", "revoke", "acme/laptop", "--yes")

	// The flow's records: the killed one last, carrying what came since
	// the one before; together what the flow carried. The scan's
	// suspension killed another flow to port 22 before, opened earlier.
	var killed *api.Flow
	var records []api.Flow
	Eventually(t, scaled(10*time.Second), "the killed flow is in the activity log", func() error {
		killed, records = nil, nil
		for _, f := range r.activity("--peer", "acme/laptop") {
			if f.Port != 22 || !f.Opened.Equal(interim.Opened) {
				continue
			}
			records = append(records, f)
			if f.End == api.FlowKilled {
				killed = &f
			}
		}
		if killed == nil {
			return fmt.Errorf("no killed flow to port 22 of acme/laptop")
		}
		return nil
	})
	var out, in uint64
	for _, f := range records {
		out, in = out+f.BytesOut, in+f.BytesIn
	}
	// The second payload is in the killed record, or, where the revoke
	// came later than --activity-interim (under emulation), in another
	// interim record before it.
	if killed.Org != "acme" || killed.Group != "default" || killed.Dest != in1Addr || killed.Proto != "tcp" ||
		killed.Since.Before(interim.Closed) || killed.Closed.Before(killed.Opened) ||
		out < 6000 || in < 6000 || records[len(records)-1].End != api.FlowKilled {
		t.Errorf("the killed flow's record: %+v\nits records, adding up to %d bytes out and %d in (want at least 6000 each): %+v", *killed, out, in, records)
	}
	// top adds the same records up: the flow's bytes whole, and the
	// refusals of the scan before.
	var top api.ActivityTop
	if err := json.Unmarshal([]byte(r.MustCTL("activity", "top", "--peer", "acme/laptop", "-o", "json")), &top); err != nil ||
		len(top.Destinations) == 0 || len(top.RefusedPeers) != 1 || top.RefusedPeers[0].Peer != "acme/laptop" || top.RefusedPeers[0].Flows < 100 {
		t.Errorf("activity top --peer acme/laptop: %+v, %v", top, err)
	} else if d := top.Destinations[0]; d.Dest != in1Addr || d.Port != 22 || d.BytesOut < out {
		t.Errorf("activity top: the first destination by bytes is %+v; want %s:22 with at least the flow's %d bytes out", d, in1Addr, out)
	}
	for _, f := range r.activity("--org", "acme") {
		if f.Org != "acme" || strings.HasPrefix(f.Peer, "globex/") {
			t.Errorf("--org acme shows another organisation's flow: %+v", f)
		}
	}
	if out := r.MustCTL("activity", "--peer", "acme/laptop"); !strings.Contains(out, "acme/laptop") || !strings.Contains(out, "killed") {
		t.Errorf("the table:\n%s", out)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(r.MustCTL("status", "-o", "json")), &st); err != nil || st.Activity == nil ||
		st.Activity.Recorded < 2 || st.Activity.Lost != 0 || st.Activity.Failed != 0 {
		t.Errorf("status's account of the activity log: %+v, %v", st.Activity, err)
	}
	if st := r.DaemonLog(); strings.Contains(st, "activity: the conntrack event socket failed") {
		t.Errorf("the event socket failed:\n%s", tail(st, 20))
	}
}

// activity returns `extranetctl activity ARGS -o json`'s flows.
func (r *Rig) activity(args ...string) []api.Flow {
	r.t.Helper()
	return flowLines(r.t, "activity -o json", r.MustCTL(append([]string{"activity", "-o", "json"}, args...)...))
}

// flowLines reads the records of JSON lines out, from what, where every
// line that looks like one must be one.
func flowLines(t *testing.T, what, out string) []api.Flow {
	t.Helper()
	var flows []api.Flow
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" || !strings.HasPrefix(line, "{") {
			continue
		}
		var f api.Flow
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("%s: %v: %s", what, err, line)
		}
		flows = append(flows, f)
	}
	return flows
}

// TestActivityFailureKeepsGatewayUp: an activity log that cannot start (its
// directory cannot be made) leaves the gateway running, and status says why
// nothing is recorded.
func TestActivityFailureKeepsGatewayUp(t *testing.T) {
	controlPlane(t)
	r := NewRig(t)
	r.Serve(r.IN1, in1Addr, "in1", tcpPorts, nil)
	state := filepath.Join(r.Dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "activity"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.StartDaemon()
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24:tcp/22")
	conf := r.PartnerUp(r.PA, "pa"+r.id, r.Issue("acme/laptop"))
	defer r.PartnerDown(r.PA, conf)
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	var st api.Status
	if err := json.Unmarshal([]byte(r.MustCTL("status", "-o", "json")), &st); err != nil || st.Activity == nil || st.Activity.Off == "" {
		t.Errorf("status does not say the activity log is off: %+v, %v", st.Activity, err)
	}
	if out := r.MustCTL("status"); !strings.Contains(out, "Activity:        off: ") {
		t.Errorf("status:\n%s", out)
	}
	if _, stderr, code := r.CTL("activity"); code == 0 || !strings.Contains(stderr, "not a directory") {
		t.Errorf("extranetctl activity does not say why the log is off: exit %d, %s", code, stderr)
	}
}
