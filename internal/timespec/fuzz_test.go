package timespec

import (
	"testing"
	"time"
)

// FuzzDurationCheck: accepted durations are positive; expiries are in the future.
func FuzzDurationCheck(f *testing.F) {
	for _, s := range []string{"90m", "36h", "30d", "2w", "1w2d", "0d", "-1d", "99999999999d", "d", "1.5h"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseDuration(s); err == nil && d <= 0 {
			t.Fatalf("%q parsed to %v", s, d)
		}
		if e, err := ParseExpiry(s, now); err == nil && !e.After(now) {
			t.Fatalf("expiry %q parsed to %v, not after now", s, e)
		}
	})
}
