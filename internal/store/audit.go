package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Event is one audit record. Hash covers every other field and the previous
// event's hash, so editing, removing or reordering events breaks the chain.
type Event struct {
	Seq    uint64          `json:"seq"`
	Time   time.Time       `json:"time"`
	Actor  string          `json:"actor"`
	Action string          `json:"action"`
	Target string          `json:"target"`
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
	Prev   string          `json:"prev"`
	Hash   string          `json:"hash"`
}

// computeHash hashes the event with its Hash field empty.
func (e Event) computeHash() string {
	e.Hash = ""
	raw, _ := json.Marshal(e) // a struct of plain fields always marshals
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// Audit appends an event in the current transaction. before and after are
// snapshots of the target (nil when absent); they must hold no secrets.
func (t *Tx) Audit(at time.Time, actor, action, target string, before, after any) error {
	b := t.bucket(bucketAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	ev := Event{
		Seq:    seq,
		Time:   at.UTC(),
		Actor:  actor,
		Action: action,
		Target: target,
		Prev:   string(t.bucket(bucketMeta).Get(keyAuditHead)),
	}
	if ev.Before, err = marshalSnapshot(before); err != nil {
		return err
	}
	if ev.After, err = marshalSnapshot(after); err != nil {
		return err
	}
	ev.Hash = ev.computeHash()
	if err := putJSON(b, be64(seq), ev); err != nil {
		return err
	}
	return t.bucket(bucketMeta).Put(keyAuditHead, []byte(ev.Hash))
}

func marshalSnapshot(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("audit snapshot: %w", err)
	}
	if string(raw) == "null" {
		return nil, nil
	}
	return raw, nil
}

// Events calls fn for every event with Seq >= from, oldest first.
func (t *Tx) Events(from uint64, fn func(*Event) error) error {
	c := t.bucket(bucketAudit).Cursor()
	for k, v := c.Seek(be64(from)); k != nil; k, v = c.Next() {
		var ev Event
		if err := json.Unmarshal(v, &ev); err != nil {
			return fmt.Errorf("decode audit event %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if err := fn(&ev); err != nil {
			return err
		}
	}
	return nil
}

// VerifyAudit walks the chain and returns the sequence number of the first
// event whose hash or link does not hold, and why, or 0 when the chain is
// intact.
func (t *Tx) VerifyAudit() (uint64, string, error) {
	var prev string
	first := true
	var broken, last uint64
	var why string
	// The first event links to the anchor: empty for a log never trimmed,
	// else the hash of the last event retention removed.
	anchor := string(t.bucket(bucketMeta).Get(keyAuditAnchor))
	err := t.Events(0, func(ev *Event) error {
		switch {
		case ev.computeHash() != ev.Hash:
			broken, why = ev.Seq, "its content does not match its hash (edited)"
		case first && ev.Prev != anchor:
			broken, why = ev.Seq, "it does not link to the start of the log (events before it were removed)"
		case !first && ev.Prev != prev:
			broken, why = ev.Seq, "it does not link to the previous event (removed or reordered)"
		}
		if broken != 0 {
			return errStop
		}
		prev, first, last = ev.Hash, false, ev.Seq
		return nil
	})
	if err != nil && err != errStop {
		return 0, "", err
	}
	if broken == 0 && !first && string(t.bucket(bucketMeta).Get(keyAuditHead)) != prev {
		return last + 1, "the events after it were removed (the recorded head does not match)", nil
	}
	return broken, why, nil
}

var errStop = fmt.Errorf("stop")

// TrimAudit removes events older than before, keeping the chain verifiable:
// the hash the first kept event links to becomes the new anchor. It returns
// how many events it removed.
func (t *Tx) TrimAudit(before time.Time) (int, error) {
	b := t.bucket(bucketAudit)
	c := b.Cursor()
	var doomed [][]byte
	anchor := ""
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var ev Event
		if err := json.Unmarshal(v, &ev); err != nil {
			return 0, fmt.Errorf("decode audit event: %w", err)
		}
		if !ev.Time.Before(before) {
			break
		}
		doomed = append(doomed, append([]byte(nil), k...))
		anchor = ev.Hash
	}
	if len(doomed) == 0 {
		return 0, nil
	}
	for _, k := range doomed {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(doomed), t.bucket(bucketMeta).Put(keyAuditAnchor, []byte(anchor))
}
