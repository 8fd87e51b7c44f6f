package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/extranetgw/extranet/pkg/api"
)

// Exactly one gateway of a cluster answers partners: the one that holds the
// active key, PREFIX-without-slash + ".active", under a lease of its own.
// The key's create revision is the promotion's epoch: every promotion has a
// larger one, and a write guarded by an epoch (Guard) commits only while
// that promotion stands.
//
// The active gives the role up before etcd can give it to another. etcd
// ends a lease no sooner than its TTL after the last renewal it received,
// which is after the renewal was sent; so the active counts the TTL from
// when it sent its last renewal that etcd answered, and stops answering
// partners (Demote) a margin before that. A gateway cut off from etcd
// stops in time, whoever else etcd then promotes.

// Role is this gateway's part in answering partners.
type Role struct {
	Active bool
	// Epoch is the promotion this gateway holds the role under; 0 when
	// it does not.
	Epoch int64
	// Holder is the gateway that holds the role as far as this one saw,
	// "" when none does.
	Holder string
}

// Candidate runs one gateway's candidacy for the active role.
type Candidate struct {
	Etcd *Etcd
	Name string
	// TTL is the lease's; etcd gives at least its own minimum (about 1.5
	// of its election timeouts). The role moves within about TTL of an
	// active that died.
	TTL time.Duration
	// Promote is told when this gateway holds the role, under epoch. It
	// must return at once; the data plane opens when it is ready.
	Promote func(epoch int64)
	// Demote must take this gateway off the partners' path (link down,
	// address released) before it returns: it is called before etcd can
	// promote another.
	Demote func(reason string)
	// Serving, when set, says why this gateway cannot answer partners
	// now, or nil when it can: its data plane opened since Promote, and
	// still holds the address on a link that is up. One that cannot,
	// OpenWithin (default 10 s) after its promotion or at any time after,
	// hands the role on: it must not keep a healthy standby waiting.
	Serving    func() error
	OpenWithin time.Duration
	// Eligible, when set, is asked before each campaign; an error keeps
	// this gateway from campaigning, and is logged.
	Eligible func(ctx context.Context) error
	// Failsafe, when set, keeps the active answering partners while etcd
	// is gone for every gateway (failsafe.go).
	Failsafe *Failsafe
	Log      *slog.Logger

	mu       sync.Mutex
	role     Role
	holdOff  time.Time
	promoted int
	// lastHolder is the last gateway seen holding the role.
	lastHolder string
	// others are the other gateways as etcd last listed them, for the
	// failsafe. etcdSince is since when this gateway reaches etcd without
	// a break it noticed (zero: it does not now), and longestTTL the
	// longest lease it heard of.
	others     []api.ClusterGateway
	etcdSince  time.Time
	longestTTL time.Duration
}

// activeKey holds the active gateway's name, under its lease.
func (e *Etcd) activeKey() string { return strings.TrimSuffix(e.Prefix, "/") + ".active" }

// switchoverKey asks the active of an epoch to hand the role over.
func (e *Etcd) switchoverKey() string { return strings.TrimSuffix(e.Prefix, "/") + ".switchover" }

// failoversPrefix keeps the last promotions, by epoch.
func (e *Etcd) failoversPrefix() string { return strings.TrimSuffix(e.Prefix, "/") + ".failovers/" }

// keptFailovers is how many promotions the record keeps.
const keptFailovers = 10

// Role is where this gateway stands now.
func (c *Candidate) Role() Role {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.role
}

// Promotions counts the times this gateway took the role.
func (c *Candidate) Promotions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.promoted
}

func (c *Candidate) setRole(r Role) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.Active && !c.role.Active {
		c.promoted++
	}
	c.role = r
}

// Run campaigns for the role until ctx ends, and gives it up then.
func (c *Candidate) Run(ctx context.Context) {
	wait := retryMin
	for ctx.Err() == nil {
		err := c.round(ctx)
		if err == nil {
			wait = retryMin
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if c.Log != nil {
			c.Log.Warn("campaign for the active role", "err", err, "retry_in", wait)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// round waits until the role is free, campaigns once, and holds the role
// if it won, until it is lost.
func (c *Candidate) round(ctx context.Context) error {
	if err := c.waitFree(ctx); err != nil {
		return err
	}
	if c.Eligible != nil {
		if err := c.Eligible(ctx); err != nil {
			return fmt.Errorf("not eligible for the active role: %w", err)
		}
	}
	if c.Failsafe != nil {
		if err := c.mayCampaign(ctx); err != nil {
			return fmt.Errorf("not campaigning: %w", err)
		}
	}
	ttl := max(int64(c.TTL.Round(time.Second)/time.Second), 1)
	sent := time.Now()
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	lease, err := c.Etcd.Client.Grant(gctx, ttl)
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	key := c.Etcd.activeKey()
	resp, err := c.Etcd.Client.Txn(gctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, c.Name, clientv3.WithLease(lease.ID))).
		Commit()
	if err != nil || !resp.Succeeded {
		c.revoke(lease.ID)
		if err != nil {
			return fmt.Errorf("take the role: %w", err)
		}
		return nil // another was quicker
	}
	epoch := resp.Header.Revision
	c.mu.Lock()
	c.longestTTL = max(c.longestTTL, time.Duration(lease.TTL)*time.Second)
	c.mu.Unlock()
	l := held{id: lease.ID, ttl: time.Duration(lease.TTL) * time.Second, expires: sent.Add(time.Duration(lease.TTL) * time.Second)}
	if time.Until(l.expires) <= l.margin() {
		// Won, but so slowly that the lease may end before the data
		// plane could open: let it go.
		c.revoke(lease.ID)
		return errors.New("etcd granted the role too slowly to hold it")
	}
	return c.hold(ctx, l, epoch)
}

// held is the lease the active holds the role under.
type held struct {
	id  clientv3.LeaseID
	ttl time.Duration
	// expires is when etcd may end the lease at the soonest, as far as
	// this gateway knows: the TTL from when it sent the last renewal
	// etcd answered.
	expires time.Time
}

// margin is how long before expires the active steps down: the time the
// demotion has to take the gateway off the path.
func (l held) margin() time.Duration { return l.ttl / 4 }

// every is how often the active renews: two renewals may fail before the
// margin.
func (l held) every() time.Duration { return l.ttl / 5 }

// waitFree returns once no gateway holds the role and this one may take it.
func (c *Candidate) waitFree(ctx context.Context) error {
	key := c.Etcd.activeKey()
	for {
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := c.Etcd.Client.Get(clientv3.WithRequireLeader(gctx), key)
		cancel()
		c.reached(err == nil)
		if err != nil {
			c.setRole(Role{})
			return fmt.Errorf("read who is active: %w", err)
		}
		if len(resp.Kvs) == 0 {
			c.setRole(Role{})
			c.mu.Lock()
			wait := time.Until(c.holdOff)
			since := c.etcdSince
			c.mu.Unlock()
			if c.Failsafe != nil {
				if since.IsZero() {
					// A question's look at etcd failed since the Get
					// above: not reached, whatever the Get said.
					wait = max(wait, c.holdBack())
				} else {
					wait = max(wait, time.Until(since.Add(c.holdBack())))
				}
			}
			if wait <= 0 {
				return nil
			}
			// Just handed over, or etcd only just answers: the others,
			// or an active in failsafe, go first.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		c.setRole(Role{Holder: string(resp.Kvs[0].Value)})
		c.mu.Lock()
		c.lastHolder = string(resp.Kvs[0].Value)
		c.mu.Unlock()
		// Until the key goes. A watch that ends without word (etcd gone)
		// is checked again on the next round.
		wctx, wcancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 5*time.Second)
		for w := range c.Etcd.Client.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1)) {
			if deleted(w.Events) {
				wcancel()
			}
		}
		if wctx.Err() == nil {
			// Ended by etcd, not by the timeout: it may be gone.
			c.reached(false)
		}
		wcancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func deleted(evs []*clientv3.Event) bool {
	for _, ev := range evs {
		if ev.Type == clientv3.EventTypeDelete {
			return true
		}
	}
	return false
}

// hold keeps the role under lease l until it is lost, handed over, or ctx
// ends, and demotes this gateway before it returns.
func (c *Candidate) hold(ctx context.Context, l held, epoch int64) error {
	c.mu.Lock()
	previous := c.lastHolder
	c.lastHolder = c.Name
	c.mu.Unlock()
	c.setRole(Role{Active: true, Epoch: epoch, Holder: c.Name})
	if c.Log != nil {
		c.Log.Info("this gateway is active", "epoch", epoch, "previous", previous)
	}
	c.Promote(epoch)
	go c.record(epoch, previous)

	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	// From the promotion's own revision on: a request made between it
	// and the watch's start is not missed.
	events := c.Etcd.Client.Watch(wctx, c.Etcd.activeKey(), clientv3.WithRev(epoch+1))
	handover := c.Etcd.Client.Watch(wctx, c.Etcd.switchoverKey(), clientv3.WithRev(epoch+1))
	if c.Failsafe != nil {
		go c.listOthers(wctx)
	}
	renew := time.NewTicker(l.every())
	defer renew.Stop()
	// With a failsafe the others are asked early enough that their
	// answers are in before the margin.
	early := l.margin()
	if c.Failsafe != nil {
		early += askTimeout(l.ttl)
	}
	since := time.Now()
	openWithin := c.OpenWithin
	if openWithin <= 0 {
		openWithin = 10 * time.Second
	}
	// failsafe: etcd answers no gateway, and this one keeps answering
	// partners, until graceEnd at the latest: the first of the others
	// that said so may campaign once etcd answers it, less the margin,
	// a renewal that may be under way and a question. Every question
	// they all answer so moves it on.
	failsafe, graceEnd := false, time.Time{}
	demote := func(reason string) {
		c.Demote(reason)
		c.setRole(Role{})
		if c.Log != nil {
			c.Log.Warn("this gateway is no longer active", "epoch", epoch, "reason", reason)
		}
	}
	lost := func(reason string) error {
		demote(reason)
		c.revoke(l.id)
		return errors.New("lost the lease")
	}
	// decide is the step down's decision, once the lease is about to end
	// as far as this gateway knows: down, or, with the failsafe, on in
	// failsafe for now. It returns an error when this gateway stepped
	// down.
	decide := func() error {
		if c.Failsafe == nil {
			return lost("etcd did not renew the lease in time")
		}
		asked := time.Now()
		holdsBack, err := c.Failsafe.othersLostEtcd(ctx, c.othersToAsk(), l.ttl)
		switch {
		case err == nil:
			if !failsafe && c.Log != nil {
				c.Log.Warn("etcd answers neither this gateway nor any other: still answering partners (failsafe) until one reaches it", "epoch", epoch)
			}
			failsafe, graceEnd = true, asked.Add(holdsBack-l.margin()-l.every()-askTimeout(l.ttl))
			return nil
		case failsafe && errors.Is(err, errReached) && time.Now().Before(graceEnd):
			// etcd is back for another gateway, which holds back:
			// this one has until graceEnd to renew its lease, if
			// etcd kept it.
			return nil
		}
		return lost("etcd did not renew the lease in time, and the failsafe does not hold: " + err.Error())
	}
	// next is when decide must run next; a renewal that etcd answers
	// moves it.
	next := l.expires.Add(-early)
	stepDown := time.NewTimer(time.Until(next))
	defer stepDown.Stop()
	for {
		// A renewal blocks the loop for up to a period: whatever is due
		// is decided first, not left to the select's draw.
		if now := time.Now(); failsafe && !now.Before(graceEnd) {
			return lost("etcd did not answer again in time, and the failsafe's grace is over")
		} else if !now.Before(next) {
			if err := decide(); err != nil {
				return err
			}
			next = time.Now().Add(l.every())
			stepDown.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			demote("extranetd is stopping")
			c.revoke(l.id)
			return nil
		case w, ok := <-events:
			// The key is this promotion's until it is deleted or made
			// anew; nobody but its holder changes it otherwise. A watch
			// that ends leaves the lease to decide.
			if !ok {
				events = nil
			} else if len(w.Events) > 0 {
				return lost("the active key was removed from etcd")
			}
		case w, ok := <-handover:
			if !ok {
				handover = nil
			}
			for _, ev := range w.Events {
				if ev.Type == clientv3.EventTypePut && string(ev.Kv.Value) == strconv.FormatInt(epoch, 10) {
					demote("switchover asked for")
					c.mu.Lock()
					c.holdOff = time.Now().Add(switchoverHoldOff)
					c.mu.Unlock()
					c.revoke(l.id)
					return nil
				}
			}
		case <-stepDown.C:
			// Decided at the top of the loop.
		case <-renew.C:
			if c.Serving != nil && time.Since(since) > openWithin {
				if err := c.Serving(); err != nil {
					demote("cannot answer partners: " + err.Error())
					c.mu.Lock()
					c.holdOff = time.Now().Add(failedHoldOff)
					c.mu.Unlock()
					c.revoke(l.id)
					return fmt.Errorf("could not answer partners as the active (%w); handed the role on", err)
				}
			}
			sent := time.Now()
			// Never past the next decision, nor the grace.
			deadline := earliest(next, sent.Add(l.every()))
			if failsafe {
				deadline = earliest(deadline, graceEnd)
			}
			kctx, kcancel := context.WithDeadline(ctx, deadline)
			resp, err := c.Etcd.Client.KeepAliveOnce(kctx, l.id)
			kcancel()
			switch {
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				// It ended: etcd had a quorum, so another may be active.
				demote("etcd ended the lease")
				return errors.New("lost the lease")
			case err == nil:
				l.expires = sent.Add(time.Duration(resp.TTL) * time.Second)
				next = l.expires.Add(-early)
				stepDown.Reset(time.Until(next))
				if failsafe && c.Log != nil {
					c.Log.Info("etcd answers again: the failsafe is over", "epoch", epoch)
				}
				failsafe = false
			}
		}
	}
}

// holdBack is how long a gateway must have reached etcd without a break it
// noticed before it campaigns: an active in failsafe (one this gateway told
// it cannot reach etcd, or one that could not ask it) keeps answering
// partners, and must learn that etcd answers again, and step down if its
// lease is gone, before anyone is promoted. Twice the longest lease etcd
// granted in this cluster, as far as this gateway heard.
func (c *Candidate) holdBack() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return 2 * max(c.TTL, c.longestTTL, time.Second)
}

// ReadyAfter is how long a gateway waits after it reached etcd before it
// would take the role.
func (c *Candidate) ReadyAfter() time.Duration { return c.holdBack() }

// reached records whether this gateway just reached etcd: a break restarts
// the time it must have reached it for before it campaigns.
func (c *Candidate) reached(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !ok:
		c.etcdSince = time.Time{}
	case c.etcdSince.IsZero():
		c.etcdSince = time.Now()
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// listOthers keeps the list of the other gateways fresh while etcd
// answers, for the failsafe, until ctx ends.
func (c *Candidate) listOthers(ctx context.Context) {
	for {
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		gws, err := c.Etcd.Gateways(gctx)
		cancel()
		if err == nil {
			c.mu.Lock()
			c.others = c.others[:0]
			for _, g := range gws {
				if g.Name != c.Name {
					c.others = append(c.others, g)
				}
			}
			c.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// othersToAsk are the other gateways that may campaign: those listed with
// a failsafe address (mayCampaign).
func (c *Candidate) othersToAsk() []api.ClusterGateway {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []api.ClusterGateway
	for _, g := range c.others {
		if g.Failsafe != "" {
			out = append(out, g)
		}
	}
	return out
}

// switchoverHoldOff is how long a gateway that handed the role over lets
// the others take it first; failedHoldOff the same after it could not
// open its data plane.
const (
	switchoverHoldOff = 3 * time.Second
	failedHoldOff     = 30 * time.Second
)

// revoke ends a lease at once, if etcd answers within a second.
func (c *Candidate) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Etcd.Client.Revoke(ctx, id)
}

// record keeps the promotion in the cluster's short history of them.
func (c *Candidate) record(epoch int64, previous string) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	v, _ := json.Marshal(api.ClusterFailover{Epoch: epoch, To: c.Name, From: previous, At: time.Now().UTC()})
	key := fmt.Sprintf("%s%020d", c.Etcd.failoversPrefix(), epoch)
	if _, err := c.Etcd.Client.Put(ctx, key, string(v)); err != nil {
		return
	}
	// The oldest beyond the kept ones go.
	resp, err := c.Etcd.Client.Get(ctx, c.Etcd.failoversPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		return
	}
	for i, kv := range resp.Kvs {
		if i >= keptFailovers {
			c.Etcd.Client.Delete(ctx, string(kv.Key))
		}
	}
}

// Failovers are the last promotions, newest first.
func (e *Etcd) Failovers(ctx context.Context) ([]api.ClusterFailover, error) {
	resp, err := e.Client.Get(ctx, e.failoversPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var out []api.ClusterFailover
	for _, kv := range resp.Kvs {
		var f api.ClusterFailover
		if json.Unmarshal(kv.Value, &f) == nil {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Epoch > out[j].Epoch })
	return out, nil
}

// Active is the gateway that holds the role now and its epoch; "" when none.
func (e *Etcd) Active(ctx context.Context) (string, int64, error) {
	resp, err := e.Client.Get(ctx, e.activeKey())
	if err != nil {
		return "", 0, err
	}
	if len(resp.Kvs) == 0 {
		return "", 0, nil
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision, nil
}

// ErrNoSwitchover means no other gateway took the role when asked.
var ErrNoSwitchover = errors.New("no other gateway took the active role")

// Switchover asks the active gateway to hand the role over, and waits
// until another holds it. The active takes itself off the partners' path
// first, then lets the role go, so that the two never answer at once.
func (e *Etcd) Switchover(ctx context.Context, wait time.Duration) (from, to string, epoch int64, err error) {
	from, old, err := e.Active(ctx)
	if err != nil {
		return "", "", 0, fmt.Errorf("read who is active: %w", err)
	}
	if from == "" {
		return "", "", 0, errors.New("no gateway is active now; the role moves by itself once one can take it")
	}
	if _, err := e.Client.Put(ctx, e.switchoverKey(), strconv.FormatInt(old, 10)); err != nil {
		return "", "", 0, fmt.Errorf("ask %s to hand over: %w", from, err)
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		to, epoch, err = e.Active(ctx)
		if err == nil && epoch > old && to != "" {
			if to == from {
				return from, to, epoch, fmt.Errorf("%w: %s is active again (are the others running with --vip?)", ErrNoSwitchover, from)
			}
			return from, to, epoch, nil
		}
		select {
		case <-ctx.Done():
			return from, "", 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return from, "", 0, fmt.Errorf("%w within %s", ErrNoSwitchover, wait)
}

// Resign ends name's hold on the active role, if it holds it, without
// waiting for its lease: for a gateway whose daemon died and whose link and
// address are down already (the stop hook), so that another takes over at
// once rather than when the lease runs out. It reports whether name held it.
func (e *Etcd) Resign(ctx context.Context, name string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := e.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(e.activeKey()), "=", name)).
		Then(clientv3.OpDelete(e.activeKey())).
		Commit()
	if err != nil {
		return false, fmt.Errorf("give up the active role: %w", err)
	}
	return resp.Succeeded, nil
}
