// Package timespec parses the durations and dates admins type: Go durations
// extended with days and weeks (90m, 36h, 30d, 2w) and expiry dates given as
// a day, an RFC 3339 time or a duration from now.
package timespec

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Day is 24 hours; the gateway does not follow daylight saving for expiry.
const Day = 24 * time.Hour

// ParseDuration accepts Go durations plus the units d (days) and w (weeks),
// and their combinations such as 1w2d or 2d12h. Negative and zero durations
// are refused.
func ParseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("duration %q is not valid; use a number with a unit: 90m, 36h, 30d or 2w", s)
	if s == "" || len(s) > 32 {
		return 0, bad
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			break
		}
		j := i
		for j < len(rest) && (rest[j] < '0' || rest[j] > '9') {
			j++
		}
		unit := rest[i:j]
		if unit != "d" && unit != "w" {
			// Hand the remainder to the standard parser (h, m, s, ms …).
			d, err := time.ParseDuration(rest)
			if err != nil {
				return 0, bad
			}
			total += d
			rest = ""
			break
		}
		n, err := strconv.ParseInt(rest[:i], 10, 32)
		if err != nil {
			return 0, bad
		}
		mult := Day
		if unit == "w" {
			mult = 7 * Day
		}
		total += time.Duration(n) * mult
		rest = rest[j:]
	}
	if rest != "" || total <= 0 {
		return 0, bad
	}
	return total, nil
}

// ParseExpiry turns an expiry into an instant: a day (2026-12-31, meaning the
// end of that day in UTC), an RFC 3339 time, or a duration from now. An
// instant not after now is refused.
func ParseExpiry(s string, now time.Time) (time.Time, error) {
	t, err := ParseDate(s, now)
	if err != nil {
		return time.Time{}, err
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("expiry %q is in the past; give a later date or a duration such as 90d", s)
	}
	return t, nil
}

// ParseDate is ParseExpiry without the check that the instant is still to
// come: an import carries contracts that have already ended.
func ParseDate(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	var t time.Time
	if d, err := time.Parse(time.DateOnly, s); err == nil {
		t = d.Add(Day - time.Second)
	} else if ts, err := time.Parse(time.RFC3339, s); err == nil {
		t = ts.UTC()
	} else if dur, err := ParseDuration(s); err == nil {
		t = now.Add(dur)
	} else {
		return time.Time{}, fmt.Errorf("expiry %q is not a date (2026-12-31), an RFC 3339 time or a duration (90d)", s)
	}
	return t.UTC().Truncate(time.Second), nil
}
