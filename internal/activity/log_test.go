package activity

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extranetgw/extranet/pkg/api"
)

var t0 = time.Date(2026, 5, 12, 9, 30, 0, 0, time.UTC)

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// flow i closed at closed; records of the same i width have the same size.
func flow(i int, closed time.Time) api.Flow {
	return api.Flow{
		Opened: closed.Add(-time.Minute), Closed: closed,
		Org: "acme", Group: "default", Peer: fmt.Sprintf("acme/dev%03d", i),
		Address: "100.64.0.2", Proto: "tcp", Dest: "10.20.0.5", Port: 443,
		BytesOut: 1200, BytesIn: 56000, PacketsOut: 12, PacketsIn: 40,
		End: api.FlowClosed,
	}
}

func recordSize(t testing.TB, f api.Flow) int64 {
	t.Helper()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(b) + 1)
}

// open opens a log whose clock, unless o has one, stands at t0.
func open(t *testing.T, dir string, o Options) *Log {
	t.Helper()
	if o.Now == nil {
		o.Now = (&clock{t: t0}).now
	}
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendAll(t *testing.T, l *Log, flows ...api.Flow) {
	t.Helper()
	for _, f := range flows {
		if err := l.Append(f); err != nil {
			t.Fatal(err)
		}
	}
}

func read(t *testing.T, l *Log, q Query) []api.Flow {
	t.Helper()
	got, err := l.Read(q)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// peers names the records by peer, for short failure messages.
func peers(flows []api.Flow) []string {
	out := []string{}
	for _, f := range flows {
		out = append(out, f.Peer)
	}
	return out
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, Options{})
	want := []api.Flow{flow(1, t0), flow(2, t0.Add(time.Second)), {
		Opened: t0, Closed: t0.Add(1500 * time.Millisecond), Org: "globex", Group: "ops",
		Peer: "globex/srv", Address: "fd00::2", Proto: "icmp", Dest: "2001:db8::1",
		End: api.FlowTimedOut,
	}}
	appendAll(t, l, want...)
	if got := read(t, l, Query{}); !reflect.DeepEqual(got, want) {
		t.Fatalf("read\n%+v\nwant\n%+v", got, want)
	}
	st, err := os.Stat(filepath.Join(dir, currentName))
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Records != 3 || s.Bytes != uint64(st.Size()) || s.WriteErrors != 0 {
		t.Fatalf("stats %+v, file of %d bytes", s, st.Size())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(flow(4, t0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if _, err := l.Read(Query{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}

	l = open(t, dir, Options{})
	appendAll(t, l, flow(4, t0.Add(2*time.Second)))
	want = append(want, flow(4, t0.Add(2*time.Second)))
	if got := read(t, l, Query{}); !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopening: %v, want %v", peers(got), peers(want))
	}
}

func TestFilters(t *testing.T) {
	l := open(t, t.TempDir(), Options{})
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	fl := []api.Flow{
		{Closed: at(1), Org: "acme", Peer: "acme/laptop", Proto: "tcp", Dest: "10.20.0.5", Port: 443, End: api.FlowClosed},
		{Closed: at(2), Org: "acme", Peer: "acme/phone", Proto: "udp", Dest: "10.20.1.7", Port: 53, End: api.FlowTimedOut},
		{Closed: at(3), Org: "globex", Peer: "globex/srv", Proto: "tcp", Dest: "2001:db8::1", Port: 22, End: api.FlowKilled},
		{Closed: at(4), Org: "globex", Peer: "globex/srv", Proto: "icmp", Dest: "10.30.0.1", End: api.FlowTimedOut},
		{Closed: at(5), Org: "initech", Peer: "initech/pc", Proto: "tcp", Dest: "::ffff:10.20.0.9", Port: 443, End: api.FlowClosed},
		{Closed: at(6), Org: "initech", Peer: "initech/pc", Proto: "tcp", Dest: "not an address", Port: 443, End: api.FlowClosed},
	}
	appendAll(t, l, fl...)
	pick := func(idx ...int) []api.Flow {
		out := []api.Flow{}
		for _, i := range idx {
			out = append(out, fl[i])
		}
		return out
	}
	for _, tc := range []struct {
		name string
		q    Query
		want []api.Flow
	}{
		{"all", Query{}, fl},
		{"orgs nil is any", Query{Orgs: nil}, fl},
		{"orgs empty is none", Query{Orgs: []string{}}, pick()},
		{"orgs scope", Query{Orgs: []string{"acme"}}, pick(0, 1)},
		{"org within scope", Query{Orgs: []string{"acme", "globex"}, Org: "globex"}, pick(2, 3)},
		{"org outside scope", Query{Orgs: []string{"acme"}, Org: "globex"}, pick()},
		{"org", Query{Org: "initech"}, pick(4, 5)},
		{"peer", Query{Peer: "globex/srv"}, pick(2, 3)},
		{"dest v4 prefix, mapped address too", Query{Dest: netip.MustParsePrefix("10.20.0.0/16")}, pick(0, 1, 4)},
		{"dest host", Query{Dest: netip.MustParsePrefix("10.20.0.5/32")}, pick(0)},
		{"dest v6", Query{Dest: netip.MustParsePrefix("2001:db8::/32")}, pick(2)},
		{"port", Query{Port: 443}, pick(0, 4, 5)},
		{"proto", Query{Proto: "udp"}, pick(1)},
		{"end", Query{End: api.FlowTimedOut}, pick(1, 3)},
		{"since is inclusive", Query{Since: at(5)}, pick(4, 5)},
		{"until is exclusive", Query{Until: at(3)}, pick(0, 1)},
		{"since and until", Query{Since: at(2), Until: at(4)}, pick(1, 2)},
		{"limit keeps the newest", Query{Limit: 2}, pick(4, 5)},
		{"limit after filtering", Query{Org: "acme", Limit: 1}, pick(1)},
		{"limit over the matches", Query{Limit: 100}, fl},
		{"all filters", Query{Orgs: []string{"acme"}, Org: "acme", Peer: "acme/laptop", Dest: netip.MustParsePrefix("10.0.0.0/8"),
			Port: 443, Proto: "tcp", End: api.FlowClosed, Since: at(1), Until: at(2), Limit: 5}, pick(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := read(t, l, tc.q)
			if got == nil {
				got = []api.Flow{}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLimitAcrossFiles keeps the newest matches over many records and
// files, oldest first.
func TestLimitAcrossFiles(t *testing.T) {
	l := open(t, t.TempDir(), Options{MaxFileBytes: 10 * recordSize(t, flow(0, t0)), MaxFiles: 100})
	var all []api.Flow
	for i := range 95 {
		all = append(all, flow(i, t0.Add(time.Duration(i)*time.Second)))
	}
	appendAll(t, l, all...)
	for _, limit := range []int{1, 7, 10, 94, 95, 96} {
		got := read(t, l, Query{Limit: limit})
		want := all[max(len(all)-limit, 0):]
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("limit %d: %v, want %v", limit, peers(got), peers(want))
		}
	}
}

func TestRotationKeepsMaxFiles(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0}
	size := recordSize(t, flow(0, t0))
	l := open(t, dir, Options{MaxFileBytes: 3 * size, MaxFiles: 3, Now: c.now})
	var all []api.Flow
	for i := range 20 {
		all = append(all, flow(i, t0))
	}
	appendAll(t, l, all...)
	// Rotated after records 3, 6, … 18; the current file holds 19 and 20,
	// the two rotated ones kept 13 to 18.
	if got, want := read(t, l, Query{}), all[12:]; !reflect.DeepEqual(got, want) {
		t.Fatalf("read %v, want %v", peers(got), peers(want))
	}
	if s := l.Stats(); s.Rotations != 6 || s.Records != 20 || s.WriteErrors != 0 {
		t.Fatalf("stats %+v", s)
	}
	names := files(t, dir)
	if len(names) != 3 || names[2] != currentName {
		t.Fatalf("files %v", names)
	}
	// The clock stood still: names still differ and sort in order.
	a, b := names[0], names[1]
	if !strings.HasPrefix(a, rotatedPrefix) || a >= b {
		t.Fatalf("rotated names %v", names)
	}
	for _, n := range names {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", n, st.Mode())
		}
		if n != currentName && st.Size() != 3*size {
			t.Errorf("%s: %d bytes, want %d", n, st.Size(), 3*size)
		}
	}

	// Reopened with fewer files allowed, the oldest go at once.
	l.Close()
	l = open(t, dir, Options{MaxFileBytes: 3 * size, MaxFiles: 2, Now: c.now})
	if got, want := read(t, l, Query{}), all[15:]; !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopening: %v, want %v", peers(got), peers(want))
	}
}

// TestRotationFailureKeepsRecording: a rotation that fails is counted,
// and the record still goes to the current file.
func TestRotationFailureKeepsRecording(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0}
	size := recordSize(t, flow(0, t0))
	l := open(t, dir, Options{MaxFileBytes: size, Now: c.now})
	// A non-empty directory where the rotated file would go.
	block := filepath.Join(dir, rotatedPrefix+t0.Format(stampLayout)+rotatedSuffix)
	if err := os.MkdirAll(filepath.Join(block, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, flow(1, t0), flow(2, t0))
	s := l.Stats()
	if s.Records != 2 || s.Rotations != 0 || s.WriteErrors != 1 || !strings.Contains(s.LastError, "rename") {
		t.Fatalf("stats %+v", s)
	}
	if err := os.RemoveAll(block); err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, flow(3, t0))
	if s := l.Stats(); s.Rotations != 1 || s.WriteErrors != 1 {
		t.Fatalf("stats %+v", s)
	}
	if got := read(t, l, Query{}); !reflect.DeepEqual(peers(got), []string{"acme/dev001", "acme/dev002", "acme/dev003"}) {
		t.Fatalf("read %v", peers(got))
	}
}

func TestRetention(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0}
	day := 24 * time.Hour
	o := Options{MaxFileBytes: recordSize(t, flow(0, t0)), MaxFiles: 10, Retention: day, Now: c.now}
	l := open(t, dir, o)
	// One record a file: each Append rotates the one before.
	for i := range 3 {
		c.set(t0.Add(time.Duration(i) * time.Hour))
		appendAll(t, l, flow(i, c.now()))
	}
	if n := len(files(t, dir)); n != 3 {
		t.Fatalf("%d files", n)
	}
	// Record 0's file is past retention at the next check.
	c.set(t0.Add(day + 30*time.Minute))
	appendAll(t, l, flow(3, c.now()))
	if got := peers(read(t, l, Query{})); !reflect.DeepEqual(got, []string{"acme/dev001", "acme/dev002", "acme/dev003"}) {
		t.Fatalf("read %v", got)
	}
	l.Close()

	// Open checks too, from the files' mtimes.
	c.set(t0.Add(day + time.Hour + time.Minute))
	l = open(t, dir, o)
	if got := peers(read(t, l, Query{})); !reflect.DeepEqual(got, []string{"acme/dev002", "acme/dev003"}) {
		t.Fatalf("after reopening: %v", got)
	}
	// Record 2's file, and the current one with record 3.
	if got := files(t, dir); len(got) != 2 {
		t.Fatalf("files %v", got)
	}
}

// TestRetentionCheckedOncePerMinute: Append looks at most once a minute.
func TestRetentionCheckedOncePerMinute(t *testing.T) {
	dir := t.TempDir()
	day := 24 * time.Hour
	// A rotated file an earlier run left, whose newest record closed
	// 30 s within retention when the log opens.
	old := filepath.Join(dir, rotatedPrefix+t0.Add(-day).Format(stampLayout)+rotatedSuffix)
	line, _ := json.Marshal(flow(0, t0.Add(-day+30*time.Second)))
	if err := os.WriteFile(old, append(line, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(old, t0.Add(-day+30*time.Second), t0.Add(-day+30*time.Second)); err != nil {
		t.Fatal(err)
	}
	c := &clock{t: t0}
	l := open(t, dir, Options{Retention: day, Now: c.now})
	c.set(t0.Add(45 * time.Second))
	appendAll(t, l, flow(1, c.now()))
	if _, err := os.Stat(old); err != nil {
		t.Fatalf("removed before a minute passed: %v", err)
	}
	c.set(t0.Add(61 * time.Second))
	appendAll(t, l, flow(2, c.now()))
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("still there after a minute: %v", err)
	}
	if got := peers(read(t, l, Query{})); !reflect.DeepEqual(got, []string{"acme/dev001", "acme/dev002"}) {
		t.Fatalf("read %v", got)
	}
}

// TestQuietFileAgesOut: a current file that never fills is rotated by
// age, so its records leave with retention.
func TestQuietFileAgesOut(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0}
	day := 24 * time.Hour
	// MaxFiles 3: rotated once its oldest record is a day/2 old.
	o := Options{MaxFiles: 3, Retention: day, Now: c.now}
	l := open(t, dir, o)
	appendAll(t, l, flow(0, t0))
	c.set(t0.Add(11 * time.Hour))
	appendAll(t, l, flow(1, c.now()))
	if s := l.Stats(); s.Rotations != 0 {
		t.Fatalf("rotated early: %+v", s)
	}
	c.set(t0.Add(12 * time.Hour))
	appendAll(t, l, flow(2, c.now()))
	if s := l.Stats(); s.Rotations != 1 {
		t.Fatalf("not rotated by age: %+v", s)
	}
	l.Close()
	// A day after record 1, Open drops its file; the current one, begun
	// at 12 h, is rotated as its record is over half a day old.
	c.set(t0.Add(35*time.Hour + time.Minute))
	l = open(t, dir, o)
	if got := peers(read(t, l, Query{})); !reflect.DeepEqual(got, []string{"acme/dev002"}) {
		t.Fatalf("read %v", got)
	}
	if s := l.Stats(); s.Rotations != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestTornLines: what a crash leaves is skipped and counted, and the log
// goes on after it.
func TestTornLines(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, Options{})
	appendAll(t, l, flow(1, t0), flow(2, t0))
	l.Close()
	cur := filepath.Join(dir, currentName)
	f, err := os.OpenFile(cur, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"opened":"2026-05-`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	l = open(t, dir, Options{})
	if got := peers(read(t, l, Query{})); !reflect.DeepEqual(got, []string{"acme/dev001", "acme/dev002"}) {
		t.Fatalf("read %v", got)
	}
	if s := l.Stats(); s.TornLines != 1 {
		t.Fatalf("stats %+v", s)
	}
	appendAll(t, l, flow(3, t0))
	if got := peers(read(t, l, Query{})); !reflect.DeepEqual(got, []string{"acme/dev001", "acme/dev002", "acme/dev003"}) {
		t.Fatalf("after the next append: %v", got)
	}
	if s := l.Stats(); s.TornLines != 2 {
		t.Fatalf("stats %+v", s)
	}
	raw, err := os.ReadFile(cur)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(string(raw), "\n"); len(lines) != 5 || lines[2] != `{"opened":"2026-05-` || lines[4] != "" {
		t.Fatalf("file:\n%s", raw)
	}
}

// TestTornWholeRecord: a crash that cut only the newline loses nothing.
func TestTornWholeRecord(t *testing.T) {
	dir := t.TempDir()
	line, _ := json.Marshal(flow(1, t0))
	if err := os.WriteFile(filepath.Join(dir, currentName), line, 0o600); err != nil {
		t.Fatal(err)
	}
	l := open(t, dir, Options{})
	appendAll(t, l, flow(2, t0))
	if got := peers(read(t, l, Query{})); !reflect.DeepEqual(got, []string{"acme/dev001", "acme/dev002"}) {
		t.Fatalf("read %v", got)
	}
	if s := l.Stats(); s.TornLines != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestDamagedLines: garbage, empty lines and a line longer than any record
// are skipped; Read does not fail.
func TestDamagedLines(t *testing.T) {
	dir := t.TempDir()
	line, _ := json.Marshal(flow(1, t0))
	body := "\n" + strings.Repeat("\x00", 3*maxLine) + "\nnot json\n" + string(line) + "\n"
	if err := os.WriteFile(filepath.Join(dir, currentName), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	l := open(t, dir, Options{})
	if got := peers(read(t, l, Query{})); !reflect.DeepEqual(got, []string{"acme/dev001"}) {
		t.Fatalf("read %v", got)
	}
	if s := l.Stats(); s.TornLines != 2 {
		t.Fatalf("stats %+v", s)
	}
	big := flow(2, t0)
	big.Group = strings.Repeat("g", maxLine)
	if err := l.Append(big); err == nil || l.Stats().WriteErrors != 1 {
		t.Fatalf("a record over %d bytes: %v, stats %+v", maxLine, err, l.Stats())
	}
}

// TestSinceSkipsOldFiles: a rotated file whose records all closed before
// Since is not read at all.
func TestSinceSkipsOldFiles(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0}
	l := open(t, dir, Options{MaxFileBytes: recordSize(t, flow(0, t0)), Now: c.now})
	appendAll(t, l, flow(1, t0))
	c.set(t0.Add(time.Hour))
	appendAll(t, l, flow(2, c.now()))
	rotated := files(t, dir)[0]
	// Damage it, so that reading it shows.
	if err := os.WriteFile(filepath.Join(dir, rotated), []byte("damage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := peers(read(t, l, Query{Since: t0.Add(time.Minute)})); !reflect.DeepEqual(got, []string{"acme/dev002"}) || l.Stats().TornLines != 0 {
		t.Fatalf("read %v, stats %+v", got, l.Stats())
	}
	read(t, l, Query{})
	if s := l.Stats(); s.TornLines != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestModes(t *testing.T) {
	t.Run("made", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state", "activity")
		open(t, dir, Options{})
		checkMode(t, dir, 0o700)
		checkMode(t, filepath.Join(dir, currentName), 0o600)
	})
	t.Run("existing", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cur := filepath.Join(dir, currentName)
		if err := os.WriteFile(cur, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(cur, 0o644); err != nil { // past the umask
			t.Fatal(err)
		}
		open(t, dir, Options{})
		checkMode(t, dir, 0o700)
		checkMode(t, cur, 0o600)
	})
	t.Run("not a directory", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(file, Options{}); err == nil || !strings.HasPrefix(err.Error(), "activity log "+file) {
			t.Fatalf("open: %v", err)
		}
	})
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), want)
	}
}

// TestConcurrent appends from many goroutines while others read, across
// rotations: nothing is lost or torn, and each writer's records stay in
// its order.
func TestConcurrent(t *testing.T) {
	const writers, each = 8, 100
	l := open(t, t.TempDir(), Options{MaxFileBytes: 4 << 10, MaxFiles: 1000})
	var wg sync.WaitGroup
	errs := make(chan error, writers+2)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				f := flow(w, t0)
				f.Port = uint16(i + 1)
				if err := l.Append(f); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	inOrder := func(flows []api.Flow) error {
		last := map[string]uint16{}
		for _, f := range flows {
			if f.Port <= last[f.Peer] {
				return fmt.Errorf("%s: port %d after %d", f.Peer, f.Port, last[f.Peer])
			}
			last[f.Peer] = f.Port
		}
		return nil
	}
	for range 2 {
		wg.Go(func() {
			for range 10 {
				got, err := l.Read(Query{})
				if err == nil {
					err = inOrder(got)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := read(t, l, Query{})
	if len(got) != writers*each {
		t.Fatalf("%d records, want %d", len(got), writers*each)
	}
	if err := inOrder(got); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Records != writers*each || s.TornLines != 0 || s.WriteErrors != 0 || s.Rotations == 0 {
		t.Fatalf("stats %+v", s)
	}
	if !slices.IsSortedFunc(l.rotated, func(a, b rotatedFile) int { return strings.Compare(a.name, b.name) }) {
		t.Fatal("rotated files out of order")
	}
}

// benchFlow is a realistic record: nanosecond times, as conntrack gives
// them.
func benchFlow() api.Flow {
	closed := time.Now().UTC()
	return api.Flow{
		Opened: closed.Add(-66 * time.Second), Closed: closed,
		Org: "acme", Group: "default", Peer: "acme/laptop-anna",
		Address: "100.64.12.34", Proto: "tcp", Dest: "10.20.30.40", Port: 443,
		BytesOut: 18234, BytesIn: 1534221, PacketsOut: 210, PacketsIn: 1130,
		End: api.FlowClosed,
	}
}

// BenchmarkAppend: the cost of a record, and its size on disk.
func BenchmarkAppend(b *testing.B) {
	l, err := Open(b.TempDir(), Options{MaxFileBytes: 8 << 20, MaxFiles: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	f := benchFlow()
	for b.Loop() {
		if err := l.Append(f); err != nil {
			b.Fatal(err)
		}
	}
	s := l.Stats()
	b.ReportMetric(float64(s.Bytes)/float64(s.Records), "bytes/record")
}

// BenchmarkRead: what a query costs per record it scans (one that matches
// none, so the cost is reading and parsing).
func BenchmarkRead(b *testing.B) {
	const records = 100_000
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	f := benchFlow()
	for range records {
		if err := l.Append(f); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(l.Stats().Bytes))
	for b.Loop() {
		if _, err := l.Read(Query{Org: "none"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*records), "ns/record")
}
