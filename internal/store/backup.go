package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
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

// Restore replaces the state file at dst with the backup at src. It
// refuses a backup that fails bbolt's consistency check or comes from a
// newer schema, and refuses to run while a daemon holds dst.
func Restore(src, dst string) error {
	if err := checkBackup(src); err != nil {
		return fmt.Errorf("backup %s: %w", src, err)
	}
	if _, err := os.Stat(dst); err == nil {
		held, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second})
		if errors.Is(err, bolterrors.ErrTimeout) {
			return fmt.Errorf("%s is in use: stop extranetd before restoring", dst)
		}
		if err == nil {
			held.Close()
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".restore"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
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
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore %s: %w", dst, err)
	}
	// Make the rename itself durable.
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
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
