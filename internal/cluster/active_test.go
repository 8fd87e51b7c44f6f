package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

// roles records every gateway's promotions and demotions in one order, to
// check that two never answer partners at once.
type roles struct {
	mu     sync.Mutex
	events []roleEvent
}

type roleEvent struct {
	name   string
	active bool
	epoch  int64
	at     time.Time
}

func (r *roles) add(name string, active bool, epoch int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, roleEvent{name, active, epoch, time.Now()})
}

// check fails unless the role passed from one gateway to the next with
// the one before demoted first, under growing epochs.
func (r *roles) check(t *testing.T) []roleEvent {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	holder, last := "", int64(0)
	var promotions []roleEvent
	for _, ev := range r.events {
		switch {
		case ev.active && holder != "":
			t.Errorf("%s promoted at %s while %s was active", ev.name, ev.at.Format(time.StampMicro), holder)
		case ev.active && ev.epoch <= last:
			t.Errorf("%s promoted under epoch %d after epoch %d", ev.name, ev.epoch, last)
		case ev.active:
			holder, last = ev.name, ev.epoch
			promotions = append(promotions, ev)
		case ev.name == holder:
			holder = ""
		}
	}
	return promotions
}

func (r *roles) active() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	holder := ""
	for _, ev := range r.events {
		switch {
		case ev.active:
			holder = ev.name
		case ev.name == holder:
			holder = ""
		}
	}
	return holder
}

// candidate runs a gateway's candidacy on a client of its own, until the
// test ends or the returned stop is called.
func candidate(t *testing.T, url, name string, r *roles, opts ...func(*Candidate)) (*Candidate, *clientv3.Client, func()) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(url, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	c := &Candidate{
		Etcd: &Etcd{Client: cli, Prefix: "/extranet/"}, Name: name, TTL: 2 * time.Second,
		Promote: func(epoch int64) { r.add(name, true, epoch) },
		Demote:  func(string) { r.add(name, false, 0) },
	}
	for _, o := range opts {
		o(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
			cli.Close()
		})
	}
	t.Cleanup(stop)
	return c, cli, stop
}

func waitActive(t *testing.T, r *roles, not string, within time.Duration) (string, time.Duration) {
	t.Helper()
	began := time.Now()
	for time.Since(began) < within {
		if a := r.active(); a != "" && a != not {
			return a, time.Since(began)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no gateway but %q became active within %s", not, within)
	return "", 0
}

// TestOneActiveAtATime: of three gateways exactly one is active; when it
// stops cleanly, when it is cut off from etcd, and when the role is handed
// over on purpose, another takes it only after the one before stopped
// answering, under a larger epoch.
func TestOneActiveAtATime(t *testing.T) {
	e, srv := startEtcd(t)
	r := &roles{}
	cands := map[string]*Candidate{}
	clients := map[string]*clientv3.Client{}
	stops := map[string]func(){}
	for _, n := range []string{"gw-a", "gw-b", "gw-c"} {
		cands[n], clients[n], stops[n] = candidate(t, srv.URL, n, r)
	}
	first, _ := waitActive(t, r, "", 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	for n, c := range cands {
		if got := c.Role(); got.Active != (n == first) || got.Holder != first {
			t.Errorf("%s says its role is %+v; %s is active", n, got, first)
		}
	}

	// A clean stop hands the role on at once.
	stops[first]()
	second, took := waitActive(t, r, first, 5*time.Second)
	t.Logf("after a clean stop %s took over in %v", second, took.Round(time.Millisecond))

	// Cut off from etcd: it stops answering by itself before the lease
	// can end, and another takes over once it has.
	began := time.Now()
	clients[second].Close()
	third, took := waitActive(t, r, second, 5*time.Second)
	if took < time.Second {
		t.Errorf("%s took over %v after %s was cut off: before its lease could end", third, took, second)
	}
	t.Logf("after %s was cut off %s took over in %v", second, third, time.Since(began).Round(time.Millisecond))

	// A switchover asked through any gateway: none is left to take it,
	// so the active takes it back and says so.
	if _, _, _, err := e.Switchover(context.Background(), 6*time.Second); err == nil {
		t.Errorf("a switchover with no other gateway running succeeded")
	}
	cands["gw-x"], clients["gw-x"], stops["gw-x"] = candidate(t, srv.URL, "gw-x", r)
	from, to, epoch, err := e.Switchover(context.Background(), 10*time.Second)
	if err != nil || from == to || to != "gw-x" {
		t.Fatalf("switchover: %s → %s (epoch %d), %v; want the role to move to gw-x", from, to, epoch, err)
	}
	promotions := r.check(t)
	fs, err := e.Failovers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) == 0 || fs[0].To != "gw-x" || fs[0].Epoch != epoch {
		t.Errorf("failovers %+v; want the newest to gw-x under epoch %d", fs, epoch)
	}
	if len(promotions) < 4 {
		t.Errorf("promotions %+v; want at least 4", promotions)
	}
}

// TestOldActiveCannotWrite: what only the active records (where partners
// are) commits under its epoch while the role stands, and is refused once
// another gateway was promoted, though the state did not move meanwhile.
func TestOldActiveCannotWrite(t *testing.T) {
	e, srv := startEtcd(t)
	a, _ := initCluster(t, e)
	r := &roles{}
	_, _, stop := candidate(t, srv.URL, "gw-a", r)
	waitActive(t, r, "", 10*time.Second)
	_, epoch, err := e.Active(context.Background())
	if err != nil || epoch == 0 {
		t.Fatalf("active epoch %d, %v", epoch, err)
	}
	write := func(id uint32) error {
		return a.db.UpdateUnder(epoch, func(tx *store.Tx) error { return tx.PutOrg(org("acme", id)) })
	}
	if err := write(2); err != nil {
		t.Fatalf("a write under the standing epoch: %v", err)
	}
	stop()
	candidate(t, srv.URL, "gw-b", r)
	waitActive(t, r, "gw-a", 10*time.Second)
	if err := write(3); !errors.Is(err, store.ErrNotActive) {
		t.Errorf("a write under the old epoch: %v; want ErrNotActive", err)
	}
	if err := a.db.Update(func(tx *store.Tx) error { return tx.PutOrg(org("acme", 4)) }); err != nil {
		t.Errorf("an admin's change on the old active: %v", err)
	}
}

// TestActiveThatCannotServeHandsOn: a gateway promoted whose data plane
// does not open (its interface gone, say) lets a healthy one take over.
func TestActiveThatCannotServeHandsOn(t *testing.T) {
	_, srv := startEtcd(t)
	r := &roles{}
	broken := func(c *Candidate) {
		c.Serving = func() error { return errors.New("no interface") }
		c.OpenWithin = time.Second
	}
	candidate(t, srv.URL, "gw-broken", r, broken)
	waitActive(t, r, "", 10*time.Second)
	candidate(t, srv.URL, "gw-ok", r, func(c *Candidate) { c.Serving = func() error { return nil } })
	if got, took := waitActive(t, r, "gw-broken", 10*time.Second); got != "gw-ok" {
		t.Errorf("%s took over after %v; want gw-ok", got, took)
	}
	time.Sleep(2 * time.Second)
	if got := r.active(); got != "gw-ok" {
		t.Errorf("%s is active; want gw-ok to keep the role", got)
	}
	r.check(t)
}

// TestOneGatewayKey: the first key a cluster hears of is its key; another
// is refused, and the same again is accepted.
func TestOneGatewayKey(t *testing.T) {
	e, _ := startEtcd(t)
	ctx := context.Background()
	if err := e.CheckGatewayKey(ctx, "key-a"); err != nil {
		t.Fatal(err)
	}
	if err := e.CheckGatewayKey(ctx, "key-a"); err != nil {
		t.Errorf("the cluster's own key: %v", err)
	}
	if err := e.CheckGatewayKey(ctx, "key-b"); !errors.Is(err, ErrOtherKey) || !strings.Contains(err.Error(), "key-a") {
		t.Errorf("another key: %v; want ErrOtherKey naming the cluster's", err)
	}
}

// TestResignHandsOverAtOnce: the stop hook of a gateway whose daemon died
// gives the role up, and the other takes it at once instead of when the
// dead one's lease runs out; another gateway's name resigns nothing.
func TestResignHandsOverAtOnce(t *testing.T) {
	e, srv := startEtcd(t)
	r := &roles{}
	_, cli, _ := candidate(t, srv.URL, "gw-a", r)
	waitActive(t, r, "", 10*time.Second)
	candidate(t, srv.URL, "gw-b", r)
	// Dead: its connection to etcd is gone and its lease still holds.
	cli.Close()
	if held, err := e.Resign(context.Background(), "gw-b"); held || err != nil {
		t.Errorf("Resign of a gateway that does not hold the role: %v, %v", held, err)
	}
	if held, err := e.Resign(context.Background(), "gw-a"); !held || err != nil {
		t.Fatalf("Resign of the active: %v, %v", held, err)
	}
	if _, took := waitActive(t, r, "gw-a", 5*time.Second); took > time.Second {
		t.Errorf("gw-b took over %v after the resignation; want at once", took)
	}
}

// failsafeCandidate is candidate with a failsafe, its question answered by
// a server of its own, and listed in etcd with that address.
func failsafeCandidate(t *testing.T, url, name string, r *roles, secret []byte) (*Candidate, *clientv3.Client) {
	t.Helper()
	var c *Candidate
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { c.FailsafeHandler().ServeHTTP(w, req) }))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	c, cli, _ := candidate(t, url, name, r, func(cc *Candidate) {
		cc.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("gateway", name)
		cc.Failsafe = &Failsafe{Secret: secret, Addr: addr}
		c = cc
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Etcd.Register(ctx, api.ClusterGateway{Name: name, Failsafe: addr}, name)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c, cli
}

// TestFailsafeWhileEtcdIsGone, against an etcd of three members: with a
// majority of them stopped (its quorum lost) the active keeps answering
// partners, since the others say they cannot reach etcd either and nobody
// can be promoted; when the quorum is back it still is, and no other was
// promoted meanwhile. Cut off alone, it steps down, since another reaches
// etcd.
func TestFailsafeWhileEtcdIsGone(t *testing.T) {
	members, err := etcdtest.StartCluster(t.TempDir(), "127.0.0.1", 3)
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, m := range members {
		t.Cleanup(m.Stop)
		urls = append(urls, m.URL)
	}
	url := strings.Join(urls, ",")
	r := &roles{}
	secret := FailsafeSecret([]byte("the gateway key"))
	a, cliA := failsafeCandidate(t, url, "gw-a", r, secret)
	waitActive(t, r, "", 10*time.Second)
	failsafeCandidate(t, url, "gw-b", r, secret)
	eventually(t, "gw-a knows gw-b", func() error {
		if len(a.othersToAsk()) != 1 {
			return fmt.Errorf("others %v", a.othersToAsk())
		}
		return nil
	})

	var stopped sync.WaitGroup
	for _, m := range members[1:] {
		stopped.Add(1)
		go func() {
			defer stopped.Done()
			m.Stop()
		}()
	}
	stopped.Wait()
	// Past the lease: the failsafe holds. (Which gateway it is may have
	// changed while the members stopped, one after the other.)
	time.Sleep(3 * time.Second)
	during := r.active()
	if during == "" {
		t.Fatal("with etcd's quorum lost, no gateway is active; want the active to keep answering")
	}
	time.Sleep(2 * time.Second)
	if got := r.active(); got != during {
		t.Fatalf("with etcd's quorum lost, %q is active after %s; want %s to keep answering", got, during, during)
	}
	// Together: a member alone waits for a quorum to be ready.
	restarted := make(chan error, 2)
	for _, m := range members[1:] {
		go func() { restarted <- m.Restart() }()
	}
	for range members[1:] {
		if err := <-restarted; err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "a gateway active with etcd's quorum back", func() error {
		if r.active() == "" {
			return errors.New("none is")
		}
		return nil
	})

	// gw-a alone cut off: gw-b reaches etcd, so gw-a steps down, if it
	// was the active.
	if r.active() == "gw-a" {
		cliA.Close()
		if got, _ := waitActive(t, r, "gw-a", 15*time.Second); got != "gw-b" {
			t.Errorf("%s took over from gw-a; want gw-b", got)
		}
	}
	r.check(t)
}

// TestFailsafeAnswersOnlyItsCluster: a question without the cluster's key is
// refused, and an answer is good only for the question it answers.
func TestFailsafeAnswersOnlyItsCluster(t *testing.T) {
	_, srv := startEtcd(t)
	r := &roles{}
	c, _ := failsafeCandidate(t, srv.URL, "gw-a", r, FailsafeSecret([]byte("ours")))
	waitActive(t, r, "", 10*time.Second)
	ours := &Failsafe{Secret: FailsafeSecret([]byte("ours"))}
	gw := api.ClusterGateway{Name: "gw-a", Failsafe: c.Failsafe.Addr}
	if a, err := ours.ask(context.Background(), gw, 2*time.Second); err != nil || !a.Active || !a.Etcd || a.Name != "gw-a" {
		t.Errorf("the cluster's question: %+v, %v", a, err)
	}
	theirs := &Failsafe{Secret: FailsafeSecret([]byte("theirs"))}
	if _, err := theirs.ask(context.Background(), gw, 2*time.Second); err == nil {
		t.Error("a question without the cluster's key was answered")
	}
	if _, err := ours.ask(context.Background(), api.ClusterGateway{Name: "gw-z", Failsafe: c.Failsafe.Addr}, 2*time.Second); err == nil {
		t.Error("an answer from another gateway than the one asked was taken")
	}
	if _, err := ours.othersLostEtcd(context.Background(), []api.ClusterGateway{gw}, 2*time.Second); err == nil || !strings.Contains(err.Error(), "is active") || errors.Is(err, errReached) {
		t.Errorf("othersLostEtcd with a gateway that is active: %v", err)
	}
	if _, err := ours.othersLostEtcd(context.Background(), nil, 2*time.Second); !errors.Is(err, errNoOthers) {
		t.Errorf("othersLostEtcd with nobody to ask: %v", err)
	}
	// A question recorded a minute ago, MAC and all, is not answered.
	old, _ := json.Marshal(failsafeQuestion{Nonce: "00", At: time.Now().Add(-time.Minute).UnixMilli()})
	req, _ := http.NewRequest(http.MethodPost, "http://"+c.Failsafe.Addr+"/failsafe", bytes.NewReader(old))
	req.Header.Set(macHeader, ours.mac([]byte("question"), old))
	if resp, err := noProxy.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a replayed question: %v %v; want 400", resp, err)
	} else {
		resp.Body.Close()
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
