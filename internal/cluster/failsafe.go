package cluster

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// An active that cannot renew its lease cannot tell whether it alone is cut
// off from etcd (another gateway may be promoted once the lease ends) or
// etcd lost its quorum for everyone (nobody can be promoted, and leases do
// not end without a leader: etcd restarts every lease's time when a new
// leader takes over). Stepping down in the second case would leave every
// partner without a gateway for as long as etcd is down.
//
// So the active asks the other gateways directly. If every one of them
// answers that it cannot reach etcd either and is not active, nobody can be
// promoted, and the active keeps answering partners (fail static); it asks
// again at every renewal it misses, and steps down as soon as one gateway
// reaches etcd, cannot be asked, or does not answer as it must. The others
// are the gateways listed in etcd when it last answered. A gateway that
// answered that it cannot reach etcd does not campaign for two lease times
// after: when etcd answers
// again, the lease may be gone (a partition that cut every gateway off from
// a healthy etcd), and the active, still answering, must learn so and step
// down before anyone is promoted. The question and
// the answer are authenticated with a key derived from the gateway key,
// which every gateway of a cluster holds and nobody else does: a host on the
// network cannot answer for a gateway, or replay an answer.

// Failsafe answers the other gateways' question, and asks it of them.
type Failsafe struct {
	// Secret authenticates questions and answers (FailsafeSecret).
	Secret []byte
	// Addr is where the other gateways ask this one (host:port), listed
	// with this gateway in etcd.
	Addr string
	// Client asks the others; nil: one with a short timeout.
	Client *http.Client
}

// FailsafeSecret derives the failsafe's key from the gateway's private key.
func FailsafeSecret(gatewayKey []byte) []byte {
	m := hmac.New(sha256.New, gatewayKey)
	m.Write([]byte("extranet cluster failsafe v1"))
	return m.Sum(nil)
}

// failsafeAnswer is what a gateway says of itself.
type failsafeAnswer struct {
	Name   string `json:"name"`
	Nonce  string `json:"nonce"`
	Active bool   `json:"active"`
	Etcd   bool   `json:"etcd"`
	// HoldsBack is how long, from its answer, a gateway that cannot reach
	// etcd will not campaign once it can, in milliseconds.
	HoldsBack int64 `json:"holds_back_ms,omitempty"`
}

// macHeader carries the answer's authentication.
const macHeader = "X-Extranet-Failsafe-Mac"

func (f *Failsafe) mac(parts ...[]byte) string {
	m := hmac.New(sha256.New, f.Secret)
	for _, p := range parts {
		m.Write(p)
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// askTimeout bounds one question, and etcdCheckTimeout the answering
// gateway's own look at etcd within it.
const (
	askTimeout       = 500 * time.Millisecond
	etcdCheckTimeout = 300 * time.Millisecond
)

// Handler answers a question: the nonce it was asked with, whether this
// gateway is active, and whether it reaches an etcd member that has a
// leader now.
func (c *Candidate) FailsafeHandler() http.Handler {
	f := c.Failsafe
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/failsafe" {
			http.NotFound(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 256))
		if err != nil || !hmac.Equal([]byte(r.Header.Get(macHeader)), []byte(f.mac([]byte("question"), body))) {
			http.Error(w, "not a gateway of this cluster", http.StatusForbidden)
			return
		}
		var q struct {
			Nonce string `json:"nonce"`
		}
		if json.Unmarshal(body, &q) != nil || q.Nonce == "" {
			http.Error(w, "bad question", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), etcdCheckTimeout)
		defer cancel()
		_, err = c.Etcd.Client.Get(clientv3.WithRequireLeader(ctx), c.Etcd.activeKey())
		a := failsafeAnswer{Name: c.Name, Nonce: q.Nonce, Active: c.Role().Active, Etcd: err == nil}
		if !a.Etcd {
			// The active keeps answering partners on this word: this
			// gateway holds back when etcd answers again.
			c.mu.Lock()
			c.askedAt = time.Now()
			c.mu.Unlock()
			a.HoldsBack = c.holdBack().Milliseconds()
		}
		out, _ := json.Marshal(a)
		w.Header().Set(macHeader, f.mac([]byte("answer"), out))
		w.Header().Set("Content-Type", "application/json")
		w.Write(out)
	})
}

// ask asks the gateway at addr, and returns its authenticated answer.
func (f *Failsafe) ask(ctx context.Context, addr string) (failsafeAnswer, error) {
	var a failsafeAnswer
	nonce := make([]byte, 16)
	rand.Read(nonce)
	q, _ := json.Marshal(map[string]string{"nonce": hex.EncodeToString(nonce)})
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/failsafe", bytes.NewReader(q))
	if err != nil {
		return a, err
	}
	req.Header.Set(macHeader, f.mac([]byte("question"), q))
	client := f.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return a, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return a, err
	}
	if resp.StatusCode != http.StatusOK || !hmac.Equal([]byte(resp.Header.Get(macHeader)), []byte(f.mac([]byte("answer"), body))) {
		return a, fmt.Errorf("%s did not answer as a gateway of this cluster (%s)", addr, resp.Status)
	}
	if err := json.Unmarshal(body, &a); err != nil || a.Nonce != hex.EncodeToString(nonce) {
		return a, fmt.Errorf("%s answered another question", addr)
	}
	return a, nil
}

// errNoOthers means no other gateway was known to ask.
var errNoOthers = errors.New("no other gateway is known")

// errReached means another gateway reaches etcd, and nothing else keeps the
// failsafe from holding: etcd is back, or this gateway alone is cut off.
var errReached = errors.New("reaches etcd")

// othersLostEtcd asks every other gateway at once, and returns nil only if
// each answered that it reaches no etcd and is not active, with the least
// time any of them holds back from its answer on. An error wraps
// errReached when every gateway answered and the only trouble is that some
// reach etcd.
func (f *Failsafe) othersLostEtcd(ctx context.Context, others []string) (time.Duration, error) {
	if len(others) == 0 {
		return 0, errNoOthers
	}
	var (
		mu        sync.Mutex
		reached   error
		other     error
		holdsBack = time.Duration(math.MaxInt64)
		wg        sync.WaitGroup
	)
	for _, addr := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := f.ask(ctx, addr)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				other = cmp.Or(other, err)
			case a.Active:
				other = cmp.Or(other, fmt.Errorf("%s is active", a.Name))
			case a.Etcd:
				reached = cmp.Or(reached, fmt.Errorf("%s %w", a.Name, errReached))
			default:
				holdsBack = min(holdsBack, time.Duration(a.HoldsBack)*time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if err := cmp.Or(other, reached); err != nil {
		return 0, err
	}
	return holdsBack, nil
}
