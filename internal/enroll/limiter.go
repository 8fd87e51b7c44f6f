package enroll

import (
	"sync"
	"time"
)

// limiter allows each key (a source address, a token's hash) at most n
// events per window. It remembers at most max keys: when full, it forgets
// the windows that ended, and when every window is live it refuses new
// keys, which is what a flood from many addresses deserves.
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
			for k, old := range l.seen {
				if now.Sub(old.start) >= l.window {
					delete(l.seen, k)
				}
			}
			if len(l.seen) >= l.max {
				return false
			}
		}
		s = &slot{start: now}
		l.seen[key] = s
	}
	s.count++
	return s.count <= l.n
}
