// Package cluster keeps the state that two or three gateways share in etcd,
// and each gateway's copy of it in step (see store.Replicator).
//
// Every record of the store is one etcd key, PREFIX b/BUCKET/KEY, and each
// bucket's sequence one more, PREFIX s/BUCKET; PREFIX fence is written by
// every change, so its revision is the version of the whole state. A change
// commits only if the fence is still at the revision the writer's copy
// holds: two gateways never both change the state they each last saw.
package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/extranetgw/extranet/internal/store"
)

// opTimeout bounds one call to etcd.
const opTimeout = 5 * time.Second

// Etcd is the cluster's state in etcd, under Prefix.
type Etcd struct {
	Client *clientv3.Client
	// Prefix is where the state lives, "/extranet/" by default; it ends
	// with a slash.
	Prefix string
	// Log, when set, hears of a watch that ended and is tried again.
	Log *slog.Logger
	// timeout, when set, bounds a commit instead of opTimeout.
	timeout atomic.Int64
}

// SetCommitTimeout bounds each commit from now on: a daemon that stops
// must not wait long for an etcd that is gone.
func (e *Etcd) SetCommitTimeout(d time.Duration) { e.timeout.Store(int64(d)) }

func (e *Etcd) fenceKey() string { return e.Prefix + "fence" }

func (e *Etcd) key(w store.Write) string {
	if w.Key == nil {
		return e.Prefix + "s/" + w.Bucket
	}
	return e.Prefix + "b/" + w.Bucket + "/" + string(w.Key)
}

// write turns an etcd key (and its value, nil for a deletion) back into
// the store's write; ok is false for keys that are not records.
func (e *Etcd) write(key, value []byte, deleted bool) (store.Write, bool) {
	k := strings.TrimPrefix(string(key), e.Prefix)
	switch {
	case strings.HasPrefix(k, "s/"):
		if deleted || len(value) != 8 {
			return store.Write{}, false
		}
		return store.Write{Bucket: k[2:], Seq: binary.BigEndian.Uint64(value)}, true
	case strings.HasPrefix(k, "b/"):
		bucket, rec, ok := strings.Cut(k[2:], "/")
		if !ok {
			return store.Write{}, false
		}
		return store.Write{Bucket: bucket, Key: []byte(rec), Value: bytes.Clone(value), Delete: deleted}, true
	}
	return store.Write{}, false
}

func (e *Etcd) ops(ws []store.Write) []clientv3.Op {
	ops := make([]clientv3.Op, 0, len(ws)+1)
	for _, w := range ws {
		switch {
		case w.Key == nil:
			var seq [8]byte
			binary.BigEndian.PutUint64(seq[:], w.Seq)
			ops = append(ops, clientv3.OpPut(e.key(w), string(seq[:])))
		case w.Delete:
			ops = append(ops, clientv3.OpDelete(e.key(w)))
		default:
			ops = append(ops, clientv3.OpPut(e.key(w), string(w.Value)))
		}
	}
	return append(ops, clientv3.OpPut(e.fenceKey(), ""))
}

// Commit writes ws in one etcd transaction if the fence is still at fence.
func (e *Etcd) Commit(fence int64, ws []store.Write) (int64, error) {
	timeout := opTimeout
	if d := time.Duration(e.timeout.Load()); d > 0 {
		timeout = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := e.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(e.fenceKey()), "=", fence)).
		Then(e.ops(ws)...).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("write to the cluster's etcd: %w", err)
	}
	if !resp.Succeeded {
		return 0, store.ErrStale
	}
	return resp.Header.Revision, nil
}

// ErrHasState means the cluster already holds a state, and ErrNoState that
// it holds none yet.
var (
	ErrHasState = errors.New("the cluster already holds a state")
	ErrNoState  = errors.New("etcd holds no gateway state")
)

// Init makes db's state the cluster's first, in one transaction: the
// audit chain goes on where it was, and every address and key is kept. It
// refuses a cluster that holds a state already.
func (e *Etcd) Init(ctx context.Context, db *store.DB) (int64, error) {
	ws, err := db.Dump()
	if err != nil {
		return 0, fmt.Errorf("read the state: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := e.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.fenceKey()), "=", 0)).
		Then(e.ops(ws)...).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("write the state to the cluster's etcd (%d records; etcd takes at most --max-txn-ops of them in one transaction): %w", len(ws), err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("%w under %s", ErrHasState, e.Prefix)
	}
	return resp.Header.Revision, nil
}

// Load reads the cluster's whole state at one revision: its writes, its
// fence, and the revision to follow changes from.
func (e *Etcd) Load(ctx context.Context) (ws []store.Write, fence, rev int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := e.Client.Get(ctx, e.Prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read the cluster's state from etcd: %w", err)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Key) == e.fenceKey() {
			fence = kv.ModRevision
			continue
		}
		if w, ok := e.write(kv.Key, kv.Value, false); ok {
			ws = append(ws, w)
		}
	}
	if fence == 0 {
		return nil, 0, 0, fmt.Errorf("%w under %s: run `extranetd cluster init` on the gateway whose state the cluster starts from", ErrNoState, e.Prefix)
	}
	return ws, fence, resp.Header.Revision, nil
}

// Follow brings db the changes other gateways make, from etcd revision
// from on, and tells changed what of each the data plane depends on, until
// ctx ends. While etcd cannot be reached, or has lost its quorum, the copy
// stays as it is (and changes to it fail) and Follow tries again, so that
// the copy catches up when etcd is back. It returns an error only when it
// can no longer follow: the revisions it needs were compacted away, and
// the copy must be loaded anew.
func (e *Etcd) Follow(ctx context.Context, db *store.DB, from int64, changed func(store.Changes)) error {
	wait := retryMin
	for {
		next, err := e.follow(ctx, db, from, changed)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errCompacted) || errors.Is(err, errApply) {
			return err
		}
		if next > from {
			wait = retryMin
		}
		from = next
		if e.Log != nil {
			e.Log.Warn("lost the cluster's changes from etcd; this gateway keeps its copy and tries again", "err", err, "retry_in", wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// How long Follow waits before it watches again, doubling up to retryMax.
const (
	retryMin = 500 * time.Millisecond
	retryMax = 10 * time.Second
)

var (
	errCompacted = errors.New("etcd compacted the changes this gateway's copy lacks")
	errApply     = errors.New("the copy cannot take the cluster's change")
)

// follow watches from revision from until the watch ends, and returns the
// revision to watch from next.
func (e *Etcd) follow(ctx context.Context, db *store.DB, from int64, changed func(store.Changes)) (int64, error) {
	// Without a leader the member may be cut off: end the watch, so that
	// the next one finds a member that has one.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range e.Client.Watch(wctx, e.Prefix, clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if resp.CompactRevision != 0 {
			return from, fmt.Errorf("%w (revision %d; compacted up to %d): restart extranetd to copy the state anew", errCompacted, from, resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return from, err
		}
		// A transaction's events share its revision; the fence moves
		// with every change, so each change ends at its own revision.
		var ws []store.Write
		for i, ev := range resp.Events {
			if string(ev.Kv.Key) != e.fenceKey() {
				if w, ok := e.write(ev.Kv.Key, ev.Kv.Value, ev.Type == clientv3.EventTypeDelete); ok {
					ws = append(ws, w)
				}
			}
			if i+1 < len(resp.Events) && resp.Events[i+1].Kv.ModRevision == ev.Kv.ModRevision {
				continue
			}
			ch, err := db.ApplyReplicated(ev.Kv.ModRevision, ws)
			if err != nil {
				return from, fmt.Errorf("%w: %w", errApply, err)
			}
			from = ev.Kv.ModRevision + 1
			if !ch.Empty() {
				changed(ch)
			}
			ws = nil
		}
	}
	return from, errors.New("etcd closed the watch")
}
