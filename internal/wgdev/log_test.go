package wgdev

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestWGLogBoundsAndScrubs(t *testing.T) {
	var buf bytes.Buffer
	clock := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	l := newWGLog(slog.New(slog.NewTextHandler(&buf, nil)))
	l.now = func() time.Time { return clock }

	secret := strings.Repeat("ab", 32)
	l.errorf("IPC error: failed to set preshared_key %s", secret)
	if strings.Contains(buf.String(), secret) || !strings.Contains(buf.String(), "[key]") {
		t.Errorf("a key in UAPI form reached the log: %s", buf.String())
	}

	for i := 0; i < 1000; i++ {
		l.errorf("Failed to write packets to TUN device: %d", i)
	}
	if n := strings.Count(buf.String(), "\n"); n != l.burst {
		t.Errorf("%d lines logged in one window, want %d", n, l.burst)
	}
	clock = clock.Add(time.Minute)
	l.errorf("Failed to write packets to TUN device: again")
	if last := buf.String()[strings.LastIndex(strings.TrimSuffix(buf.String(), "\n"), "\n")+1:]; !strings.Contains(last, "suppressed_before=981") {
		t.Errorf("the next window's first line does not count what was dropped: %s", last)
	}
}
