package timespec

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90m": 90 * time.Minute, "36h": 36 * time.Hour, "30d": 30 * Day, "2w": 14 * Day, "1w2d": 9 * Day, "2d12h": 60 * time.Hour, "1s": time.Second,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0d", "-1d", "d", "10x", "1.5d", "30", "1d-1h", "99999999999999999999d"} {
		if d, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) = %v, accepted", bad, d)
		}
	}
}

func TestParseExpiry(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-12-31":           time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC),
		"2026-11-02T10:00:00Z": time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC),
		"90d":                  now.Add(90 * Day),
	} {
		if got, err := ParseExpiry(in, now); err != nil || !got.Equal(want) {
			t.Errorf("ParseExpiry(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"2026-10-31", "2026-11-01T12:00:00Z", "yesterday", "", "2026-13-01"} {
		if _, err := ParseExpiry(bad, now); err == nil {
			t.Errorf("ParseExpiry(%q) accepted", bad)
		}
	}
}
