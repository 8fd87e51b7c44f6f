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
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
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
	// follow is how Follow stands.
	follow following
	// origin is which state the copy is of: the etcd cluster, the
	// revision that created the fence, and the random ID `cluster init`
	// wrote into it (set by Load, or SetOrigin). A state made anew (etcd
	// rebuilt or restored, the prefix deleted and initialised again) has
	// another, and no copy of the old one may write to it or follow it.
	origin origin
}

type origin struct {
	cluster uint64
	created int64
	id      string
}

func (o origin) bytes() []byte {
	b := make([]byte, 16, 16+len(o.id))
	binary.BigEndian.PutUint64(b, o.cluster)
	binary.BigEndian.PutUint64(b[8:], uint64(o.created))
	return append(b, o.id...)
}

// Origin is which state Load read, for store.Rebuild to keep with the copy.
func (e *Etcd) Origin() []byte { return e.origin.bytes() }

// SetOrigin says which state the copy being used is of (what Origin said
// when it was made), for a start from that copy without Load.
func (e *Etcd) SetOrigin(b []byte) error {
	if len(b) <= 16 {
		return errors.New("the copy does not say which cluster state it is of: start with etcd reachable")
	}
	e.origin = origin{binary.BigEndian.Uint64(b), int64(binary.BigEndian.Uint64(b[8:16])), string(b[16:])}
	return nil
}

// errDiverged means the cluster's state is not the one the copy follows.
var errDiverged = errors.New("the cluster's state in etcd is not the one this gateway's copy was made from (etcd rebuilt or restored, or the state initialised again)")

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

// ops are ws as etcd operations, one per key: etcd refuses a transaction
// that names a key twice, and a change may write one twice (two audit
// events move the audit head twice). The last write of a key is what it
// holds after the change.
func (e *Etcd) ops(ws []store.Write) []clientv3.Op {
	last := make(map[string]int, len(ws))
	for i, w := range ws {
		last[e.key(w)] = i
	}
	ops := make([]clientv3.Op, 0, len(last)+1)
	for i, w := range ws {
		if last[e.key(w)] != i {
			continue
		}
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
	return append(ops, clientv3.OpPut(e.fenceKey(), e.origin.id))
}

// Commit writes ws in one etcd transaction if the fence is still at fence
// and, for epoch other than 0, the active role is still held under epoch.
func (e *Etcd) Commit(fence, epoch int64, ws []store.Write) (int64, error) {
	timeout := opTimeout
	if d := time.Duration(e.timeout.Load()); d > 0 {
		timeout = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conds := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(e.fenceKey()), "=", fence),
		clientv3.Compare(clientv3.CreateRevision(e.fenceKey()), "=", e.origin.created),
		clientv3.Compare(clientv3.Value(e.fenceKey()), "=", e.origin.id),
	}
	if epoch != 0 {
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(e.activeKey()), "=", epoch))
	}
	resp, err := e.Client.Txn(ctx).If(conds...).Then(e.ops(ws)...).Else(clientv3.OpGet(e.activeKey())).Commit()
	if err != nil {
		return 0, fmt.Errorf("write to the cluster's etcd: %w", err)
	}
	if !resp.Succeeded {
		if epoch != 0 {
			if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].CreateRevision != epoch {
				return 0, store.ErrNotActive
			}
		}
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
//
// gatewayPub, when given, is recorded with it as the cluster's gateway
// public key (CheckGatewayKey), in the same transaction.
func (e *Etcd) Init(ctx context.Context, db *store.DB, gatewayPub string) (int64, error) {
	ws, err := db.Dump()
	if err != nil {
		return 0, fmt.Errorf("read the state: %w", err)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return 0, err
	}
	e.origin.id = hex.EncodeToString(id[:])
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ops := e.ops(ws)
	if gatewayPub != "" {
		ops = append(ops, clientv3.OpPut(e.gatewayKeyKey(), gatewayPub))
	}
	resp, err := e.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.fenceKey()), "=", 0)).
		Then(ops...).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("write the state to the cluster's etcd (%d records; etcd takes at most --max-txn-ops of them in one transaction): %w", len(ws), err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("%w under %s", ErrHasState, e.Prefix)
	}
	e.origin = origin{resp.Header.ClusterId, resp.Header.Revision, e.origin.id}
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
			e.origin = origin{resp.Header.ClusterId, kv.CreateRevision, string(kv.Value)}
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
		next, err := e.watchFrom(ctx, db, from, changed)
		if ctx.Err() != nil {
			return nil
		}
		e.follow.set(err)
		if errors.Is(err, errCompacted) || errors.Is(err, errApply) || errors.Is(err, errDiverged) {
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

// sameState checks, before a watch, that etcd holds the state the copy is
// of, at or past the copy's version: a watch of another from the copy's
// revision would miss changes without a word.
func (e *Etcd) sameState(ctx context.Context, db *store.DB) error {
	fence, err := db.Fence()
	if err != nil {
		return fmt.Errorf("%w: %w", errApply, err)
	}
	ctx, cancel := context.WithTimeout(ctx, checkEvery)
	defer cancel()
	resp, err := e.Client.Get(ctx, e.fenceKey())
	if err != nil {
		return fmt.Errorf("etcd does not answer: %w", err)
	}
	kv := resp.Kvs
	if len(kv) == 0 || resp.Header.ClusterId != e.origin.cluster || kv[0].CreateRevision != e.origin.created || string(kv[0].Value) != e.origin.id || kv[0].ModRevision < fence {
		return fmt.Errorf("%w: restart extranetd to copy the state anew", errDiverged)
	}
	return nil
}

var (
	errCompacted = errors.New("etcd compacted the changes this gateway's copy lacks")
	errApply     = errors.New("the copy cannot take the cluster's change")
)

// watchFrom watches from revision from until the watch ends, and returns
// the revision to watch from next.
func (e *Etcd) watchFrom(ctx context.Context, db *store.DB, from int64, changed func(store.Changes)) (int64, error) {
	// Without a leader the member may be cut off: end the watch, so that
	// the next one finds a member that has one.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	if err := e.sameState(wctx, db); err != nil {
		return from, err
	}
	e.follow.set(nil)
	// etcd's client resumes a broken watch by itself, at the revision it
	// had reached: on an etcd rebuilt or restored under it, that revision
	// may not come for a long time, and nothing would be said. So the
	// state is checked on the side as well.
	diverged := make(chan error, 1)
	go func() {
		t := time.NewTicker(checkEvery)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				// The client's silent resumption hides an etcd that is
				// gone from the watch; the check says so.
				err := e.sameState(wctx, db)
				if errors.Is(err, errDiverged) {
					diverged <- err
					cancel()
					return
				}
				e.follow.set(err)
			}
		}
	}()
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
		fenced := false
		for i, ev := range resp.Events {
			deleted := ev.Type == clientv3.EventTypeDelete
			if string(ev.Kv.Key) == e.fenceKey() {
				if deleted {
					return from, errDiverged
				}
				fenced = true
			} else if w, ok := e.write(ev.Kv.Key, ev.Kv.Value, deleted); ok {
				ws = append(ws, w)
			}
			if i+1 < len(resp.Events) && resp.Events[i+1].Kv.ModRevision == ev.Kv.ModRevision {
				continue
			}
			from = ev.Kv.ModRevision + 1
			if !fenced {
				// Not a gateway's change: every change moves the fence.
				// Taken in, it would put the copy at a version the fence
				// never had, and stop every write.
				if e.Log != nil {
					e.Log.Warn("ignored a write under the cluster's prefix that no gateway made", "revision", ev.Kv.ModRevision, "keys", len(ws))
				}
				ws = nil
				continue
			}
			ch, err := db.ApplyReplicated(ev.Kv.ModRevision, ws)
			if err != nil {
				return from, fmt.Errorf("%w: %w", errApply, err)
			}
			if !ch.Empty() {
				changed(ch)
			}
			ws, fenced = nil, false
		}
	}
	select {
	case err := <-diverged:
		return from, err
	default:
	}
	return from, errors.New("etcd closed the watch")
}

// checkEvery is how often a watch checks that etcd holds the state the
// copy is of.
const checkEvery = 2 * time.Second
