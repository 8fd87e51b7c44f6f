// Package syslog sends messages to a syslog receiver in the format of RFC
// 5424, each carrying a JSON document as its text: how activity records
// reach an rsyslog, a syslog-ng or a SIEM's collector without anyone
// reading the gateway's state directory.
//
// The standard library's log/syslog writes the older BSD format and
// blocks its caller on a slow receiver. A Sender never blocks: messages
// wait in a bounded queue while the receiver is slow or away, and past it
// they are dropped and counted, so a receiver that is down costs the
// gateway nothing but the count.
package syslog

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

// Severity is a message's severity (RFC 5424 6.2.1).
type Severity int

// The severities used here.
const (
	Notice Severity = 5
	Info   Severity = 6
)

// facilities are the names of RFC 5424's facilities an admin may pick:
// those meant for local use, and the standard ones a gateway's logs are
// commonly filed under.
var facilities = map[string]int{
	"daemon": 3, "auth": 4, "authpriv": 10, "security": 13,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19,
	"local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// ParseFacility returns the facility's number.
func ParseFacility(name string) (int, error) {
	if f, ok := facilities[name]; ok {
		return f, nil
	}
	return 0, fmt.Errorf("syslog facility %q: give local0 to local7, daemon, auth, authpriv or security", name)
}

// Target is where messages go.
type Target struct {
	// Network is udp, tcp, tls or unixgram.
	Network string
	// Addr is HOST:PORT, or the socket's path for unixgram.
	Addr string
}

func (t Target) String() string {
	if t.Network == "unixgram" {
		return "unix://" + t.Addr
	}
	return t.Network + "://" + t.Addr
}

// ParseTarget reads udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or
// unix:///PATH (a datagram socket such as /dev/log). The port of udp and
// tcp defaults to 514, of tls to 6514 (RFC 5425).
func ParseTarget(s string) (Target, error) {
	u, err := url.Parse(s)
	bad := func(why string) (Target, error) {
		return Target{}, fmt.Errorf("syslog address %q: %s; give udp://HOST[:PORT], tcp://HOST[:PORT], tls://HOST[:PORT] or unix:///PATH", s, why)
	}
	if err != nil {
		return bad(err.Error())
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return bad("it has more than an address")
	}
	switch u.Scheme {
	case "unix":
		if u.Host != "" || u.Path == "" || u.Path[0] != '/' {
			return bad("a unix socket needs an absolute path, as in unix:///dev/log")
		}
		return Target{Network: "unixgram", Addr: u.Path}, nil
	case "udp", "tcp", "tls":
		if u.Path != "" || u.Hostname() == "" {
			return bad("it needs a host and nothing after the port")
		}
		port := u.Port()
		if port == "" {
			port = "514"
			if u.Scheme == "tls" {
				port = "6514"
			}
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad("the port is not 1 to 65535")
		}
		return Target{Network: u.Scheme, Addr: net.JoinHostPort(u.Hostname(), port)}, nil
	}
	return bad("unknown scheme " + strconv.Quote(u.Scheme))
}

// Options configure a Sender.
type Options struct {
	Target   Target
	Facility int
	// AppName and Hostname name the sender in every message; an empty
	// Hostname is the machine's.
	AppName, Hostname string
	// RootCAs verify a tls target's certificate; nil is the system's.
	RootCAs *x509.CertPool
	// Queue bounds the messages waiting (default 10,000).
	Queue int
	// MaxBackoff caps the wait between connection attempts (default 5 s:
	// a relay that restarts is back within it, before the queue fills).
	MaxBackoff time.Duration
	Logger     *slog.Logger
}

// Stats are a Sender's counts since New.
type Stats struct {
	// Sent messages were written to the receiver's socket. Over udp and
	// unix that is as far as anyone can know.
	Sent uint64
	// Dropped messages found the queue full; Failed ones could not be
	// written or encoded.
	Dropped, Failed uint64
	LastError       string
}

type message struct {
	at    time.Time
	sev   Severity
	msgID string
	v     any
}

// Sender sends messages to one target from a goroutine of its own.
type Sender struct {
	o      Options
	pid    string
	queue  chan message
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	stats  Stats
	closed bool // queue is closed: Send drops
}

// New starts a Sender. It connects in the background: a receiver that is
// not there yet is tried again, with backoff, while messages queue.
func New(o Options) *Sender {
	if o.Queue <= 0 {
		o.Queue = 10000
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sender{o: o, pid: strconv.Itoa(os.Getpid()), queue: make(chan message, o.Queue), cancel: cancel, done: make(chan struct{})}
	go s.run(ctx)
	return s
}

// Send queues v, to be sent as JSON with the time, severity and message
// ID given. It never blocks.
// After Close it drops v (a record made as the daemon stops).
func (s *Sender) Send(at time.Time, sev Severity, msgID string, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.stats.Dropped++
		return
	}
	select {
	case s.queue <- message{at: at, sev: sev, msgID: msgID, v: v}:
	default:
		s.stats.Dropped++
	}
}

// Stats returns the counts so far.
func (s *Sender) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Target is where s sends, as an address --activity-syslog takes.
func (s *Sender) Target() string { return s.o.Target.String() }

// Close sends what is queued, for at most timeout, and stops.
func (s *Sender) Close(timeout time.Duration) {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.queue)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.cancel()
		<-s.done
	}
}

func (s *Sender) run(ctx context.Context) {
	defer close(s.done)
	defer s.cancel()
	var (
		conn net.Conn
		gone <-chan struct{} // closed when conn's receiver closed it
		// connected is when conn was made; backoff, the wait before the
		// next connection, grows while they fail and is 0 once one has
		// lasted.
		connected time.Time
		buf       []byte
		backoff   time.Duration
		// held is conn for Close, past its time, to cut a write the
		// receiver keeps waiting.
		heldMu sync.Mutex
		held   net.Conn
	)
	hold := func(c net.Conn) {
		heldMu.Lock()
		defer heldMu.Unlock()
		if held != nil {
			cut(held)
		}
		held = c
		if c != nil && ctx.Err() != nil {
			// Made as Close gave up: it would not be cut.
			cut(c)
		}
	}
	context.AfterFunc(ctx, func() { hold(nil) })
	defer hold(nil)
	for m := range s.queue {
		if ctx.Err() != nil {
			s.abandon(1 + len(s.queue))
			return
		}
		body, err := json.Marshal(m.v)
		if err != nil {
			s.failed(fmt.Errorf("encode a %s message: %w", m.msgID, err))
			continue
		}
		buf = s.format(buf[:0], m, body)
		// A stream write that fails leaves the message's fate unknown:
		// it is sent again on the next connection, so a receiver may
		// see it twice rather than miss it. Each message is tried on two
		// connections at most.
		for attempt := 0; ; attempt++ {
			if conn != nil && closed(gone) {
				// The receiver closed the connection (a restart, say):
				// a write would still be taken by the kernel, and lost.
				// One that closes a connection within a second of taking
				// it is waited for as one that refuses it, or it would
				// cost a connection, or a TLS handshake, per message.
				hold(nil)
				conn = nil
				if time.Since(connected) < time.Second {
					s.logError(fmt.Errorf("send to %s: the receiver closed the connection at once", s.o.Target))
					backoff = min(max(2*backoff, time.Second), s.o.MaxBackoff)
					if !s.sleep(ctx, backoff) {
						return
					}
				}
			}
			for conn == nil {
				if conn, err = s.dial(ctx); err == nil {
					hold(conn)
					gone, connected = watch(conn), time.Now()
					break
				}
				s.logError(err)
				backoff = min(max(2*backoff, time.Second), s.o.MaxBackoff)
				if !s.sleep(ctx, backoff) {
					return
				}
			}
			_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err = conn.Write(buf); err == nil {
				s.mu.Lock()
				s.stats.Sent++
				s.mu.Unlock()
				if time.Since(connected) >= time.Second {
					backoff = 0
				}
				break
			}
			hold(nil)
			conn = nil
			if attempt == 1 || s.o.Target.Network == "udp" || s.o.Target.Network == "unixgram" {
				// A datagram that could not be written was not sent;
				// trying it again would wait on a receiver that is
				// not there while the queue fills.
				s.failed(fmt.Errorf("send to %s: %w", s.o.Target, err))
				break
			}
			s.logError(fmt.Errorf("send to %s: %w", s.o.Target, err))
			if time.Since(connected) < time.Second {
				// As for a receiver that closes at once.
				backoff = min(max(2*backoff, time.Second), s.o.MaxBackoff)
				if !s.sleep(ctx, backoff) {
					return
				}
			}
		}
	}
}

// watch returns a channel closed when c's receiver closes it or it fails.
// Without it a stream whose receiver went away is learnt of one lost
// message late, from a write that failed after one that did not. A syslog
// receiver sends nothing (TLS's own messages are not data): one that does
// is not one, and its connection is given up as closed.
func watch(c net.Conn) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		_, _ = c.Read(make([]byte, 1))
		close(gone)
	}()
	return gone
}

// cut closes c without a word to its receiver: a TLS connection's close
// would first send it a close_notify, waiting up to 5 s on a receiver
// that no longer reads.
func cut(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		tc.NetConn().Close()
		return
	}
	c.Close()
}

// sleep waits d, or until ctx is done, when it counts what is queued as
// dropped and says false.
func (s *Sender) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		s.abandon(1 + len(s.queue))
		return false
	case <-time.After(d):
		return true
	}
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (s *Sender) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	var (
		c   net.Conn
		err error
	)
	switch s.o.Target.Network {
	case "tls":
		host, _, _ := net.SplitHostPort(s.o.Target.Addr)
		td := tls.Dialer{NetDialer: &d, Config: &tls.Config{RootCAs: s.o.RootCAs, ServerName: host, MinVersion: tls.VersionTLS12}}
		c, err = td.DialContext(ctx, "tcp", s.o.Target.Addr)
	default:
		c, err = d.DialContext(ctx, s.o.Target.Network, s.o.Target.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to syslog at %s: %w", s.o.Target, err)
	}
	return c, nil
}

// format appends m as an RFC 5424 message, framed for the target: over a
// stream each message is preceded by its length (RFC 6587 octet
// counting, which rsyslog and syslog-ng read), so a message may hold any
// byte; a datagram is one message.
func (s *Sender) format(buf []byte, m message, body []byte) []byte {
	head := header(nil, s.o.Facility, m.sev, m.at, s.o.Hostname, s.o.AppName, s.pid, m.msgID)
	n := len(head) + len(body)
	if s.o.Target.Network == "tcp" || s.o.Target.Network == "tls" {
		buf = strconv.AppendInt(buf, int64(n), 10)
		buf = append(buf, ' ')
	}
	buf = append(buf, head...)
	return append(buf, body...)
}

// header appends an RFC 5424 header with no structured data, up to the
// message text: "<PRI>1 TIMESTAMP HOST APP PROCID MSGID - ".
func header(buf []byte, facility int, sev Severity, at time.Time, host, app, procID, msgID string) []byte {
	buf = append(buf, '<')
	buf = strconv.AppendInt(buf, int64(facility*8+int(sev)), 10)
	buf = append(buf, ">1 "...)
	buf = at.UTC().AppendFormat(buf, "2006-01-02T15:04:05.000000Z07:00")
	for _, f := range []struct {
		v   string
		max int
	}{{host, 255}, {app, 48}, {procID, 128}, {msgID, 32}} {
		buf = append(buf, ' ')
		buf = appendField(buf, f.v, f.max)
	}
	return append(buf, " - "...)
}

// appendField appends a header field as RFC 5424 allows it: printable
// ASCII without spaces, at most max long, "-" when empty.
func appendField(buf []byte, v string, max int) []byte {
	start := len(buf)
	for i := 0; i < len(v) && len(buf)-start < max; i++ {
		if c := v[i]; c > 32 && c < 127 {
			buf = append(buf, c)
		}
	}
	if len(buf) == start {
		buf = append(buf, '-')
	}
	return buf
}

func (s *Sender) failed(err error) {
	s.mu.Lock()
	s.stats.Failed++
	s.mu.Unlock()
	s.logError(err)
}

// abandon counts n messages given up at Close as dropped.
func (s *Sender) abandon(n int) {
	s.mu.Lock()
	s.stats.Dropped += uint64(n)
	s.mu.Unlock()
}

// logError records err as the last error; the log hears of it only when
// it differs from the one before, so a receiver that is away for an hour
// is not a line per message.
func (s *Sender) logError(err error) {
	s.mu.Lock()
	same := s.stats.LastError == err.Error()
	s.stats.LastError = err.Error()
	s.mu.Unlock()
	if !same {
		s.o.Logger.Warn("syslog: "+err.Error(), "target", s.o.Target.String())
	}
}

// LoadCAs reads a PEM file of the certificates a tls target is verified
// against.
func LoadCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
