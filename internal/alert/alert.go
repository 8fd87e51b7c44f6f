// Package alert posts alerts to a webhook, signed, in order, retrying
// with backoff until the receiver takes them.
//
// The signature is HMAC-SHA256 with a shared secret over the timestamp, a
// dot and the body, sent as X-Extranet-Signature: sha256=HEX with the
// timestamp in X-Extranet-Timestamp (Unix seconds): a receiver checks both
// and refuses old timestamps, so a captured request cannot be replayed
// later. Each attempt is signed afresh; X-Extranet-Alert-Id stays the same
// across retries, for receivers to drop repeats.
package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/extranetgw/extranet/pkg/api"
)

// Headers of a delivery.
const (
	HeaderSignature = "X-Extranet-Signature"
	HeaderTimestamp = "X-Extranet-Timestamp"
	HeaderID        = "X-Extranet-Alert-Id"
)

// Sign returns the signature header's value for body sent at ts.
func Sign(secret []byte, ts int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a delivery's signature and that its timestamp is within
// tolerance of now: what a receiver does, and the tests.
func Verify(secret []byte, sig, ts string, body []byte, now time.Time, tolerance time.Duration) error {
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q is not Unix seconds", ts)
	}
	if d := now.Sub(time.Unix(t, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("timestamp %s is %s from now", ts, d.Round(time.Second))
	}
	if !hmac.Equal([]byte(sig), []byte(Sign(secret, t, body))) {
		return errors.New("signature does not match")
	}
	return nil
}

// Options configure a Sender.
type Options struct {
	URL    string
	Secret []byte
	// Gateway names the gateway in every alert (its endpoint).
	Gateway string
	Client  *http.Client // nil: one with a 10 s timeout
	Logger  *slog.Logger
	// Queue bounds the alerts waiting (default 1,000); more are dropped
	// and counted.
	Queue int
	// MaxBackoff caps the wait between attempts (default 30 s); MaxAge is
	// how long an alert is retried before it is given up (default a day).
	MaxBackoff, MaxAge time.Duration
	// OnSent hears of each alert delivered, by kind (metrics).
	OnSent func(kind string)
}

// Sender delivers alerts one at a time, oldest first.
type Sender struct {
	o    Options
	host string

	mu      sync.Mutex
	queue   []api.Alert
	wake    chan struct{}
	sent    uint64
	failed  uint64
	dropped uint64
	lastErr string
	// failing: the last attempt failed, so the next failure is no news.
	failing bool
}

// New checks o and returns a Sender; Run delivers.
func New(o Options) (*Sender, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("alert webhook %q is not an http:// or https:// URL", redact(o.URL))
	}
	if len(o.Secret) < 16 {
		return nil, fmt.Errorf("alert webhook secret has %d bytes: give at least 16 (e.g. head -c 32 /dev/urandom | base64)", len(o.Secret))
	}
	if o.Client == nil {
		// A redirect is not followed: it would turn the POST into a GET
		// somewhere else. It counts as a failure, which status shows.
		o.Client = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Queue <= 0 {
		o.Queue = 1000
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 24 * time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sender{o: o, host: u.Host, wake: make(chan struct{}, 1)}, nil
}

// redact keeps a URL's scheme and host: its path and query may hold a
// token (Slack's webhook URLs are secrets).
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}

// Send queues a, filling in its ID, time and gateway. It never blocks.
func (s *Sender) Send(a api.Alert) {
	if a.ID == "" {
		b := make([]byte, 12)
		rand.Read(b)
		a.ID = hex.EncodeToString(b)
	}
	if a.Time.IsZero() {
		a.Time = time.Now().UTC()
	}
	a.Gateway = s.o.Gateway
	s.mu.Lock()
	if len(s.queue) >= s.o.Queue {
		s.dropped++
		s.mu.Unlock()
		s.o.Logger.Error("alert: the queue is full; an alert was dropped", "kind", a.Kind, "text", a.Text)
		return
	}
	s.queue = append(s.queue, a)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stats is the Sender's account.
func (s *Sender) Stats() api.AlertStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return api.AlertStatus{Webhook: s.host, Sent: s.sent, Failures: s.failed, Dropped: s.dropped, Pending: len(s.queue), LastError: s.lastErr}
}

// Run delivers until ctx ends; what is still queued then is lost (the
// audit log and the daemon's log keep what happened).
func (s *Sender) Run(ctx context.Context) {
	for {
		s.mu.Lock()
		var next *api.Alert
		if len(s.queue) > 0 {
			next = &s.queue[0]
		}
		s.mu.Unlock()
		if next == nil {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		a := *next
		if !s.deliver(ctx, a) {
			return
		}
		s.mu.Lock()
		s.queue = s.queue[1:]
		s.mu.Unlock()
	}
}

// deliver tries a until the receiver takes it, refuses it for good, it is
// too old, or ctx ends (false).
func (s *Sender) deliver(ctx context.Context, a api.Alert) bool {
	body, err := json.Marshal(a)
	if err != nil {
		s.giveUp(a, err)
		return true
	}
	refused := 0
	for backoff := min(time.Second, s.o.MaxBackoff); ; backoff = min(2*backoff, s.o.MaxBackoff) {
		if time.Since(a.Time) > s.o.MaxAge {
			s.giveUp(a, errors.New("not delivered within "+s.o.MaxAge.String()))
			return true
		}
		err := s.post(ctx, a.ID, body)
		if err == nil {
			s.mu.Lock()
			s.sent++
			s.lastErr, s.failing = "", false
			s.mu.Unlock()
			if s.o.OnSent != nil {
				s.o.OnSent(a.Kind)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.mu.Lock()
		s.failed++
		first := !s.failing
		s.lastErr, s.failing = err.Error(), true
		s.mu.Unlock()
		if first || backoff == s.o.MaxBackoff {
			s.o.Logger.Warn("alert: the webhook did not take an alert; retrying", "webhook", s.host, "kind", a.Kind, "err", err, "retry_in", backoff)
		}
		// A receiver that refuses the request itself (400, 404, 410: a
		// revoked chat webhook, a body it will never take) would hold
		// every alert behind this one for a day: after a few tries, this
		// one is given up.
		var ref refusal
		if errors.As(err, &ref) {
			if refused++; refused >= 3 {
				s.giveUp(a, err)
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
	}
}

// refusal is a receiver's 4xx answer other than 408 and 429, which say
// "later".
type refusal int

func (r refusal) Error() string { return fmt.Sprintf("HTTP %d", int(r)) }

func (s *Sender) giveUp(a api.Alert, err error) {
	s.mu.Lock()
	s.dropped++
	s.mu.Unlock()
	s.o.Logger.Error("alert: given up", "kind", a.Kind, "text", a.Text, "err", err)
}

func (s *Sender) post(ctx context.Context, id string, body []byte) error {
	ts := time.Now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.o.URL, bytes.NewReader(body))
	if err != nil {
		return errors.New("cannot make the request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "extranetd")
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(s.o.Secret, ts, body))
	resp, err := s.o.Client.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may hold a token: keep only
		// what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c/100 == 2:
	case c/100 == 4 && c != http.StatusRequestTimeout && c != http.StatusTooManyRequests:
		return refusal(c)
	default:
		return fmt.Errorf("HTTP %d", c)
	}
	return nil
}
