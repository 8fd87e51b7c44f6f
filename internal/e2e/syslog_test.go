package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/doctest"
	"github.com/extranetgw/extranet/pkg/api"
)

// TestActivitySyslog: with --activity-syslog every activity record also
// leaves as RFC 5424, to the host's rsyslog configured as
// docs/activity.md shows it: rsyslog writes each record's JSON to its file
// and forwards it to the SIEM (a listener here). Both have every record of
// extranetctl activity, as it has them. An rsyslog that is away for a
// while gets what was recorded meanwhile once it is back, and status
// counts what was sent.
func TestActivitySyslog(t *testing.T) {
	controlPlane(t)
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		t.Fatal("rsyslogd is not installed; run scripts/install-deps.sh")
	}
	r := NewRig(t)
	r.Serve(r.IN1, in1Addr, "in1", tcpPorts, nil)
	siem := newSIEM(t, r.GW)
	relay := newRsyslog(t, r, siem.port)
	relay.start()
	r.StartDaemon("--activity-syslog", fmt.Sprintf("tcp://127.0.0.1:%d", relay.port), "--activity-syslog-facility", "local3")
	r.MustCTL("org", "create", "acme", "--grant", "10.10.1.0/24:tcp/22")
	conf := r.PartnerUp(r.PA, "pa"+r.id, r.Issue("acme/laptop"))
	defer r.PartnerDown(r.PA, conf)

	// A connection, killed by a suspension, and a refused attempt: both
	// recorded at once.
	records := func() {
		t.Helper()
		c := openFlow(t, r.PA, hostPort(in1Addr, 22))
		defer c.Close()
		if _, err := c.Echo("hello", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := TCPEcho(r.PA, hostPort(in1Addr, 443)); err == nil {
			t.Fatal("acme reached a port it was not granted")
		}
		r.MustCTL("peer", "suspend", "acme/laptop")
		dies(t, c, 5*time.Second, "the suspension")
		r.MustCTL("peer", "resume", "acme/laptop")
	}
	start := time.Now()
	records()
	t.Logf("records made in %s", time.Since(start).Round(time.Millisecond))
	Eventually(t, 15*time.Second, "the records reach rsyslog's file and the SIEM", func() error {
		return sameRecords(r.activity(), relay.records(), siem.records())
	})

	// rsyslog goes away, and comes back: what was recorded meanwhile
	// waited for it.
	t.Logf("in rsyslog's file and the SIEM after %s", time.Since(start).Round(time.Millisecond))
	relay.stop()
	records()
	t.Logf("rsyslog stopped, records made after %s", time.Since(start).Round(time.Millisecond))
	Eventually(t, 15*time.Second, "the gateway notices the receiver is gone", func() error {
		if st := r.syslogStatus(); st == nil || !strings.Contains(st.LastError, "connection refused") {
			return fmt.Errorf("status: %+v", st)
		}
		return nil
	})
	relay.start()
	back := time.Now()
	Eventually(t, 40*time.Second, "what was recorded while rsyslog was away reaches it", func() error {
		return sameRecords(r.activity(), relay.records(), siem.records())
	})
	t.Logf("rsyslog back for %s when it had every record", time.Since(back).Round(time.Millisecond))
	for path, mode := range map[string]os.FileMode{relay.out: 0o600, filepath.Dir(relay.out): 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("rsyslog made %s with %v (%v); the guide's configuration asks for %04o", path, fi.Mode(), err, mode)
		}
	}
	st := r.syslogStatus()
	if st == nil || st.Target != fmt.Sprintf("tcp://127.0.0.1:%d", relay.port) || st.Dropped != 0 || st.Sent < uint64(len(r.activity())) {
		t.Errorf("status: %+v", st)
	}
	if out := r.MustCTL("status"); !strings.Contains(out, "records sent to tcp://127.0.0.1:") {
		t.Errorf("status does not show the syslog counts:\n%s", out)
	}
	// The SIEM was told each record's time, facility and kind.
	for _, m := range siem.messages() {
		if m.facility != 19 || (m.msgID == "flow") != (m.severity == 6) || (m.msgID == "refused") != (m.severity == 5) || m.app != "extranetd" {
			t.Errorf("the SIEM got %+v", m)
		}
	}
}

// syslogStatus is status's account of what went to syslog.
func (r *Rig) syslogStatus() *api.SyslogStatus {
	r.t.Helper()
	if st := r.status(); st.Activity != nil {
		return st.Activity.Syslog
	}
	return nil
}

// sameRecords says how the records rsyslog wrote and those the SIEM got
// differ from those extranetctl activity lists; nil when none does. A
// record may come twice (sent again on a new connection), never not.
func sameRecords(want []api.Flow, got ...[]api.Flow) error {
	key := func(f api.Flow) string { b, _ := json.Marshal(f); return string(b) }
	if len(want) < 2 {
		return fmt.Errorf("%d records in extranetctl activity", len(want))
	}
	for i, g := range got {
		have := map[string]bool{}
		for _, f := range g {
			have[key(f)] = true
		}
		for _, f := range want {
			if !have[key(f)] {
				return fmt.Errorf("receiver %d has %d records, and lacks %s", i, len(g), key(f))
			}
		}
	}
	return nil
}

// rsyslog is the host's rsyslogd, run in the rig's gateway host
// namespace with docs/activity.md's configuration: its own port, work
// directory and file, and the SIEM's port.
type rsyslog struct {
	t       *testing.T
	r       *Rig
	port    int
	conf    string
	out     string
	cmd     *exec.Cmd
	logFile string
}

func newRsyslog(t *testing.T, r *Rig, siemPort int) *rsyslog {
	t.Helper()
	raw, err := os.ReadFile("../../docs/activity.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := doctest.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(blocks, func(b doctest.Block) bool {
		return strings.HasPrefix(b.Text, "# /etc/rsyslog.d/extranet.conf")
	})
	if i < 0 {
		t.Fatal("docs/activity.md shows no /etc/rsyslog.d/extranet.conf")
	}
	dir := filepath.Join(r.Dir, "rsyslog")
	if err := os.MkdirAll(filepath.Join(dir, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	rs := &rsyslog{t: t, r: r, port: freePort(t, r.GW), out: filepath.Join(dir, "log", "activity.jsonl"), logFile: filepath.Join(dir, "rsyslogd.log")}
	conf := blocks[i].Text
	for old, new := range map[string]string{
		`port="5514"`:                          fmt.Sprintf(`port="%d"`, rs.port),
		`target="siem.example.com" port="514"`: fmt.Sprintf(`target="127.0.0.1" port="%d"`, siemPort),
		"/var/log/extranet/activity.jsonl":     rs.out,
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("docs/activity.md's rsyslog configuration no longer has %s", old)
		}
		conf = strings.ReplaceAll(conf, old, new)
	}
	// What the host's /etc/rsyslog.conf would otherwise give: a work
	// directory for the disk queue.
	rs.conf = filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(rs.conf, []byte(fmt.Sprintf("global(workDirectory=%q)\n%s", filepath.Join(dir, "work"), conf)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.stop)
	return rs
}

func (rs *rsyslog) start() {
	rs.t.Helper()
	logf, err := os.OpenFile(rs.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		rs.t.Fatal(err)
	}
	defer logf.Close()
	rs.cmd = exec.Command("ip", "netns", "exec", rs.r.GW, "rsyslogd", "-n", "-f", rs.conf, "-i", filepath.Join(filepath.Dir(rs.conf), "rsyslogd.pid"))
	rs.cmd.Stdout, rs.cmd.Stderr = logf, logf
	if err := rs.cmd.Start(); err != nil {
		rs.t.Fatal(err)
	}
	Eventually(rs.t, 10*time.Second, "rsyslogd listens", func() error {
		return inNS(rs.r.GW, func() error {
			c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", rs.port), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
	})
}

// stop stops rsyslogd as its service does, letting it save its queue.
func (rs *rsyslog) stop() {
	if rs.cmd == nil {
		return
	}
	_ = rs.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = rs.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = rs.cmd.Process.Kill()
		<-done
	}
	rs.cmd = nil
}

// records are the JSON lines rsyslog wrote.
func (rs *rsyslog) records() []api.Flow {
	rs.t.Helper()
	b, err := os.ReadFile(rs.out)
	if err != nil && !os.IsNotExist(err) {
		rs.t.Fatal(err)
	}
	return flowLines(rs.t, "rsyslog's file", string(b))
}

// siem stands in for a SIEM's syslog input: octet-counted RFC 5424 over
// TCP, on the gateway host namespace's loopback.
type siem struct {
	t    *testing.T
	port int
	mu   sync.Mutex
	got  []syslogMessage
}

type syslogMessage struct {
	facility, severity int
	app, msgID         string
	flow               api.Flow
}

// rfc5424 matches an RFC 5424 message without structured data, as
// rsyslog's RSYSLOG_SyslogProtocol23Format writes it.
var rfc5424 = regexp.MustCompile(`^<(\d+)>1 \S+ \S+ (\S+) \S+ (\S+) - (.*?)\n?$`)

func newSIEM(t *testing.T, ns string) *siem {
	t.Helper()
	s := &siem{t: t}
	var l net.Listener
	if err := inNS(ns, func() error {
		var err error
		l, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.read(c)
		}
	}()
	return s
}

func (s *siem) read(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		size, err := br.ReadString(' ')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimSpace(size))
		if err != nil || n <= 0 || n > 1<<20 {
			s.fail(fmt.Sprintf("a frame's length %q", size))
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return
		}
		m := rfc5424.FindSubmatch(b)
		if m == nil {
			s.fail(fmt.Sprintf("not RFC 5424: %q", b))
			continue
		}
		pri, _ := strconv.Atoi(string(m[1]))
		sm := syslogMessage{facility: pri / 8, severity: pri % 8, app: string(m[2]), msgID: string(m[3])}
		if err := json.Unmarshal(m[4], &sm.flow); err != nil {
			s.fail(fmt.Sprintf("the text is not a record: %q", m[4]))
			continue
		}
		s.mu.Lock()
		s.got = append(s.got, sm)
		s.mu.Unlock()
	}
}

func (s *siem) fail(why string) {
	s.t.Errorf("the SIEM got %s", why)
}

func (s *siem) messages() []syslogMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func (s *siem) records() []api.Flow {
	var flows []api.Flow
	for _, m := range s.messages() {
		flows = append(flows, m.flow)
	}
	return flows
}

// freePort finds a TCP port free on ns's loopback.
func freePort(t *testing.T, ns string) int {
	t.Helper()
	var port int
	if err := inNS(ns, func() error {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	}); err != nil {
		t.Fatal(err)
	}
	return port
}
