package httpapi_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/extranetgw/extranet/internal/httpapi"
	"github.com/extranetgw/extranet/internal/store"
)

// fill writes n bytes of filler into bucket name, growing the file.
func fill(db *store.DB, name string, n int) error {
	chunk := bytes.Repeat([]byte{0xa5}, 128<<10)
	return db.Bolt().Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		for i := 0; i*len(chunk) < n; i++ {
			if err := b.Put([]byte(fmt.Sprint(i)), chunk); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestStalledBackupReaderDoesNotBlockWrites: a backup client that stops
// reading must not hold up a commit that grows the file (bbolt remaps it,
// which waits for every read transaction to end).
func TestStalledBackupReaderDoesNotBlockWrites(t *testing.T) {
	t.Cleanup(httpapi.SetBackupStall(time.Second))
	_, sock, db := startServer(t)
	// Bigger than every socket buffer between the server and the client.
	if err := fill(db, "filler", 8<<20); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// Runs before the server's and the store's cleanups, so a server
	// blocked on this client lets go before they wait for it.
	t.Cleanup(func() { conn.Close() })
	conn.(*net.UnixConn).SetReadBuffer(4096)
	if _, err := fmt.Fprintf(conn, "GET /v1/backup HTTP/1.1\r\nHost: extranetd\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Read one byte so the server has begun, then stall.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)

	done := make(chan error, 1)
	go func() { done <- fill(db, "growth", 32<<20) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write that grows the database waited 10s behind a backup client that stopped reading")
	}

	// The server gives up on the stalled client: the stream ends short of
	// the file instead of waiting forever.
	time.Sleep(1500 * time.Millisecond)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server still holds the stalled stream open after %d bytes", n)
	}
	if n >= 8<<20 {
		t.Errorf("the stalled client got the whole file (%d bytes); the server should have given up", n)
	}
}
