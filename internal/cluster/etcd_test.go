package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/extranetgw/extranet/internal/cluster/etcdtest"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// gateway is one gateway's copy of the cluster's state, following it.
type gateway struct {
	db      *store.DB
	mu      sync.Mutex
	changes []store.Changes
}

func (g *gateway) seen() []store.Changes {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.changes)
}

func startEtcd(t testing.TB) (*Etcd, *etcdtest.Server) {
	t.Helper()
	srv, err := etcdtest.Start(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.URL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return &Etcd{Client: cli, Prefix: "/extranet/"}, srv
}

// join copies the cluster's state into a new state file and follows it, as
// a gateway's start does.
func join(t testing.TB, e *Etcd, path string) *gateway {
	t.Helper()
	ws, fence, rev, err := e.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Rebuild(path, fence, e.Origin(), ws); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	db.Replicate(e)
	g := &gateway{db: db}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.Follow(ctx, db, rev+1, func(ch store.Changes) {
			g.mu.Lock()
			g.changes = append(g.changes, ch)
			g.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("follow: %v", err)
		}
		db.Close()
	})
	return g
}

func org(name string, id uint32) *store.Org {
	return &store.Org{ID: id, Name: name, State: api.StateActive, Blocks: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("100.64.%d.0/24", id))},
		Groups: []store.Group{{ID: id, Name: store.DefaultGroup}}}
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sameState(a, b *store.DB) error {
	wa, err := a.Dump()
	if err != nil {
		return err
	}
	wb, err := b.Dump()
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(wa, wb) {
		return fmt.Errorf("the copies differ: %d and %d records", len(wa), len(wb))
	}
	return nil
}

// TestTwoGatewaysShareOneState: a single gateway's state becomes the
// cluster's whole (its audit chain goes on), a change made on either
// gateway reaches the other with what the data plane must apply, and
// changes made on both at once all land, in one order, on one audit chain.
func TestTwoGatewaysShareOneState(t *testing.T) {
	e, _ := startEtcd(t)
	dir := t.TempDir()

	single, err := store.Open(filepath.Join(dir, "single.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := single.Update(func(tx *store.Tx) error {
		if err := tx.PutOrg(org("acme", 1)); err != nil {
			return err
		}
		return tx.Audit(time.Now(), "root", "org.create", "acme", nil, nil)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Init(context.Background(), single, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Init(context.Background(), single, ""); !errors.Is(err, ErrHasState) {
		t.Errorf("a second init: %v, want %v", err, ErrHasState)
	}
	single.Close()

	a := join(t, e, filepath.Join(dir, "a.db"))
	b := join(t, e, filepath.Join(dir, "b.db"))
	if err := b.db.View(func(tx *store.Tx) error {
		_, err := tx.Org("acme")
		return err
	}); err != nil {
		t.Fatalf("the joined copy lacks the first gateway's organisation: %v", err)
	}

	// A peer issued on b is a change a's data plane must apply.
	if err := b.db.Update(func(tx *store.Tx) error {
		if err := tx.PutPeer(&store.Peer{Org: "acme", Name: "laptop", State: api.StateActive, Group: store.DefaultGroup}); err != nil {
			return err
		}
		return tx.Audit(time.Now(), "bob", "peer.create", "acme/laptop", nil, nil)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a sees b's peer", func() error {
		for _, ch := range a.seen() {
			if slices.Contains(ch.Peers, "acme/laptop") {
				return nil
			}
		}
		return fmt.Errorf("changes seen: %+v", a.seen())
	})
	if len(b.seen()) != 0 {
		t.Errorf("b was told of its own change as another's: %+v", b.seen())
	}

	// Both write at once; every change lands, each exactly once.
	const n = 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i, g := range []*gateway{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range n {
				errs <- g.db.Update(func(tx *store.Tx) error {
					return tx.Audit(time.Now(), fmt.Sprint("admin", i), "org.update", fmt.Sprint("change ", j), nil, nil)
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a change made at the same time as another gateway's: %v", err)
		}
	}
	eventually(t, "both copies hold the same state", func() error { return sameState(a.db, b.db) })
	for name, g := range map[string]*gateway{"a": a, "b": b} {
		var events int
		err := g.db.View(func(tx *store.Tx) error {
			if seq, why, err := tx.VerifyAudit(); err != nil || seq != 0 {
				return fmt.Errorf("audit chain broken at %d: %s (%v)", seq, why, err)
			}
			return tx.Events(0, func(*store.Event) error { events++; return nil })
		})
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if want := 2 + 2*n; events != want {
			t.Errorf("%s holds %d audit events, want %d", name, events, want)
		}
	}
}

// TestStaleCopyCannotWrite: a gateway whose copy is behind (it has not yet
// applied another gateway's change) cannot commit over that change.
func TestStaleCopyCannotWrite(t *testing.T) {
	e, _ := startEtcd(t)
	single, err := store.Open(filepath.Join(t.TempDir(), "single.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	fence, err := e.Init(context.Background(), single, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Commit(fence, 0, []store.Write{{Bucket: "orgs", Key: []byte("acme"), Value: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Commit(fence, 0, []store.Write{{Bucket: "orgs", Key: []byte("acme"), Value: []byte(`{"x":1}`)}}); !errors.Is(err, store.ErrStale) {
		t.Errorf("a commit at an old fence: %v, want %v", err, store.ErrStale)
	}
}

// TestCopyStandsWhileEtcdIsGone: with etcd unreachable (down, or without
// its quorum) a gateway keeps its copy as it is and refuses changes with
// an error that says why; when etcd is back, the copy catches up with the
// changes made meanwhile through another gateway.
func TestCopyStandsWhileEtcdIsGone(t *testing.T) {
	e, srv := startEtcd(t)
	a, dir := initCluster(t, e)
	b := join(t, e, filepath.Join(dir, "b.db"))

	srv.Stop()
	err := a.db.Update(func(tx *store.Tx) error { return tx.PutOrg(org("globex", 2)) })
	if err == nil || !strings.Contains(err.Error(), "etcd") {
		t.Errorf("a change while etcd is gone: %v, want an error naming etcd", err)
	}
	if err := a.db.View(func(tx *store.Tx) error {
		if _, err := tx.Org("globex"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("the refused change is in the copy: %v", err)
		}
		_, err := tx.Org("acme")
		return err
	}); err != nil {
		t.Error(err)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// The client reconnects with a backoff that grew while etcd was
	// gone, so on a loaded machine the first change can still time out
	// (and say so, as a change while etcd is gone does): it goes
	// through once the client is back, within seconds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := b.db.Update(func(tx *store.Tx) error { return tx.PutOrg(org("initech", 3)) })
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "etcd") || time.Now().After(deadline) {
			t.Fatalf("a change once etcd is back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	eventually(t, "a catches up once etcd is back", func() error {
		return a.db.View(func(tx *store.Tx) error {
			_, err := tx.Org("initech")
			return err
		})
	})
}
