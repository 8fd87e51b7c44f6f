package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// initCluster makes a one-organisation state the cluster's and returns a
// gateway following it.
func initCluster(t *testing.T, e *Etcd) (*gateway, string) {
	t.Helper()
	dir := t.TempDir()
	single, err := store.Open(filepath.Join(dir, "single.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := single.Update(func(tx *store.Tx) error { return tx.PutOrg(org("acme", 1)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Init(context.Background(), single, ""); err != nil {
		t.Fatal(err)
	}
	single.Close()
	return join(t, e, filepath.Join(dir, "a.db")), dir
}

// TestOneChangeMayWriteAKeyTwice: a change that records two audit events
// (expire of two peers, delete of an organisation with a live peer, the
// first role assignments) moves the audit sequence and head twice, and
// etcd refuses a transaction that names one key twice.
func TestOneChangeMayWriteAKeyTwice(t *testing.T) {
	e, _ := startEtcd(t)
	a, _ := initCluster(t, e)
	err := a.db.Update(func(tx *store.Tx) error {
		for _, name := range []string{"acme/p1", "acme/p2"} {
			if err := tx.Audit(time.Now(), "extranetd", "peer.suspend", name, nil, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("a change with two audit events: %v", err)
	}
}

// TestPutThenDeleteInOneChange: a change that writes a key and then
// deletes it leaves it deleted, in etcd too.
func TestPutThenDeleteInOneChange(t *testing.T) {
	e, _ := startEtcd(t)
	a, _ := initCluster(t, e)
	err := a.db.Update(func(tx *store.Tx) error {
		if err := tx.PutOrg(org("globex", 2)); err != nil {
			return err
		}
		return tx.DeleteOrg("globex")
	})
	if err != nil {
		t.Errorf("a change that puts then deletes one key: %v", err)
	}
}

// TestForeignKeyUnderPrefixIsIgnored: a key under the prefix that no
// gateway wrote (an operator's note, a stray etcdctl put) comes without
// the fence; taken in, it would put the copy at a version the fence never
// has, and every later change would be refused as stale.
func TestForeignKeyUnderPrefixIsIgnored(t *testing.T) {
	e, _ := startEtcd(t)
	a, _ := initCluster(t, e)
	for i := range 2 {
		if _, err := e.Client.Put(context.Background(), e.Prefix+"note", "hello"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if err := a.db.Update(func(tx *store.Tx) error { return tx.PutOrg(org(fmt.Sprint("globex", i), uint32(2+i))) }); err != nil {
			t.Errorf("a change after a foreign key under the prefix: %v", err)
		}
	}
}

// startEtcdAt runs a fresh etcd (empty data dir) serving clients at
// clientURL: an etcd rebuilt, or restored from an older snapshot, at the
// address the gateways already use.
func startEtcdAt(t *testing.T, clientURL string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peer := url.URL{Scheme: "http", Host: l.Addr().String()}
	l.Close()
	client, err := url.Parse(clientURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "rebuilt"
	cfg.Dir = t.TempDir()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.MaxTxnOps = 100000
	srv, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	select {
	case <-srv.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not become ready")
	}
}

// TestRewoundEtcdIsNotFollowed: etcd rebuilt (or restored from an older
// snapshot) under a running gateway holds another state, made anew from
// another copy, whose revisions start again below the copy's. Followed from
// the copy's revision, its changes would be missed without a word, and a
// commit could land on a copy that lacks them. Instead the watch stops
// with an error that makes the daemon copy the state anew, and the copy
// cannot commit.
func TestRewoundEtcdIsNotFollowed(t *testing.T) {
	e, srv := startEtcd(t)
	dir := t.TempDir()
	single, err := store.Open(filepath.Join(dir, "single.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Init(context.Background(), single, ""); err != nil {
		t.Fatal(err)
	}
	ws, fence, rev, err := e.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "a.db")
	if err := store.Rebuild(path, fence, e.Origin(), ws); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.Replicate(e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	followed := make(chan error, 1)
	go func() { followed <- e.Follow(ctx, db, rev+1, func(store.Changes) {}) }()
	for i := range 5 {
		if err := db.Update(func(tx *store.Tx) error { return tx.PutOrg(org(fmt.Sprint("o", i), uint32(1+i))) }); err != nil {
			t.Fatal(err)
		}
	}

	srv.Stop()
	startEtcdAt(t, srv.URL)
	// Another gateway makes the state anew there, from its own copy.
	other := &Etcd{Client: e.Client, Prefix: e.Prefix}
	if _, err := other.Init(context.Background(), single, ""); err != nil {
		t.Fatal(err)
	}
	single.Close()
	select {
	case err := <-followed:
		if !errors.Is(err, errDiverged) {
			t.Errorf("the watch ended with %v, want %v", err, errDiverged)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the copy still follows an etcd that holds another state")
	}
	if err := db.Update(func(tx *store.Tx) error { return tx.PutOrg(org("globex", 9)) }); err == nil {
		t.Error("a copy of the old state committed to the new one")
	}
}

// TestFollowingSaysWhenEtcdIsGone: etcd's client resumes a broken watch by
// itself and says nothing, so status would say the copy follows while
// etcd is gone; the check on the side says it does not, and that it does
// again once etcd is back.
func TestFollowingSaysWhenEtcdIsGone(t *testing.T) {
	e, srv := startEtcd(t)
	initCluster(t, e)
	following := func(want bool) func() error {
		return func() error {
			got, since := e.Following()
			if (got == "ok") != want || since.IsZero() {
				return fmt.Errorf("following: %q since %v", got, since)
			}
			return nil
		}
	}
	eventually(t, "following", following(true))
	srv.Stop()
	eventually(t, "not following while etcd is gone", following(false))
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "following again", following(true))
}

// TestNameHeldByAnotherGateway: a gateway does not take over the name
// another holds (cloned hosts share a host name): it stays unlisted and
// says why, and the holder stays listed.
func TestNameHeldByAnotherGateway(t *testing.T) {
	e, _ := startEtcd(t)
	initCluster(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Register(ctx, api.ClusterGateway{Name: "gw1", Version: "v1", Started: time.Now()}, "instance-1")
	}()
	defer func() {
		cancel()
		<-done
	}()
	eventually(t, "gw1 listed", func() error {
		gws, err := e.Gateways(context.Background())
		if err != nil || len(gws) != 1 || gws[0].Name != "gw1" || gws[0].Version != "v1" {
			return fmt.Errorf("%+v, %v", gws, err)
		}
		return nil
	})
	if err := e.registerOnce(context.Background(), "gw1", `{"name":"gw1","version":"v2"}`); !errors.Is(err, errNameTaken) {
		t.Errorf("a second gateway named gw1: %v, want %v", err, errNameTaken)
	}
	if gws, err := e.Gateways(context.Background()); err != nil || len(gws) != 1 || gws[0].Version != "v1" {
		t.Errorf("after a second gateway tried the name: %+v, %v", gws, err)
	}
	// The same gateway, restarted after a kill -9 left its listing
	// behind, takes it over at once.
	rctx, rcancel := context.WithCancel(context.Background())
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		e.registerOnce(rctx, "gw1", `{"name":"gw1","version":"v3","instance":"instance-1"}`)
	}()
	defer func() {
		rcancel()
		<-restarted
	}()
	eventually(t, "the restarted gateway listed", func() error {
		gws, err := e.Gateways(context.Background())
		if err != nil || len(gws) != 1 || gws[0].Version != "v3" {
			return fmt.Errorf("%+v, %v", gws, err)
		}
		return nil
	})
}
