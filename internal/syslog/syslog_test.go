package syslog

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]string{
		"udp://10.0.0.5":         "udp://10.0.0.5:514",
		"udp://[2001:db8::1]:10": "udp://[2001:db8::1]:10",
		"tcp://siem.example:601": "tcp://siem.example:601",
		"tls://siem.example":     "tls://siem.example:6514",
		"unix:///dev/log":        "unix:///dev/log",
	} {
		got, err := ParseTarget(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.5:514", "http://x", "udp://", "udp://x:0", "udp://x:70000", "udp://x/path",
		"unix://dev/log", "unix:relative", "tcp://u:p@x", "udp://x?a=b"} {
		if _, err := ParseTarget(in); err == nil || !strings.Contains(err.Error(), strconv.Quote(in)) || !strings.Contains(err.Error(), "udp://HOST[:PORT]") {
			t.Errorf("ParseTarget(%q): %v; want an error naming it and the forms", in, err)
		}
	}
}

func TestParseFacility(t *testing.T) {
	if f, err := ParseFacility("local3"); err != nil || f != 19 {
		t.Errorf("local3: %d, %v", f, err)
	}
	if _, err := ParseFacility("kern"); err == nil || !strings.Contains(err.Error(), `"kern"`) {
		t.Errorf("kern: %v", err)
	}
}

func TestHeader(t *testing.T) {
	at := time.Date(2026, 12, 8, 1, 2, 3, 456789000, time.FixedZone("x", 3600))
	got := string(header(nil, 16, Notice, at, "gw one", "extranetd", "42", ""))
	// PRI 16*8+5; the time in UTC to the microsecond; a space is not
	// allowed in a header field; an empty field is "-".
	if want := "<133>1 2026-12-08T00:02:03.456789Z gwone extranetd 42 - - "; got != want {
		t.Errorf("header:\n got %q\nwant %q", got, want)
	}
	long := string(header(nil, 3, Info, at, strings.Repeat("h", 300), "a", "1", strings.Repeat("m", 40)))
	if f := strings.Fields(long); len(f[2]) != 255 || len(f[5]) != 32 {
		t.Errorf("over-long fields are not cut to RFC 5424's bounds: %d, %d", len(f[2]), len(f[5]))
	}
}

// rfc5424 matches a message as this package writes it, capturing PRI,
// host, app, msgid and the text.
var rfc5424 = regexp.MustCompile(`^<(\d+)>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (\S+) (\S+) \d+ (\S+) - (.*)$`)

type rec struct {
	Peer string `json:"peer"`
	N    int    `json:"n"`
}

func check(t *testing.T, msg string, n int) {
	t.Helper()
	m := rfc5424.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("not RFC 5424 as sent: %q", msg)
	}
	var r rec
	if m[1] != "134" || m[2] != "gw" || m[3] != "extranetd" || m[4] != "flow" || json.Unmarshal([]byte(m[5]), &r) != nil || r.N != n || r.Peer != "acme/laptop" {
		t.Errorf("message %d: %q", n, msg)
	}
}

func opts(target string) Options {
	tg, err := ParseTarget(target)
	if err != nil {
		panic(err)
	}
	return Options{Target: tg, Facility: 16, AppName: "extranetd", Hostname: "gw"}
}

func TestUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s := New(opts("udp://" + pc.LocalAddr().String()))
	for i := range 3 {
		s.Send(time.Now(), Info, "flow", rec{"acme/laptop", i})
	}
	s.Close(5 * time.Second)
	buf := make([]byte, 4096)
	for i := range 3 {
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		check(t, string(buf[:n]), i)
	}
	if st := s.Stats(); st.Sent != 3 || st.Dropped+st.Failed != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// readFrames reads octet-counted messages (RFC 6587) until n are read.
func readFrames(t *testing.T, r *bufio.Reader, n int) []string {
	t.Helper()
	var out []string
	for len(out) < n {
		size, err := r.ReadString(' ')
		if err != nil {
			t.Fatalf("after %d messages: %v", len(out), err)
		}
		l, err := strconv.Atoi(strings.TrimSuffix(size, " "))
		if err != nil {
			t.Fatalf("frame length %q", size)
		}
		b := make([]byte, l)
		if _, err := io.ReadFull(r, b); err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// TestTCPReconnects: a receiver that is not there yet gets the messages
// queued before it came; one that closes the connection gets the next
// message on a new one.
func TestTCPReconnects(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // not there yet
	o := opts("tcp://" + addr)
	o.MaxBackoff = 200 * time.Millisecond
	s := New(o)
	defer s.Close(time.Second)
	s.Send(time.Now(), Info, "flow", rec{"acme/laptop", 0})
	time.Sleep(300 * time.Millisecond)
	if l, err = net.Listen("tcp4", addr); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	check(t, readFrames(t, bufio.NewReader(c), 1)[0], 0)
	c.Close()
	// The receiver closed the connection, as at its restart: the next
	// message goes on a new one, not into the closed one.
	time.Sleep(100 * time.Millisecond)
	s.Send(time.Now(), Info, "flow", rec{"acme/laptop", 1})
	_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c2, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	check(t, readFrames(t, bufio.NewReader(c2), 1)[0], 1)
	s.Close(time.Second) // the counts are whole once it has stopped
	if st := s.Stats(); st.Sent != 2 || st.Dropped+st.Failed != 0 || st.LastError == "" {
		t.Errorf("stats: %+v; want both sent, and an error about the receiver", st)
	}
}

func TestQueueFullDrops(t *testing.T) {
	o := opts("unix://" + filepath.Join(t.TempDir(), "absent.sock"))
	o.Queue = 4
	s := New(o)
	for i := range 100 {
		s.Send(time.Now(), Info, "flow", rec{"acme/laptop", i})
	}
	s.Close(100 * time.Millisecond)
	// The first may have been taken off the queue before the rest came;
	// none was sent, and every other is dropped.
	if st := s.Stats(); st.Sent != 0 || st.Dropped+st.Failed != 100 || st.Dropped < 95 || !strings.Contains(st.LastError, "absent.sock") {
		t.Errorf("stats: %+v", st)
	}
}

func TestTLS(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "siem"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	l, err := tls.Listen("tcp4", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	// A receiver whose certificate the gateway does not trust gets
	// nothing.
	untrusted := New(opts(fmt.Sprintf("tls://localhost:%d", port)))
	untrusted.Send(time.Now(), Info, "flow", rec{"acme/laptop", 0})
	if c, err := l.Accept(); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _ := c.Read(make([]byte, 1)); n != 0 {
			t.Error("a receiver without a trusted certificate was sent a message")
		}
		c.Close()
	}
	untrusted.Close(100 * time.Millisecond)
	if st := untrusted.Stats(); st.Sent != 0 || !strings.Contains(st.LastError, "certificate") {
		t.Errorf("untrusted receiver: %+v", st)
	}

	pool := x509.NewCertPool()
	pool.AddCert(cert)
	o := opts(fmt.Sprintf("tls://localhost:%d", port))
	o.RootCAs = pool
	s := New(o)
	s.Send(time.Now(), Info, "flow", rec{"acme/laptop", 7})
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	check(t, readFrames(t, bufio.NewReader(c), 1)[0], 7)
	s.Close(time.Second)
	if st := s.Stats(); st.Sent != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// TestCloseCutsAStuckReceiver: a receiver that stops reading cannot hold
// the gateway's shutdown past Close's timeout.
func TestCloseCutsAStuckReceiver(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			defer c.Close()
			time.Sleep(10 * time.Second)
		}
	}()
	s := New(opts("tcp://" + l.Addr().String()))
	big := strings.Repeat("x", 60000)
	for range 2000 {
		s.Send(time.Now(), Info, "flow", big)
	}
	start := time.Now()
	s.Close(200 * time.Millisecond)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %s", d)
	}
	if st := s.Stats(); st.Dropped == 0 {
		t.Errorf("stats: %+v; want what was left dropped", st)
	}
}

// TestSendAfterClose: a record made as the daemon stops is dropped and
// counted, not a panic.
func TestSendAfterClose(t *testing.T) {
	s := New(opts("udp://127.0.0.1:9"))
	s.Close(time.Second)
	s.Send(time.Now(), Info, "flow", rec{"acme/laptop", 0})
	s.Close(time.Second)
	if st := s.Stats(); st.Dropped != 1 {
		t.Errorf("stats: %+v; want the record after Close dropped", st)
	}
}

// TestReceiverThatHangsUp: a receiver that closes each connection as it
// takes it, or sends something back, is not a syslog receiver: it gets
// no connection per message, but waits as one that refuses.
func TestReceiverThatHangsUp(t *testing.T) {
	for name, serve := range map[string]func(net.Conn){
		"closes": func(c net.Conn) { c.Close() },
		"talks":  func(c net.Conn) { c.Write([]byte("hello\n")); time.Sleep(time.Second); c.Close() },
	} {
		t.Run(name, func(t *testing.T) {
			l, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var mu sync.Mutex
			accepted := 0
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					mu.Lock()
					accepted++
					mu.Unlock()
					go serve(c)
				}
			}()
			s := New(opts("tcp://" + l.Addr().String()))
			for i := range 200 {
				s.Send(time.Now(), Info, "flow", rec{"acme/laptop", i})
				time.Sleep(5 * time.Millisecond)
			}
			s.Close(100 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			// A second of messages: a connection for the first and a
			// few after backoffs of 1 s and more, not one a message.
			if accepted > 5 {
				t.Errorf("%d connections for 200 messages in a second", accepted)
			}
			if st := s.Stats(); st.LastError == "" {
				t.Errorf("stats: %+v; want the hang-up as the last error", st)
			}
		})
	}
}
