package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/extranetgw/extranet/pkg/api"
)

// Backup writes a consistent copy of the whole file to w from one read
// transaction, while writers go on.
func (db *DB) Backup(w io.Writer) (int64, error) {
	var n int64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Snapshot writes a consistent copy of the whole file to a temporary file
// in the state directory and returns it open at its start, with its size.
// The read transaction ends before anyone reads the copy: a read
// transaction held open by a slow reader would make every commit that
// grows the file wait for it. The file is unlinked at once, so a crash
// never leaves a copy of the keys behind; closing it frees its space.
func (db *DB) Snapshot() (*os.File, int64, error) {
	dir := filepath.Dir(db.path)
	f, err := os.CreateTemp(dir, ".backup-*")
	if err != nil {
		return nil, 0, fmt.Errorf("backup: create a temporary file in %s: %w (the state directory needs room for a copy of the database)", dir, err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("backup: unlink temporary file %s: %w", f.Name(), err)
	}
	n, err := db.Backup(f)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("backup: write a copy to %s: %w", dir, err)
	}
	return f, n, nil
}

// ErrInUse is a restore's refusal of a state file a daemon holds.
var ErrInUse = errors.New("it is in use")

// RestoreOptions say who restores and how far to trust the backup.
type RestoreOptions struct {
	// AllowRevoked restores peers whose keys were revoked (or rotated away)
	// after the backup was taken as the backup has them; otherwise they are
	// restored revoked.
	AllowRevoked bool
	// AllowResumed restores peers suspended (or expired) since the backup
	// was taken as the backup has them, active; otherwise they keep their
	// state of now.
	AllowResumed bool
	// Actor is the unix user restoring, for the audit event.
	Actor string
	// DryRun compares and reports, and replaces nothing.
	DryRun bool
	Now    time.Time
}

// RestoredPeer is a peer whose fate a restore changes. State is its state
// in the backup; Now says what the current state holds of its key.
type RestoredPeer struct {
	Peer      string `json:"peer"`
	PublicKey string `json:"public_key"`
	State     string `json:"state"`
	Now       string `json:"now"`
}

// RestoreReport is what a restore found by comparing the backup with the
// state it replaces, by public key.
type RestoreReport struct {
	// Compared is false when there was no current state to compare with.
	Compared bool `json:"compared"`
	// ReEnabled are live in the backup and not live now: their keys are
	// unknown to the current state, or (with AllowRevoked) revoked in it.
	ReEnabled []RestoredPeer `json:"re_enabled"`
	// KeptRevoked are live in the backup with a key revoked now; they are
	// restored revoked.
	KeptRevoked []RestoredPeer `json:"kept_revoked"`
	// KeptSuspended are active in the backup and suspended or expired now,
	// with the same key; they keep their state of now.
	KeptSuspended []RestoredPeer `json:"kept_suspended"`
	// Changed are the other peers whose state the restore changes: they
	// take the backup's, which opens nothing that is closed now.
	Changed []RestoredPeer `json:"changed"`
	// Lost are live now with a key the backup does not know. State is
	// their state now.
	Lost []RestoredPeer `json:"lost"`
	// BurntKeys counts keys revoked now that the backup did not know; they
	// stay burnt in the restored state.
	BurntKeys int `json:"burnt_keys"`
}

// currentKeys is what the state being replaced knows of public keys.
type currentKeys struct {
	owner map[string]string       // every key ever used → its peer
	live  map[string]RestoredPeer // keys held by a peer that is not revoked
}

func readCurrentKeys(tx *bolt.Tx) (currentKeys, error) {
	ck := currentKeys{owner: map[string]string{}, live: map[string]RestoredPeer{}}
	if b := tx.Bucket(bucketKeys); b != nil {
		if err := b.ForEach(func(k, v []byte) error {
			ck.owner[string(k)] = string(v)
			return nil
		}); err != nil {
			return ck, err
		}
	}
	if b := tx.Bucket(bucketPeers); b != nil {
		if err := b.ForEach(func(k, v []byte) error {
			var p Peer
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("decode peer %s: %w", k, err)
			}
			if p.State != api.StateRevoked {
				ck.live[p.PublicKey] = RestoredPeer{Peer: p.ID(), PublicKey: p.PublicKey, State: p.State}
			}
			return nil
		}); err != nil {
			return ck, err
		}
	}
	return ck, nil
}

// Restore replaces the state file at dst with the backup at src. It
// refuses a backup that fails bbolt's consistency check or comes from a
// newer schema, and refuses to run while a daemon holds dst. Before it
// replaces anything it compares the backup with dst by public key: a key
// revoked since the backup stays revoked unless opts.AllowRevoked, a peer
// suspended or expired since stays so unless opts.AllowResumed, keys burnt
// since stay burnt, and the restore is audited in the restored file.
func Restore(src, dst string, opts RestoreOptions) (RestoreReport, error) {
	var rep RestoreReport
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if err := checkBackup(src); err != nil {
		return rep, fmt.Errorf("backup %s: %w", src, err)
	}
	cur := currentKeys{owner: map[string]string{}, live: map[string]RestoredPeer{}}
	if _, err := os.Stat(dst); err == nil {
		// Held until the new file is in place, so a daemon cannot start on
		// the old state in between.
		held, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
		if errors.Is(err, bolterrors.ErrTimeout) {
			return rep, fmt.Errorf("restore %s: %w: stop extranetd before restoring", dst, ErrInUse)
		}
		if err != nil {
			return rep, fmt.Errorf("restore %s: read the current state to compare with the backup: %w (move it aside to restore without comparing)", dst, err)
		}
		defer held.Close()
		if err := held.View(func(tx *bolt.Tx) error {
			var err error
			cur, err = readCurrentKeys(tx)
			return err
		}); err != nil {
			return rep, fmt.Errorf("restore %s: read the current state: %w", dst, err)
		}
		rep.Compared = true
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return rep, fmt.Errorf("restore %s: %w", dst, err)
	}
	tmp := dst + ".restore"
	os.Remove(tmp)
	if err := copyFile(src, tmp); err != nil {
		os.Remove(tmp)
		return rep, fmt.Errorf("restore %s: %w", dst, err)
	}
	defer os.Remove(tmp)
	db, err := Open(tmp, time.Second)
	if err != nil {
		return rep, fmt.Errorf("restore %s: %w", dst, err)
	}
	err = db.Update(func(tx *Tx) error {
		rep = RestoreReport{Compared: rep.Compared, ReEnabled: []RestoredPeer{}, KeptRevoked: []RestoredPeer{}, KeptSuspended: []RestoredPeer{}, Changed: []RestoredPeer{}, Lost: []RestoredPeer{}}
		return reconcileKeys(tx, cur, opts, src, &rep)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rep, fmt.Errorf("restore %s: %w", dst, err)
	}
	if opts.DryRun {
		return rep, nil
	}
	if err := os.Rename(tmp, dst); err != nil {
		return rep, fmt.Errorf("restore %s: %w", dst, err)
	}
	// Make the rename itself durable.
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		d.Sync()
		d.Close()
	}
	return rep, nil
}

// reconcileKeys brings what the current state knows of keys into the
// restored one (tx) and records the restore.
func reconcileKeys(tx *Tx, cur currentKeys, opts RestoreOptions, src string, rep *RestoreReport) error {
	var revoke, hold []*Peer
	backupKeys := map[string]bool{}
	if err := tx.Peers("", func(p *Peer) error {
		backupKeys[p.PublicKey] = true
		if p.State == api.StateRevoked || !rep.Compared {
			return nil
		}
		if now, live := cur.live[p.PublicKey]; live {
			if now.State == p.State {
				return nil
			}
			rp := RestoredPeer{Peer: p.ID(), PublicKey: p.PublicKey, State: p.State, Now: now.State}
			switch {
			case p.State != api.StateActive || now.State == api.StateActive:
				// Closed in the backup, or open now: the backup's state
				// reopens nothing.
				rep.Changed = append(rep.Changed, rp)
			case opts.AllowResumed:
				rep.ReEnabled = append(rep.ReEnabled, rp)
			default:
				// Suspended or expired since the backup, by hand or by
				// expire: a restore is no way to resume it.
				rep.KeptSuspended = append(rep.KeptSuspended, rp)
				p.State = now.State
				hold = append(hold, p)
			}
			return nil
		}
		rp := RestoredPeer{Peer: p.ID(), PublicKey: p.PublicKey, State: p.State, Now: "absent"}
		switch owner := cur.owner[p.PublicKey]; {
		case owner == "":
			rep.ReEnabled = append(rep.ReEnabled, rp)
		case opts.AllowRevoked:
			rp.Now = "revoked (by " + owner + ")"
			rep.ReEnabled = append(rep.ReEnabled, rp)
		default:
			rp.Now = "revoked (by " + owner + ")"
			rep.KeptRevoked = append(rep.KeptRevoked, rp)
			revoke = append(revoke, p)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, p := range revoke {
		p.State, p.UpdatedAt = api.StateRevoked, opts.Now.UTC()
		if err := tx.ReleaseAddr(p.Address); err != nil {
			return err
		}
		if err := tx.PutPeer(p); err != nil {
			return err
		}
	}
	for _, p := range hold {
		p.UpdatedAt = opts.Now.UTC()
		if err := tx.PutPeer(p); err != nil {
			return err
		}
	}
	for key, owner := range cur.owner {
		if _, live := cur.live[key]; live || tx.KeyOwner(key) != "" {
			continue
		}
		if err := tx.ClaimKey(key, owner); err != nil {
			return err
		}
		rep.BurntKeys++
	}
	for key, rp := range cur.live {
		if !backupKeys[key] {
			rp.Now = "live"
			rep.Lost = append(rep.Lost, rp)
		}
	}
	sort.Slice(rep.Lost, func(i, j int) bool { return rep.Lost[i].Peer < rep.Lost[j].Peer })
	return tx.Audit(opts.Now, opts.Actor, "state.restore", "state", nil, map[string]any{
		"backup":         src,
		"allow_revoked":  opts.AllowRevoked,
		"allow_resumed":  opts.AllowResumed,
		"compared":       rep.Compared,
		"re_enabled":     rep.ReEnabled,
		"kept_revoked":   rep.KeptRevoked,
		"kept_suspended": rep.KeptSuspended,
		"changed":        rep.Changed,
		"lost":           rep.Lost,
		"burnt_keys":     rep.BurntKeys,
	})
}

// copyFile copies src to a new file dst (mode 0600) and syncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func checkBackup(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("not a state file: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		if first != nil {
			return fmt.Errorf("consistency check failed: %w", first)
		}
		m := tx.Bucket(bucketMeta)
		if m == nil || m.Get(keySchema) == nil {
			return errors.New("not an extranet state file (no schema version)")
		}
		if v := binary.BigEndian.Uint32(m.Get(keySchema)); v > SchemaVersion {
			return fmt.Errorf("schema %d is newer than this extranetd understands (%d)", v, SchemaVersion)
		}
		return nil
	})
}
