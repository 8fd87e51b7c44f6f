package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/extranetgw/extranet/pkg/api"
)

func (r *Rig) expire(args ...string) api.ExpireResult {
	r.t.Helper()
	var res api.ExpireResult
	out := r.MustCTL(append([]string{"expire", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		r.t.Fatalf("expire output %q: %v", out, err)
	}
	return res
}

func actionFor(res api.ExpireResult, target string) string {
	for _, a := range res.Actions {
		if a.Target == target {
			return a.To
		}
	}
	return ""
}

func TestLifecycle(t *testing.T) {
	r := standardRig(t)
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	laptop := r.Issue("acme/laptop")
	conf := r.PartnerUp(r.PA, "pa"+r.id, laptop)
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	r.Issue("acme/unused")
	var seen time.Time
	Eventually(t, 5*time.Second, "handshake recorded", func() error {
		p := r.peerJSON("acme/laptop")
		if p.LastHandshake == nil {
			return fmt.Errorf("no handshake yet")
		}
		seen = *p.LastHandshake
		return nil
	})

	t.Run("last-seen survives a restart", func(t *testing.T) {
		r.PartnerDown(r.PA, conf)
		r.StopDaemon()
		r.StartDaemon()
		p := r.peerJSON("acme/laptop")
		if p.LastHandshake == nil || !p.LastHandshake.Equal(seen) {
			t.Fatalf("last handshake after restart = %v, want %v", p.LastHandshake, seen)
		}
		if out := r.MustCTL("peer", "show", "acme/unused"); !strings.Contains(out, "never connected") {
			t.Errorf("never-connected peer shows as:\n%s", out)
		}
	})

	t.Run("idle peer is suspended, dry run first changes nothing", func(t *testing.T) {
		Eventually(t, 10*time.Second, "laptop idle for 2s", func() error {
			if actionFor(r.expire("--idle", "2s", "--unused", "30d", "--dry-run"), "acme/laptop") != api.StateSuspended {
				return fmt.Errorf("not idle yet")
			}
			return nil
		})
		if p := r.peerJSON("acme/laptop"); p.State != api.StateActive {
			t.Fatalf("dry run changed the peer to %s", p.State)
		}
		res := r.expire("--idle", "2s", "--unused", "30d")
		if actionFor(res, "acme/laptop") != api.StateSuspended {
			t.Fatalf("expire did not suspend the idle peer: %+v", res)
		}
		if again := r.expire("--idle", "2s", "--unused", "30d"); actionFor(again, "acme/laptop") != "" {
			t.Errorf("second run acted again: %+v", again)
		}
		// The config as issued, with its private key: a config printed
		// again has none, and wg-quick refuses it before it tries.
		conf = r.PartnerUp(r.PA, "pa"+r.id, laptop)
		if _, err := TCPEcho(r.PA, hostPort(in1Addr, 22)); err == nil {
			t.Error("suspended idle peer still connects")
		}
		r.PartnerDown(r.PA, conf)
	})

	t.Run("never-connected peer goes under --unused", func(t *testing.T) {
		res := r.expire("--idle", "30d", "--unused", "1s", "--action", "revoke")
		if actionFor(res, "acme/unused") != api.StateRevoked {
			t.Fatalf("unused peer not revoked: %+v", res)
		}
	})

	t.Run("an org whose contract ended loses every peer", func(t *testing.T) {
		r.MustCTL("org", "create", "shortlived", "--grant", "10.10.2.0/24", "--expires", fmt.Sprintf("%ds", int(scaled(4*time.Second).Seconds())))
		cfg := r.Issue("shortlived/dev")
		sl := r.PartnerUp(r.PB, "pb"+r.id, cfg)
		reaches(t, r.PB, hostPort(in2Addr, 22), "in2")
		// The reconciler enforces the date on its own, before any job runs.
		Eventually(t, 10*time.Second, "access ends with the contract", func() error {
			if _, err := TCPEcho(r.PB, hostPort(in2Addr, 22)); err == nil {
				return fmt.Errorf("still reachable")
			}
			return nil
		})
		res := r.expire()
		if actionFor(res, "shortlived") != api.StateExpired || actionFor(res, "shortlived/dev") != api.StateExpired {
			t.Fatalf("expire after contract end: %+v", res)
		}
		r.PartnerDown(r.PB, sl)
	})

	t.Run("audit names every actor and verifies, until the db is edited", func(t *testing.T) {
		out := r.MustCTL("audit", "-o", "json")
		actors := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var ev api.AuditEvent
			if err := json.Unmarshal([]byte(l), &ev); err != nil {
				t.Fatal(err)
			}
			actors[ev.Actor] = true
		}
		if !actors["root"] || !actors["expire (root)"] {
			t.Errorf("actors in the audit log: %v; want root and expire (root)", actors)
		}
		if v := r.MustCTL("audit", "verify"); !strings.Contains(v, "intact") {
			t.Fatalf("audit verify: %s", v)
		}
		r.StopDaemon()
		tamperAudit(t, filepath.Join(r.Dir, "state", "extranet.db"), 2)
		r.StartDaemon()
		_, errOut, code := r.CTL("audit", "verify")
		if code == 0 || !strings.Contains(errOut, "event 2") {
			t.Errorf("verify after tampering: exit %d, %s", code, errOut)
		}
	})
}

// tamperAudit rewrites one audit event's actor in place, as someone with
// write access to the file might.
func tamperAudit(t *testing.T, path string, seq uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		k := make([]byte, 8)
		for i := 0; i < 8; i++ {
			k[7-i] = byte(seq >> (8 * i))
		}
		v := b.Get(k)
		if v == nil {
			return fmt.Errorf("no audit event %d", seq)
		}
		var ev map[string]any
		if err := json.Unmarshal(v, &ev); err != nil {
			return err
		}
		ev["actor"] = "mallory"
		raw, _ := json.Marshal(ev)
		return b.Put(k, raw)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestExpireSeesCurrentHandshakes: expire decides on the device's current
// handshakes, not on the statistics poller's last read, and a stopping
// daemon keeps the handshakes it saw since then. The poller is slowed to an
// hour, so only expire and the stop read the device.
func TestExpireSeesCurrentHandshakes(t *testing.T) {
	slow := []string{"--stats-interval", "1h"}
	r := standardRig(t, slow...)
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	r.PartnerUp(r.PA, "pa"+r.id, r.Issue("acme/laptop"))
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	// Older than --unused 1s, so that only a handshake can save it.
	time.Sleep(2 * time.Second)
	if res := r.expire("--unused", "1s", "--idle", "30d"); actionFor(res, "acme/laptop") != "" {
		t.Fatalf("expire acted on a peer that is online now: %+v", res)
	}
	if p := r.peerJSON("acme/laptop"); p.State != api.StateActive || p.LastHandshake == nil {
		t.Fatalf("after expire: state %s, last handshake %v", p.State, p.LastHandshake)
	}

	r.PartnerUp(r.PB, "pb"+r.id, r.Issue("acme/phone"))
	reaches(t, r.PB, hostPort(in1Addr, 22), "in1")
	r.StopDaemon()
	r.StartDaemon(slow...)
	if p := r.peerJSON("acme/phone"); p.LastHandshake == nil {
		t.Error("the handshake seen before the stop was forgotten")
	}
}

// TestResumeComesBackAtOnce: a peer suspended before any statistics poll
// recorded where it was is still re-added with its endpoint, so a resume
// starts the handshake from the gateway at once instead of waiting ~15 s
// for the partner's client to give up its old session. The keepalive that
// starts it ends once the peer has handshaken.
func TestResumeComesBackAtOnce(t *testing.T) {
	r := standardRig(t, "--stats-interval", "1h")
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24")
	r.PartnerUp(r.PA, "pa"+r.id, r.Issue("acme/laptop"))
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	pub := r.peerJSON("acme/laptop").PublicKey
	r.MustCTL("peer", "suspend", "acme/laptop")
	if p := r.peerJSON("acme/laptop"); p.Endpoint == "" {
		t.Error("the suspend did not record where the peer was")
	}
	r.MustCTL("peer", "resume", "acme/laptop")
	began := time.Now()
	deadline := began.Add(scaled(5 * time.Second))
	for {
		if _, err := TCPEcho(r.PA, hostPort(in1Addr, 22)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resumed peer did not get through within %v", scaled(5*time.Second))
		}
		time.Sleep(100 * time.Millisecond)
	}
	keepalive := func() string {
		for _, l := range strings.Split(r.Must(r.NS, "wg", "show", r.Iface, "persistent-keepalive"), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == pub {
				return f[1]
			}
		}
		return "peer missing"
	}
	if got := keepalive(); got != "25" {
		t.Errorf("right after the resume, the gateway's keepalive for the peer is %q, want 25", got)
	}
	// Any statistics read ends it; expire makes one.
	r.expire("--dry-run")
	if got := keepalive(); got != "off" {
		t.Errorf("after the handshake and a statistics read, the keepalive is %q, want off", got)
	}
}
