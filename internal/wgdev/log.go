package wgdev

import (
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"
)

// wgLog passes wireguard-go's error messages to the daemon's log, bounded
// and scrubbed. Some of its errors are per packet (a TUN write failing,
// say), which at line rate would flood the journal, so at most burst
// messages pass per window and the rest are counted. And although
// wireguard-go names peers only by abbreviated public keys, any string
// shaped like a key in UAPI form (64 hex digits: a private or preshared
// key) is masked before it is logged.
type wgLog struct {
	log    *slog.Logger
	burst  int
	window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	start   time.Time
	passed  int
	dropped int
}

var uapiKeyRE = regexp.MustCompile(`[0-9a-fA-F]{64}`)

func newWGLog(log *slog.Logger) *wgLog {
	return &wgLog{log: log, burst: 20, window: time.Minute, now: time.Now}
}

func (l *wgLog) errorf(format string, args ...any) {
	l.mu.Lock()
	now := l.now()
	if now.Sub(l.start) >= l.window {
		l.start, l.passed = now, 0
	}
	if l.passed >= l.burst {
		l.dropped++
		l.mu.Unlock()
		return
	}
	l.passed++
	dropped := l.dropped
	l.dropped = 0
	l.mu.Unlock()

	msg := uapiKeyRE.ReplaceAllString(fmt.Sprintf(format, args...), "[key]")
	if dropped > 0 {
		l.log.Warn("wireguard-go: "+msg, "suppressed_before", dropped)
		return
	}
	l.log.Warn("wireguard-go: " + msg)
}
