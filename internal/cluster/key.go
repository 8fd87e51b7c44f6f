package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Every gateway of a cluster answers partners with one key: their configs
// name its public key, so a gateway with another would fail every partner
// the moment it took over. The cluster keeps the public key (never the
// private one) beside the state, and a gateway whose key differs does not
// start.

func (e *Etcd) gatewayKeyKey() string { return strings.TrimSuffix(e.Prefix, "/") + ".gateway-key" }

// ErrOtherKey means this gateway's key is not the one the cluster's partners
// know.
var ErrOtherKey = errors.New("this gateway's WireGuard key is not the cluster's: partners' configs name the other's, and would fail whenever this gateway answered")

// CheckGatewayKey records pub as the cluster's gateway public key if it has
// none, and otherwise checks that pub is it.
func (e *Etcd) CheckGatewayKey(ctx context.Context, pub string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	k := e.gatewayKeyKey()
	resp, err := e.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, pub)).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return fmt.Errorf("read the cluster's gateway key: %w", err)
	}
	if resp.Succeeded {
		return nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 && string(kvs[0].Value) != pub {
		return fmt.Errorf("%w (cluster's public key %s, this gateway's %s)", ErrOtherKey, kvs[0].Value, pub)
	}
	return nil
}
