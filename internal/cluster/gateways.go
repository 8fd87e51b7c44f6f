package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/extranetgw/extranet/pkg/api"
)

// registerTTL is how long a gateway stays listed after it stops renewing:
// a gateway that died drops out of `cluster status` within it.
const registerTTL = 10 // seconds

// gatewaysPrefix is where gateways list themselves: beside the state's
// prefix, not under it, so that the watch of the state never sees it.
func (e *Etcd) gatewaysPrefix() string {
	return strings.TrimSuffix(e.Prefix, "/") + ".gateways/"
}

// Register lists this gateway as name until ctx ends, under a lease that
// ends with it, and lists it again whenever etcd lost it (an outage that
// outlasted the lease). A name another gateway holds is not taken: this
// gateway stays unlisted, and says so. instance tells this gateway from
// another of the same name: a listing of its own instance, left by a run
// that was killed before its lease ran out, is replaced at once.
func (e *Etcd) Register(ctx context.Context, gw api.ClusterGateway, instance string) {
	name := gw.Name
	value, _ := json.Marshal(listing{ClusterGateway: gw, Instance: instance})
	wait, said := retryMin, ""
	for ctx.Err() == nil {
		err := e.registerOnce(ctx, name, string(value))
		if err == nil {
			wait = retryMin
		} else if ctx.Err() == nil && e.Log != nil && err.Error() != said {
			e.Log.Warn("list this gateway in the cluster", "err", err, "retry_in", wait)
		}
		if err != nil {
			said = err.Error()
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// listing is what a gateway lists of itself.
type listing struct {
	api.ClusterGateway
	Instance string `json:"instance,omitempty"`
}

// errNameTaken means another gateway is listed under this one's name.
var errNameTaken = errors.New("another gateway is listed under this name: give each gateway its own --cluster-name")

func (e *Etcd) registerOnce(ctx context.Context, name, value string) error {
	key := e.gatewaysPrefix() + name
	var mine listing
	json.Unmarshal([]byte(value), &mine)
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	lease, err := e.Client.Grant(gctx, registerTTL)
	if err != nil {
		cancel()
		return err
	}
	revoke := func() {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		defer rcancel()
		e.Client.Revoke(rctx, lease.ID)
	}
	put := func() (*clientv3.TxnResponse, error) {
		return e.Client.Txn(gctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, value, clientv3.WithLease(lease.ID))).
			Else(clientv3.OpGet(key)).
			Commit()
	}
	resp, err := put()
	if err == nil && !resp.Succeeded {
		// This gateway's own listing, from a run killed before its lease
		// ended: the listing goes, unless it changed meanwhile.
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			var held listing
			if json.Unmarshal(kvs[0].Value, &held) == nil && mine.Instance != "" && held.Instance == mine.Instance {
				_, err = e.Client.Txn(gctx).
					If(clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)).
					Then(clientv3.OpDelete(key)).
					Commit()
				if err == nil {
					resp, err = put()
				}
			}
		}
	}
	cancel()
	switch {
	case err != nil:
		revoke()
		return err
	case !resp.Succeeded:
		revoke()
		return fmt.Errorf("%s: %w", name, errNameTaken)
	}
	alive, err := e.Client.KeepAlive(ctx, lease.ID)
	if err != nil {
		revoke()
		return err
	}
	for range alive {
	}
	// Gone at once, rather than when the lease runs out.
	revoke()
	if ctx.Err() == nil {
		return fmt.Errorf("the lease of %s ended", name)
	}
	return nil
}

// Gateways lists the gateways that follow the state now, by name.
func (e *Etcd) Gateways(ctx context.Context) ([]api.ClusterGateway, error) {
	resp, err := e.Client.Get(ctx, e.gatewaysPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]api.ClusterGateway, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var g api.ClusterGateway
		if json.Unmarshal(kv.Value, &g) == nil {
			// The key is the name a gateway holds; the value only says.
			g.Name = strings.TrimPrefix(string(kv.Key), e.gatewaysPrefix())
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Latest is the version of the cluster's state in etcd now.
func (e *Etcd) Latest(ctx context.Context) (int64, error) {
	resp, err := e.Client.Get(ctx, e.fenceKey())
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 0 {
		return 0, ErrNoState
	}
	return resp.Kvs[0].ModRevision, nil
}

// following is how Follow stands, for status.
type following struct {
	mu    sync.Mutex
	err   string
	since time.Time
}

func (f *following) set(err error) {
	msg := "ok"
	if err != nil {
		msg = err.Error()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if msg != f.err || f.since.IsZero() {
		f.err, f.since = msg, time.Now().UTC()
	}
}

// Following says whether the copy follows the cluster's changes ("ok", or
// why not) and since when.
func (e *Etcd) Following() (string, time.Time) {
	e.follow.mu.Lock()
	defer e.follow.mu.Unlock()
	if e.follow.since.IsZero() {
		return "not yet", time.Time{}
	}
	return e.follow.err, e.follow.since
}
