package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// A cluster's gateways share one state. Each keeps a full copy in its own
// file, which every read uses as on a single gateway; a write is made the
// cluster's (Replicator.Commit) inside the local transaction, before it
// commits, and only if no other gateway wrote since the copy was last
// brought up to date. The writes of the others reach the copy through
// ApplyReplicated. The fence, the cluster's version of the state that the
// copy holds, is the copy's own and never replicated.

// Write is one change a transaction made: a key put or deleted in a
// bucket, or, when Key is nil, the bucket's sequence moved to Seq.
type Write struct {
	Bucket string
	Key    []byte
	Value  []byte
	Delete bool
	Seq    uint64
}

// Replicator makes a transaction's writes the cluster's.
type Replicator interface {
	// Commit writes ws to the cluster provided its state is still the
	// one at fence and, when epoch is not 0, the cluster's active role is
	// still held under that epoch; it returns the fence after them. It
	// returns ErrStale when another gateway wrote since, and ErrNotActive
	// when the role moved on.
	Commit(fence, epoch int64, ws []Write) (int64, error)
}

// ErrStale means another gateway changed the cluster's state since this
// copy was last brought up to date; the change is retried once it is.
var ErrStale = errors.New("the cluster's state changed since this gateway's copy")

// ErrNotActive means a write made under an active role's epoch was refused:
// another gateway was promoted since, and only it records what partners do.
var ErrNotActive = errors.New("this gateway no longer holds the active role it wrote under")

// keyFence is the meta key of the copy's fence, and keyOrigin of which
// cluster's state it is a copy of (the Replicator's to say). Both are local
// to each gateway and never written through a bucket, so never replicated.
var (
	keyFence  = []byte("cluster_fence")
	keyOrigin = []byte("cluster_origin")
)

// replicaWait bounds how long a change waits for this copy to catch up
// with a change another gateway made first, over all its retries.
const replicaWait = 5 * time.Second

// bucket is a bucket of the transaction's through which every write is
// also recorded when the state is replicated.
type bucket struct {
	*bolt.Bucket
	name string
	tx   *Tx
}

func (t *Tx) bucket(name []byte) bucket {
	return bucket{Bucket: t.tx.Bucket(name), name: string(name), tx: t}
}

func (b bucket) Put(k, v []byte) error {
	if err := b.Bucket.Put(k, v); err != nil {
		return err
	}
	if b.tx.recording {
		b.tx.writes = append(b.tx.writes, Write{Bucket: b.name, Key: bytes.Clone(k), Value: bytes.Clone(v)})
	}
	return nil
}

func (b bucket) Delete(k []byte) error {
	if err := b.Bucket.Delete(k); err != nil {
		return err
	}
	if b.tx.recording {
		b.tx.writes = append(b.tx.writes, Write{Bucket: b.name, Key: bytes.Clone(k), Delete: true})
	}
	return nil
}

func (b bucket) NextSequence() (uint64, error) {
	seq, err := b.Bucket.NextSequence()
	if err == nil && b.tx.recording {
		b.tx.writes = append(b.tx.writes, Write{Bucket: b.name, Seq: seq})
	}
	return seq, err
}

// Replicate makes db a copy of a cluster's state, which r keeps: from now
// on every change is the cluster's before it is this copy's. Call it once,
// before any change.
func (db *DB) Replicate(r Replicator) { db.repl = r }

// ReadCopy reads the fence of the copy at path, 0 when it is none, and
// the origin it was made with: a gateway that cannot reach etcd at its
// start starts from it.
func ReadCopy(path string) (fence int64, origin []byte, err error) {
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return 0, nil, err
	}
	defer b.Close()
	err = b.View(func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			fence, origin = readFence(tx), bytes.Clone(m.Get(keyOrigin))
		}
		return nil
	})
	return fence, origin, err
}

// Fence is the cluster's version of the state this copy holds.
func (db *DB) Fence() (int64, error) {
	var f int64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		f = readFence(tx)
		return nil
	})
	return f, err
}

func readFence(tx *bolt.Tx) int64 {
	raw := tx.Bucket(bucketMeta).Get(keyFence)
	if len(raw) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(raw))
}

func writeFence(tx *bolt.Tx, f int64) error {
	return tx.Bucket(bucketMeta).Put(keyFence, be64(uint64(f)))
}

// changeReplicated is Change for a copy: fn runs in a local transaction,
// its writes are committed to the cluster, then locally. When another
// gateway wrote first, fn runs again once this copy holds that write.
func (db *DB) changeReplicated(epoch int64, fn func(*Tx) error) (Changes, error) {
	deadline := time.Now().Add(replicaWait)
	for {
		caughtUp := db.caughtUp()
		var ch Changes
		err := db.bolt.Update(func(btx *bolt.Tx) error {
			tx := &Tx{tx: btx, recording: true}
			if err := fn(tx); err != nil {
				return err
			}
			ch = tx.changes()
			if len(tx.writes) == 0 {
				return nil
			}
			next, err := db.repl.Commit(readFence(btx), epoch, tx.writes)
			if err != nil {
				return err
			}
			return writeFence(btx, next)
		})
		if !errors.Is(err, ErrStale) {
			if err != nil {
				return Changes{}, err
			}
			return ch, nil
		}
		select {
		case <-caughtUp:
		case <-time.After(time.Until(deadline)):
			return Changes{}, fmt.Errorf("%w, and this gateway's copy did not catch up within %s", ErrStale, replicaWait)
		}
	}
}

// caughtUp returns a channel closed the next time ApplyReplicated moves
// the copy forward.
func (db *DB) caughtUp() <-chan struct{} {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.advanced == nil {
		db.advanced = make(chan struct{})
	}
	return db.advanced
}

// ApplyReplicated puts into this copy the writes that brought the
// cluster's state to fence, and reports what of them the data plane
// depends on. Writes at or below the copy's fence are held already (this
// gateway's own) and change nothing.
func (db *DB) ApplyReplicated(fence int64, ws []Write) (Changes, error) {
	var ch Changes
	moved := false
	err := db.bolt.Update(func(btx *bolt.Tx) error {
		if readFence(btx) >= fence {
			return nil
		}
		tx := &Tx{tx: btx}
		for _, w := range ws {
			if err := applyWrite(btx, w); err != nil {
				return err
			}
			switch w.Bucket {
			case string(bucketPeers):
				tx.peerChanged(string(w.Key))
			case string(bucketOrgs):
				tx.orgsChanged = true
			}
		}
		ch, moved = tx.changes(), true
		return writeFence(btx, fence)
	})
	if err != nil {
		return Changes{}, fmt.Errorf("apply the cluster's change %d: %w", fence, err)
	}
	if moved {
		db.mu.Lock()
		if db.advanced != nil {
			close(db.advanced)
			db.advanced = nil
		}
		db.mu.Unlock()
	}
	return ch, nil
}

func applyWrite(tx *bolt.Tx, w Write) error {
	if bytes.Equal([]byte(w.Bucket), bucketMeta) && (bytes.Equal(w.Key, keyFence) || bytes.Equal(w.Key, keyOrigin)) {
		return fmt.Errorf("a write to %s/%s, which is each gateway's own", w.Bucket, w.Key)
	}
	b, err := tx.CreateBucketIfNotExists([]byte(w.Bucket))
	if err != nil {
		return fmt.Errorf("bucket %q: %w", w.Bucket, err)
	}
	switch {
	case w.Key == nil:
		return b.SetSequence(w.Seq)
	case w.Delete:
		return b.Delete(w.Key)
	default:
		return b.Put(w.Key, w.Value)
	}
}

// Dump returns the whole state as writes, for a cluster's first copy.
func (db *DB) Dump() ([]Write, error) {
	var out []Write
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			// Every bucket, empty ones too, so that a copy has them all.
			out = append(out, Write{Bucket: string(name), Seq: b.Sequence()})
			return b.ForEach(func(k, v []byte) error {
				if bytes.Equal(name, bucketMeta) && (bytes.Equal(k, keyFence) || bytes.Equal(k, keyOrigin)) {
					return nil
				}
				out = append(out, Write{Bucket: string(name), Key: bytes.Clone(k), Value: bytes.Clone(v)})
				return nil
			})
		})
	})
	return out, err
}

// Rebuild replaces the state file at path with a copy of the cluster's
// state ws at fence; origin says which cluster's (ReadCopy returns it). It
// refuses while a daemon holds the file, and leaves the file as it was on
// any error.
func Rebuild(path string, fence int64, origin []byte, ws []Write) error {
	if _, err := os.Stat(path); err == nil {
		held, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if errors.Is(err, bolterrors.ErrTimeout) {
			return fmt.Errorf("copy the cluster's state to %s: %w", path, ErrLocked)
		}
		if err != nil {
			return fmt.Errorf("copy the cluster's state to %s: %w", path, err)
		}
		// Held until the new file is in place, so that no daemon starts
		// on the old one in between.
		defer held.Close()
	}
	for _, w := range ws {
		if w.Bucket == string(bucketMeta) && bytes.Equal(w.Key, keySchema) {
			if len(w.Value) != 4 || binary.BigEndian.Uint32(w.Value) != SchemaVersion {
				return fmt.Errorf("the cluster's state has another schema than this extranetd's (%d): run the same release on every gateway", SchemaVersion)
			}
		}
	}
	tmp := path + ".sync"
	os.Remove(tmp)
	defer os.Remove(tmp)
	b, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("copy the cluster's state: %w", err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketMeta); err != nil {
			return err
		}
		for _, w := range ws {
			if err := applyWrite(tx, w); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keyOrigin, origin); err != nil {
			return err
		}
		return writeFence(tx, fence)
	})
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy the cluster's state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("copy the cluster's state: %w", err)
	}
	return nil
}
