package enroll

import (
	"net/netip"
	"sync"
	"time"
)

// limiter allows each key (a source network, an invite) at most n events
// per window. It remembers at most max keys; when full it forgets one, so a
// flood from many addresses costs the flooders their counts, never a
// newcomer its turn, and costs no walk of the table per request.
type limiter struct {
	mu     sync.Mutex
	n      int
	window time.Duration
	max    int
	seen   map[string]*slot
	now    func() time.Time
}

type slot struct {
	start time.Time
	count int
}

func newLimiter(n int, window time.Duration, max int) *limiter {
	return &limiter{n: n, window: window, max: max, seen: map[string]*slot{}, now: time.Now}
}

// allow counts an event of key and reports whether it is within the limit.
func (l *limiter) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s, ok := l.seen[key]
	if ok && now.Sub(s.start) >= l.window {
		s.start, s.count = now, 0
	}
	if !ok {
		if len(l.seen) >= l.max {
			// Any one: map order is random, so a flooder cannot choose
			// whom it evicts, and the first key reached ends the loop.
			for k := range l.seen {
				delete(l.seen, k)
				break
			}
		}
		s = &slot{start: now}
		l.seen[key] = s
	}
	s.count++
	return s.count <= l.n
}

// sourceKey is what the per-source limits count by: an IPv4 address, or
// an IPv6 /64, which one host commonly holds whole.
func sourceKey(source string) string {
	a, err := netip.ParseAddr(source)
	if err != nil || a.Is4() {
		return source
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}
