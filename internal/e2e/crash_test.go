package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/client"
)

// acked is every change the API acknowledged; after any crash, all of it
// must still be there.
type acked struct {
	mu      sync.Mutex
	issued  map[string]api.Peer // by ORG/NAME
	revoked map[string]bool
	grants  map[string]bool // ORG grant
}

// TestCrashRecovery kills the daemon with SIGKILL at random moments while
// clients issue, grant and revoke concurrently, and checks after each
// restart that the file is sound, nothing acknowledged was lost, no address
// or key is shared, the audit chain holds, and the kernel follows the store.
func TestCrashRecovery(t *testing.T) {
	controlPlane(t)
	r := NewRig(t)
	r.StartDaemon()
	c := client.New(r.Socket)
	ctx := context.Background()
	for _, org := range []string{"acme", "globex"} {
		if _, err := c.CreateOrg(ctx, api.CreateOrgRequest{Name: org}); err != nil {
			t.Fatal(err)
		}
	}
	a := &acked{issued: map[string]api.Peer{}, revoked: map[string]bool{}, grants: map[string]bool{}}
	const rounds = 5
	for round := 0; round < rounds; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				worker(ctx, c, a, round, w, stop)
			}(w)
		}
		time.Sleep(scaled(time.Duration(150+rand.IntN(500)) * time.Millisecond))
		r.KillDaemon()
		close(stop)
		wg.Wait()

		checkFile(t, filepath.Join(r.Dir, "state", "extranet.db"))
		r.StartDaemon()
		checkAcked(t, c, a)
		if v := r.MustCTL("audit", "verify"); !strings.Contains(v, "intact") {
			t.Fatalf("round %d: audit verify: %s", round, v)
		}
		Eventually(t, 5*time.Second, "WireGuard follows the store", func() error {
			active, err := c.ListPeers(ctx, "", api.StateActive)
			if err != nil {
				return err
			}
			keys := strings.Fields(r.wgPeers())
			if len(keys) != len(active) {
				return fmt.Errorf("%d peers on the interface, %d active in the store", len(keys), len(active))
			}
			return nil
		})
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.issued) < rounds {
		t.Errorf("only %d issues were acknowledged in %d rounds; the test did not exercise much", len(a.issued), rounds)
	}
}

// worker issues, grants and revokes until stop, recording what the API
// acknowledged. Errors are expected once the daemon is killed.
func worker(ctx context.Context, c *client.Client, a *acked, round, w int, stop <-chan struct{}) {
	orgs := []string{"acme", "globex"}
	for i := 0; i < 200; i++ {
		select {
		case <-stop:
			return
		default:
		}
		org := orgs[(w+i)%2]
		switch i % 4 {
		case 0, 1:
			name := fmt.Sprintf("r%dw%di%d", round, w, i)
			res, err := c.IssuePeer(ctx, org, api.IssuePeerRequest{Name: name})
			if err == nil {
				a.mu.Lock()
				a.issued[res.Peer.ID()] = res.Peer
				a.mu.Unlock()
			}
		case 2:
			g := fmt.Sprintf("10.%d.%d.0/24", 100+w, (round*50+i)%250)
			if _, err := c.Grant(ctx, org, []string{g}, false); err == nil {
				a.mu.Lock()
				a.grants[org+" "+g] = true
				a.mu.Unlock()
			}
		case 3:
			a.mu.Lock()
			var victim string
			for id := range a.issued {
				if !a.revoked[id] {
					victim = id
					break
				}
			}
			a.mu.Unlock()
			if victim == "" {
				continue
			}
			o, n, _ := strings.Cut(victim, "/")
			if _, err := c.PeerAction(ctx, o, n, "revoke"); err == nil {
				a.mu.Lock()
				a.revoked[victim] = true
				a.mu.Unlock()
			}
		}
	}
}

// checkFile runs bbolt's consistency check on the state file of a killed daemon.
func checkFile(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		return first
	})
	if err != nil {
		t.Fatalf("bbolt check after kill -9: %v", err)
	}
}

func checkAcked(t *testing.T, c *client.Client, a *acked) {
	t.Helper()
	ctx := context.Background()
	peers, err := c.ListPeers(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]api.Peer{}
	addrs := map[string]string{}
	keys := map[string]string{}
	for _, p := range peers {
		byID[p.ID()] = p
		if prev, dup := keys[p.PublicKey]; dup {
			t.Errorf("peers %s and %s share a key", prev, p.ID())
		}
		keys[p.PublicKey] = p.ID()
		if p.State == api.StateRevoked {
			continue
		}
		if prev, dup := addrs[p.Address]; dup {
			t.Errorf("peers %s and %s share address %s", prev, p.ID(), p.Address)
		}
		addrs[p.Address] = p.ID()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, want := range a.issued {
		got, ok := byID[id]
		switch {
		case !ok:
			t.Errorf("acknowledged peer %s is gone", id)
		case got.PublicKey != want.PublicKey || got.Address != want.Address:
			t.Errorf("peer %s changed: %+v, acknowledged %+v", id, got, want)
		case a.revoked[id] && got.State != api.StateRevoked:
			t.Errorf("acknowledged revoke of %s lost: %s", id, got.State)
		}
	}
	orgs := map[string]api.Org{}
	for _, name := range []string{"acme", "globex"} {
		o, err := c.GetOrg(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		orgs[name] = o
	}
	for g := range a.grants {
		org, res, _ := strings.Cut(g, " ")
		if !strings.Contains(" "+strings.Join(orgs[org].Grants, " ")+" ", " "+res+" ") {
			t.Errorf("acknowledged grant %s to %s is gone", res, org)
		}
	}
}
