package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/firewall"
	"github.com/extranetgw/extranet/pkg/api"
)

// refusalsAndScan, in TestActivity's rig (acme/laptop and globex/server
// up, acme granted in1:22, globex in1:443): what the firewall refuses a
// stock partner is in `extranetctl activity --denied` with its reason; a
// partner that sweeps ports is suspended by the gateway itself (defaults:
// 100 distinct refused destinations a minute), also behind a flood to one
// destination; its open connection dies with it, the audit log names
// extranetd and carries the evidence, peer show and status say so,
// another organisation's partner is untouched, and peer resume undoes it.
func refusalsAndScan(t *testing.T, r *Rig, hook *webhook) {
	open := openFlow(t, r.PA, hostPort(in1Addr, 22))

	// One refused attempt: a port acme was not granted.
	if _, err := TCPEcho(r.PA, hostPort(in1Addr, 443)); err == nil {
		t.Fatal("acme reached a port it was not granted")
	}
	// Within 3 s: a read takes the refusals added up so far, without
	// waiting for the 10 s flush.
	Eventually(t, 3*time.Second, "the refused attempt is in activity --denied", func() error {
		for _, f := range r.activity("--denied", "--peer", "acme/laptop") {
			if f.End == api.FlowRefused && f.Reason == api.DenyNotGranted && f.Dest == in1Addr && f.Port == 443 && f.Proto == "tcp" &&
				f.Org == "acme" && f.Group == "default" && f.Flows >= 1 && f.BytesOut == 0 {
				return nil
			}
		}
		return fmt.Errorf("no refused attempt to %s:443 of acme/laptop", in1Addr)
	})
	if out := r.MustCTL("activity", "--denied"); !strings.Contains(out, "refused: not-granted") || !strings.Contains(out, in1Addr+":443 (") {
		t.Errorf("the table of refusals:\n%s", out)
	}
	if flows := r.activity("--denied", "--org", "globex"); len(flows) != 0 {
		t.Errorf("globex has refusals it never made: %+v", flows)
	}

	// A sweep of 100 ports. Beyond a burst, the namespace's ICMP errors to
	// one partner are rate-limited by the kernel (a second each), so most
	// attempts get no answer: like nmap, the sweep does not wait for one.
	// Meanwhile the partner floods one other destination, as if to use up
	// the log's budget and hide the sweep behind it: the firewall's
	// budget per destination keeps the sweep in view.
	stopFlood, flooded := make(chan struct{}), make(chan int, 1)
	go func() {
		sent := 0
		defer func() { flooded <- sent }()
		_ = inNS(r.PA, func() error {
			c, err := net.Dial("udp4", hostPort(in1Addr, 9999))
			if err != nil {
				return err
			}
			defer c.Close()
			deadline := time.Now().Add(scaled(60 * time.Second))
			for time.Now().Before(deadline) {
				select {
				case <-stopFlood:
					return nil
				default:
				}
				for i := 0; i < 10; i++ {
					if _, err := c.Write([]byte("junk")); err == nil {
						sent++
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
			return nil
		})
	}()
	time.Sleep(500 * time.Millisecond)
	var crossed time.Time
	err := inNS(r.PA, func() error {
		for p := 1000; p < 1100; p++ {
			c, err := net.DialTimeout("tcp4", hostPort(in1Addr, p), 30*time.Millisecond)
			if err == nil {
				c.Close()
				return fmt.Errorf("port %d was reached", p)
			}
		}
		crossed = time.Now()
		return nil
	})
	close(stopFlood)
	t.Logf("flooded one destination with %d datagrams during the sweep", <-flooded)
	if err != nil {
		t.Fatal(err)
	}
	var peer api.Peer
	Eventually(t, 5*time.Second, "the scanning peer is suspended", func() error {
		if err := json.Unmarshal([]byte(r.MustCTL("peer", "show", "acme/laptop", "-o", "json")), &peer); err != nil {
			return err
		}
		if peer.State != api.StateSuspended {
			return fmt.Errorf("acme/laptop is %s", peer.State)
		}
		return nil
	})
	t.Logf("suspended within %s of the 100th refused destination (observed by polling peer show)", time.Since(crossed).Round(time.Millisecond))
	if !strings.HasPrefix(peer.Suspension, "scan: refused at ") {
		t.Errorf("peer show does not say why: %q", peer.Suspension)
	}
	if out := r.MustCTL("peer", "show", "acme/laptop"); !strings.Contains(out, "Suspension:  scan: refused at ") {
		t.Errorf("peer show:\n%s", out)
	}
	dies(t, open, time.Second, "the scanner's suspension")
	// The evidence, under the gateway's own name.
	var events []api.AuditEvent
	for _, l := range strings.Split(strings.TrimSpace(r.MustCTL("audit", "--action", "peer.suspend", "-o", "json")), "\n") {
		var e api.AuditEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit -o json: %v: %s", err, l)
		}
		events = append(events, e)
	}
	var ev struct {
		Evidence struct {
			Distinct int      `json:"distinct_refused"`
			Sample   []string `json:"sample"`
			Action   string   `json:"action"`
		} `json:"evidence"`
	}
	found := false
	for _, e := range events {
		if e.Target != "acme/laptop" {
			continue
		}
		found = true
		b, _ := json.Marshal(e.After)
		if err := json.Unmarshal(b, &ev); err != nil || e.Actor != "extranetd" || ev.Evidence.Distinct < 100 ||
			len(ev.Evidence.Sample) == 0 || !strings.HasPrefix(ev.Evidence.Sample[0], in1Addr+":") || ev.Evidence.Action != "suspended" {
			t.Errorf("the suspension's audit event: %+v (%s)", e, b)
		}
	}
	if !found {
		t.Errorf("no audit event of the suspension: %+v", events)
	}
	if out := r.MustCTL("audit", "--action", "peer.scan", "-o", "json"); !strings.Contains(out, "acme/laptop") || !strings.Contains(out, `"warned"`) {
		t.Errorf("no warning at 20 destinations before the suspension:\n%s", out)
	}
	alerts := hook.await(scaled(10*time.Second), api.AlertScanWarned, api.AlertScanSuspended)
	for kind, want := range map[string]string{
		api.AlertScanWarned:    "acme/laptop (100.64.1.1) was refused at 20 distinct destinations",
		api.AlertScanSuspended: "suspended by extranetd",
	} {
		if a := alerts[kind]; a.Org != "acme" || !strings.Contains(a.Text, want) {
			t.Errorf("the %s alert does not say %q: %+v", kind, want, a)
		}
	}
	var st api.Status
	if err := json.Unmarshal([]byte(r.MustCTL("status", "-o", "json")), &st); err != nil || st.Refusals == nil ||
		st.Refusals.Suspensions != 1 || st.Refusals.Warnings != 1 || st.Refusals.Refused < 100 || st.Refusals.Lost != 0 {
		t.Errorf("status's account of refusals: %+v, %v", st.Refusals, err)
	}
	// The sweep is in the log, bounded: a record per destination up to 50
	// a flush, the rest added up; and with the flood, past the log's
	// rate, every attempt is counted: as many as the firewall refused.
	Eventually(t, scaled(15*time.Second), "every refused attempt is in activity --denied", func() error {
		var attempts, limited uint64
		for _, f := range r.activity("--denied") {
			attempts += f.Flows
			if f.RateLimited {
				limited += f.Flows
			}
		}
		if kernel := r.refusedInKernel(); attempts < 101 || limited == 0 || attempts != kernel {
			return fmt.Errorf("%d refused attempts recorded, %d of them past the log's rate; the firewall refused %d", attempts, limited, kernel)
		}
		return nil
	})
	// Nobody else paid for it.
	reaches(t, r.PB, hostPort(in1Addr, 443), "in1")
	if strings.Contains(r.DaemonLog(), "refusals: the firewall's log socket failed") {
		t.Errorf("the log socket failed:\n%s", tail(r.DaemonLog(), 20))
	}

	r.MustCTL("peer", "resume", "acme/laptop")
	peer = api.Peer{}
	if err := json.Unmarshal([]byte(r.MustCTL("peer", "show", "acme/laptop", "-o", "json")), &peer); err != nil || peer.State != api.StateActive || peer.Suspension != "" {
		t.Errorf("after resume: %+v, %v", peer, err)
	}
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
}

// refusedInKernel is how many packets the gateway's firewall refused:
// those its rules sent into a deny chain.
func (r *Rig) refusedInKernel() uint64 {
	r.t.Helper()
	var n uint64
	for _, l := range strings.Split(r.Must(r.NS, "iptables-save", "-c", "-t", "filter"), "\n") {
		if !strings.Contains(l, " -j "+firewall.DenyPrefix) || !strings.HasPrefix(l, "[") {
			continue
		}
		pkts, _, _ := strings.Cut(strings.TrimPrefix(l, "["), ":")
		v, err := strconv.ParseUint(pkts, 10, 64)
		if err != nil {
			r.t.Fatalf("iptables-save -c: %q", l)
		}
		n += v
	}
	return n
}
