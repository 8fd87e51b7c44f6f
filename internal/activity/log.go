package activity

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/extranetgw/extranet/pkg/api"
)

// Defaults of Options.
const (
	DefaultMaxFileBytes = 64 << 20
	DefaultMaxFiles     = 8
	DefaultRetention    = 90 * 24 * time.Hour
)

const (
	currentName   = "flows.jsonl"
	rotatedPrefix = "flows-"
	rotatedSuffix = ".jsonl"
	// stampLayout is fixed width, so rotated files sort by name in the
	// order they were rotated.
	stampLayout = "20060102T150405.000000000Z"
	// maxLine bounds a record: one is a few hundred bytes, so a longer
	// line is damage, and reading it whole would only cost memory.
	maxLine = 64 << 10
	// checkEvery spaces the retention checks Append makes: they read no
	// file, but the write path need not pay for one on every record.
	checkEvery = time.Minute
)

// ErrClosed is returned by Append and Read after Close.
var ErrClosed = errors.New("activity log closed")

// Options tune a Log. Zero fields take the defaults.
type Options struct {
	// MaxFileBytes is the size past which the current file is rotated.
	MaxFileBytes int64
	// MaxFiles counts the current file and the rotated ones kept; the
	// oldest rotated files are removed beyond it.
	MaxFiles int
	// Retention: a rotated file whose newest record closed longer ago is
	// removed. The current file is rotated once its oldest record is
	// Retention/(MaxFiles-1) old, so that a quiet gateway's records age
	// out too, and MaxFiles-1 rotated files still span Retention.
	Retention time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Query selects records. Zero fields match everything.
type Query struct {
	// Orgs is the caller's scope: nil is every organisation; otherwise
	// only these, so an empty non-nil slice matches nothing.
	Orgs []string
	Org  string
	Peer string // ORG/NAME
	// Dest matches the records whose destination address is inside it;
	// the zero Prefix matches any.
	Dest  netip.Prefix
	Port  uint16
	Proto string
	End   string
	// Since and Until bound Closed: Since <= Closed < Until.
	Since, Until time.Time
	// Limit > 0 keeps the newest Limit matches (still oldest first).
	Limit int
}

// Stats are a Log's counters since Open.
type Stats struct {
	Records   uint64 // appended
	Bytes     uint64 // written by Append
	Rotations uint64
	// TornLines are lines Read skipped because they did not parse: the
	// last line of a file after a crash, or damage. A line is counted by
	// every Read that meets it.
	TornLines uint64
	// WriteErrors count failed appends (their record is not in the log),
	// rotations and removals of old files. LastError is the newest.
	WriteErrors uint64
	LastError   string
}

// Log is an open activity log.
type Log struct {
	dir, cur string // the directory, the current file's path
	o        Options
	// ageLimit is how old the current file's oldest record may grow
	// before the file is rotated (see Options.Retention).
	ageLimit time.Duration

	mu     sync.Mutex
	closed bool
	// f is the current file, opened for appending; nil when making it
	// again after a rotation failed (the next Append retries).
	f    *os.File
	size int64
	// needNL: the current file ends inside a line (a crash or a failed
	// write tore it), so the next record starts a new one first.
	needNL bool
	// started bounds from below when the current file's first record was
	// appended, newest is its records' latest Closed; zero when it has
	// none.
	started, newest time.Time
	rotated         []rotatedFile // oldest first
	checked         time.Time

	records, bytes, rotations, torn, writeErrors atomic.Uint64
	lastErr                                      atomic.Value // string
}

type rotatedFile struct {
	name string
	at   time.Time // when it was rotated, from its name
	// newest is at least its newest record's Closed: kept in the file's
	// mtime, so Open learns it without reading the file.
	newest time.Time
}

// Open opens the log in dir, making dir if need be. Flows name partners
// and what they reach, so dir is made (or set) 0700 and files 0600.
func Open(dir string, o Options) (*Log, error) {
	if o.MaxFileBytes < 0 || o.MaxFiles < 0 || o.Retention < 0 {
		return nil, fmt.Errorf("activity log %s: MaxFileBytes %d, MaxFiles %d, Retention %s: none may be negative", dir, o.MaxFileBytes, o.MaxFiles, o.Retention)
	}
	if o.MaxFileBytes == 0 {
		o.MaxFileBytes = DefaultMaxFileBytes
	}
	if o.MaxFiles == 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, wrap(dir, err)
	}
	// MkdirAll leaves an existing directory's mode as it was.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, wrap(dir, err)
	}
	l := &Log{dir: dir, cur: filepath.Join(dir, currentName), o: o, ageLimit: o.Retention / time.Duration(max(o.MaxFiles-1, 1))}
	var err error
	if l.rotated, err = listRotated(dir); err != nil {
		return nil, err
	}
	if err := l.openCurrent(); err != nil {
		return nil, err
	}
	l.maintain(o.Now())
	return l, nil
}

// listRotated finds the rotated files in dir, oldest first.
func listRotated(dir string) ([]rotatedFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, wrap(dir, err)
	}
	var out []rotatedFile
	for _, e := range entries {
		stamp, ok := strings.CutPrefix(e.Name(), rotatedPrefix)
		stamp, ok2 := strings.CutSuffix(stamp, rotatedSuffix)
		if !ok || !ok2 || !e.Type().IsRegular() {
			continue
		}
		at, err := time.Parse(stampLayout, stamp)
		if err != nil {
			continue // not one of ours
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, wrap(filepath.Join(dir, e.Name()), err)
		}
		out = append(out, rotatedFile{name: e.Name(), at: at, newest: info.ModTime()})
	}
	return out, nil // ReadDir sorts by name, which is by age
}

// openCurrent opens the current file, making it if need be, and learns
// what Append and the retention check need from the records in it.
func (l *Log) openCurrent() error {
	path := l.cur
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return wrap(path, err)
	}
	// OpenFile leaves an existing file's mode as it was, and the umask
	// may narrow a new one.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return wrap(path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return wrap(path, err)
	}
	var started, newest time.Time
	needNL := false
	if st.Size() > 0 {
		if started, newest, needNL, err = survey(path, st.Size()); err != nil {
			f.Close()
			return err
		}
	}
	l.f, l.size, l.started, l.newest, l.needNL = f, st.Size(), started, newest, needNL
	return nil
}

// survey reads the first size bytes of a current file an earlier run left:
// the oldest Closed bounds from below when its first record was appended
// (a flow is recorded after it ends), the newest is what its rotated name
// will have to cover; and whether it ends inside a line.
func survey(path string, size int64) (oldest, newest time.Time, torn bool, err error) {
	r, err := os.Open(path)
	if err != nil {
		return oldest, newest, false, wrap(path, err)
	}
	defer r.Close()
	if _, err := scan(io.LimitReader(r, size), func(f api.Flow) {
		if oldest.IsZero() || f.Closed.Before(oldest) {
			oldest = f.Closed
		}
		if f.Closed.After(newest) {
			newest = f.Closed
		}
	}); err != nil {
		return oldest, newest, false, wrap(path, err)
	}
	var last [1]byte
	if _, err := r.ReadAt(last[:], size-1); err != nil {
		return oldest, newest, false, wrap(path, err)
	}
	return oldest, newest, last[0] != '\n', nil
}

// Append records f. It is safe for concurrent use. An error means f is
// not in the log; failed rotations and removals do not stop it, as a
// file past its size is better than a lost record (Stats counts them).
func (l *Log) Append(f api.Flow) error {
	path := l.cur
	line, err := json.Marshal(f)
	if err != nil {
		return l.fail(wrap(path, err))
	}
	if len(line) >= maxLine {
		return l.fail(fmt.Errorf("activity log %s: a record of %d bytes is over the %d a line may have", path, len(line), maxLine))
	}
	line = append(line, '\n')

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	now := l.o.Now()
	if d := now.Sub(l.checked); d >= checkEvery || d < 0 {
		l.maintain(now)
	}
	if l.f != nil && l.size > 0 && l.size+int64(len(line)) > l.o.MaxFileBytes {
		l.rotate(now)
	}
	if l.f == nil {
		if err := l.openCurrent(); err != nil {
			return l.fail(err)
		}
	}
	if l.needNL {
		line = append([]byte{'\n'}, line...)
	}
	// One write of a whole line to an O_APPEND file: a crash leaves at
	// most this line torn, and the next Open starts after it.
	n, err := l.f.Write(line)
	if err != nil {
		// Cut the partial line off, or failing that, start the next
		// record on a line of its own, so only this one is lost.
		if n > 0 && l.f.Truncate(l.size) != nil {
			l.size += int64(n)
			l.needNL = true
		}
		return l.fail(wrap(path, err))
	}
	l.size += int64(n)
	l.needNL = false
	if l.started.IsZero() {
		l.started = now
	}
	if f.Closed.After(l.newest) {
		l.newest = f.Closed
	}
	l.records.Add(1)
	l.bytes.Add(uint64(n))
	return nil
}

// maintain rotates the current file once its oldest record is ageLimit
// old and removes the rotated files past retention or MaxFiles. It reads
// no file. l.mu is held (or l not yet shared).
func (l *Log) maintain(now time.Time) {
	l.checked = now
	if !l.started.IsZero() && now.Sub(l.started) >= l.ageLimit {
		l.rotate(now) // which prunes
		return
	}
	l.prune(now)
}

// rotate renames the current file to a rotated name and starts a new one.
// A failure is counted, and the next Append tries again. l.mu is held.
func (l *Log) rotate(now time.Time) {
	cur := l.cur
	at := now.UTC()
	if n := len(l.rotated); n > 0 && !at.After(l.rotated[n-1].at) {
		// Names must sort in rotation order even when the clock steps
		// back, or when two rotations share a tick.
		at = l.rotated[n-1].at.Add(time.Nanosecond)
	}
	name := rotatedPrefix + at.Format(stampLayout) + rotatedSuffix
	path := filepath.Join(l.dir, name)
	if err := os.Rename(cur, path); err != nil {
		l.fail(wrap(cur, err))
		return
	}
	if err := l.f.Close(); err != nil {
		l.fail(wrap(path, err))
	}
	newest := l.newest
	l.f, l.size, l.started, l.newest, l.needNL = nil, 0, time.Time{}, time.Time{}, false
	l.rotations.Add(1)
	if !newest.IsZero() {
		// Rounded up: some file systems keep whole seconds, and the
		// mtime must not fall below the newest record.
		m := newest.Truncate(time.Second).Add(time.Second)
		if err := os.Chtimes(path, m, m); err != nil {
			l.fail(wrap(path, err))
		}
	}
	// A file without a record that parsed has a zero newest and goes at
	// the prune below: nothing in it could be read.
	l.rotated = append(l.rotated, rotatedFile{name: name, at: at, newest: newest})
	l.prune(now)
	if err := l.openCurrent(); err != nil {
		l.fail(err)
	}
}

// prune removes the rotated files past MaxFiles or retention. A file that
// cannot be removed is counted and kept, to try again. l.mu is held.
func (l *Log) prune(now time.Time) {
	cutoff := now.Add(-l.o.Retention)
	excess := len(l.rotated) - (l.o.MaxFiles - 1)
	kept := l.rotated[:0]
	for i, r := range l.rotated {
		if i < excess || r.newest.Before(cutoff) {
			path := filepath.Join(l.dir, r.name)
			err := os.Remove(path)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				continue
			}
			l.fail(wrap(path, err))
		}
		kept = append(kept, r)
	}
	l.rotated = kept
}

// Read returns the records q matches, oldest first.
func (l *Log) Read(q Query) ([]api.Flow, error) {
	var out []api.Flow
	err := l.Each(q, func(f api.Flow) {
		out = append(out, f)
		if q.Limit > 0 && len(out) >= 2*q.Limit {
			// Memory stays within twice the limit; the copy is paid
			// once per Limit matches.
			out = append(out[:0], out[len(out)-q.Limit:]...)
		}
	})
	if err != nil {
		return nil, err
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out, nil
}

// Each calls fn with every record q matches, oldest first, whatever
// q.Limit says: what adds them up holds none of them.
func (l *Log) Each(q Query, fn func(api.Flow)) error {
	files, err := l.openForRead(q.Since)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range files {
			s.f.Close()
		}
	}()
	for _, s := range files {
		torn, err := scan(s.r, func(f api.Flow) {
			if q.match(&f) {
				fn(f)
			}
		})
		l.torn.Add(uint64(torn))
		if err != nil {
			return wrap(s.f.Name(), err)
		}
	}
	return nil
}

type readFile struct {
	f *os.File
	r io.Reader
}

// openForRead opens, under the lock, the files that may hold records
// closed at or after since, and lets the parsing happen after it: an open
// file outlives a rotation's rename and a prune's removal, and the current
// one is read only as far as it was written, so Read sees one moment of
// the log while Append goes on.
func (l *Log) openForRead(since time.Time) ([]readFile, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	var files []readFile
	add := func(name string, limit int64) error {
		path := filepath.Join(l.dir, name)
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed behind our back: its records are gone
		}
		if err != nil {
			return wrap(path, err)
		}
		var r io.Reader = f
		if limit >= 0 {
			r = io.LimitReader(f, limit)
		}
		files = append(files, readFile{f: f, r: r})
		return nil
	}
	var err error
	for _, r := range l.rotated {
		// Every record in it closed before since.
		if !since.IsZero() && r.newest.Before(since) {
			continue
		}
		if err = add(r.name, -1); err != nil {
			break
		}
	}
	if err == nil && l.f != nil && l.size > 0 && (since.IsZero() || !l.newest.Before(since)) {
		err = add(currentName, l.size)
	}
	if err != nil {
		for _, s := range files {
			s.f.Close()
		}
		return nil, err
	}
	return files, nil
}

func (q *Query) match(f *api.Flow) bool {
	switch {
	case q.Orgs != nil && !slices.Contains(q.Orgs, f.Org),
		q.Org != "" && f.Org != q.Org,
		q.Peer != "" && f.Peer != q.Peer,
		q.Port != 0 && f.Port != q.Port,
		q.Proto != "" && f.Proto != q.Proto,
		q.End != "" && f.End != q.End,
		!q.Since.IsZero() && f.Closed.Before(q.Since),
		!q.Until.IsZero() && !f.Closed.Before(q.Until):
		return false
	}
	if q.Dest.IsValid() {
		a, err := netip.ParseAddr(f.Dest)
		// Unmapped, as an IPv4 prefix contains no ::ffff: address.
		return err == nil && q.Dest.Contains(a.Unmap())
	}
	return true
}

// scan calls fn with each record in r, skipping (and counting) the lines
// that do not parse. It reads line by line rather than with a
// bufio.Scanner, which stops at a line longer than its buffer: such a
// line is damage to skip, not a reason to fail.
func scan(r io.Reader, fn func(api.Flow)) (torn int, err error) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			torn++
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
		} else if len(line) > 0 && line[0] != '\n' {
			var f api.Flow
			if json.Unmarshal(line, &f) != nil {
				torn++
			} else {
				fn(f)
			}
		}
		if err == io.EOF {
			return torn, nil
		}
		if err != nil {
			return torn, err
		}
	}
}

// Stats returns the counters. It does not wait for Append or Read.
func (l *Log) Stats() Stats {
	last, _ := l.lastErr.Load().(string)
	return Stats{
		Records:     l.records.Load(),
		Bytes:       l.bytes.Load(),
		Rotations:   l.rotations.Load(),
		TornLines:   l.torn.Load(),
		WriteErrors: l.writeErrors.Load(),
		LastError:   last,
	}
}

// Close closes the log; Append and Read then return ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return wrap(l.cur, err)
	}
	return nil
}

// fail counts a write error and keeps its message for Stats.
func (l *Log) fail(err error) error {
	l.writeErrors.Add(1)
	l.lastErr.Store(err.Error())
	return err
}

// wrap gives err the log's context once: an os error already names its
// file.
func wrap(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == path {
		return fmt.Errorf("activity log %s: %s: %w", path, pe.Op, pe.Err)
	}
	return fmt.Errorf("activity log %s: %w", path, err)
}
