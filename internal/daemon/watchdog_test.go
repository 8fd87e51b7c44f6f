package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// TestWatchdogFeedsOnlyARunningLoop: under WatchdogSec= the daemon tells
// systemd it lives while its reconcile loop runs, and stops when the loop
// is stuck, so that systemd restarts it.
func TestWatchdogFeedsOnlyARunningLoop(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "40000") // a ping every 20 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go watchdog(ctx, func() time.Time { return time.Unix(0, last.Load()) }, 200*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))

	pings := func(within time.Duration) int {
		n := 0
		buf := make([]byte, 64)
		for deadline := time.Now().Add(within); time.Now().Before(deadline); {
			conn.SetReadDeadline(deadline)
			m, err := conn.Read(buf)
			if err != nil {
				break
			}
			if string(buf[:m]) == "WATCHDOG=1" {
				n++
			}
		}
		return n
	}
	if n := pings(150 * time.Millisecond); n == 0 {
		t.Fatal("no watchdog ping while the loop runs")
	}
	// The loop stops: its last run grows old past 200 ms.
	last.Store(time.Now().Add(-time.Second).UnixNano())
	pings(60 * time.Millisecond) // drain what was sent before
	if n := pings(200 * time.Millisecond); n != 0 {
		t.Errorf("%d watchdog pings while the loop is stuck", n)
	}
	// Another process's watchdog is none of ours.
	t.Setenv("WATCHDOG_PID", "1")
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	last.Store(time.Now().UnixNano())
	cancel()
	go watchdog(ctx2, func() time.Time { return time.Now() }, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	pings(60 * time.Millisecond)
	if n := pings(100 * time.Millisecond); n != 0 {
		t.Errorf("%d pings for another process's watchdog", n)
	}
}
