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

	"github.com/extranetgw/extranet/pkg/api"
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
// are the gateways listed in etcd when it last answered. No gateway
// campaigns before it has reached etcd for two lease times without a break
// it noticed (a failed question's etcd check is one), is listed with its
// failsafe address, and has heard no listed gateway say it is active: when
// etcd answers again, the lease may be gone (a partition that cut every
// gateway off from a healthy etcd), and the active, still answering, must
// learn so and step down before anyone is promoted. The question and the
// answer are authenticated with a key derived from the gateway key,
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

// failsafeQuestion is what the active asks: when (its clock; questions
// older than questionWindow are not answered), its lease's TTL (the others
// hold back twice the longest they heard of), and a nonce the answer
// carries back.
type failsafeQuestion struct {
	Nonce string `json:"nonce"`
	At    int64  `json:"at_ms"`
	TTL   int64  `json:"ttl_ms"`
}

// questionWindow bounds how old a question may be, for a replay: clocks of
// the gateways differ by less (NTP).
const questionWindow = 10 * time.Second

// maxAnswering bounds the questions answered at once: each reads etcd.
const maxAnswering = 4

// failsafeAnswer is what a gateway says of itself.
type failsafeAnswer struct {
	Name   string `json:"name"`
	Nonce  string `json:"nonce"`
	Active bool   `json:"active"`
	Etcd   bool   `json:"etcd"`
	// HoldsBack is how long, from its answer, a gateway that cannot reach
	// etcd will not campaign once it can, in milliseconds.
	HoldsBack int64 `json:"holds_back_ms,omitempty"`
	// Ready says a standby would campaign at once if the role were free.
	Ready bool `json:"ready,omitempty"`
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
// gateway's own look at etcd within it: fractions of the asker's lease, so
// that the answers are in well before it must decide (0.5 s and 0.3 s at
// the default 2 s).
func askTimeout(ttl time.Duration) time.Duration       { return ttl / 4 }
func etcdCheckTimeout(ttl time.Duration) time.Duration { return ttl * 3 / 20 }

// Handler answers a question: the nonce it was asked with, whether this
// gateway is active, and whether it reaches an etcd member that has a
// leader now.
func (c *Candidate) FailsafeHandler() http.Handler {
	f := c.Failsafe
	answering := make(chan struct{}, maxAnswering)
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
		var q failsafeQuestion
		if json.Unmarshal(body, &q) != nil || q.Nonce == "" || time.Since(time.UnixMilli(q.At)).Abs() > questionWindow {
			http.Error(w, "bad question", http.StatusBadRequest)
			return
		}
		select {
		case answering <- struct{}{}:
			defer func() { <-answering }()
		default:
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		c.mu.Lock()
		c.longestTTL = max(c.longestTTL, time.Duration(q.TTL)*time.Millisecond)
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(r.Context(), etcdCheckTimeout(max(time.Duration(q.TTL)*time.Millisecond, time.Second)))
		defer cancel()
		_, err = c.Etcd.Client.Get(clientv3.WithRequireLeader(ctx), c.Etcd.activeKey())
		c.reached(err == nil)
		a := failsafeAnswer{Name: c.Name, Nonce: q.Nonce, Active: c.Role().Active, Etcd: err == nil, Ready: err == nil && c.Ready()}
		if !a.Etcd {
			// The active keeps answering partners on this word; this
			// gateway holds back once etcd answers again (reached).
			a.HoldsBack = c.holdBack().Milliseconds()
		}
		out, _ := json.Marshal(a)
		w.Header().Set(macHeader, f.mac([]byte("answer"), out))
		w.Header().Set("Content-Type", "application/json")
		w.Write(out)
	})
}

// noProxy asks directly, whatever HTTP_PROXY says.
var noProxy = &http.Client{Transport: &http.Transport{Proxy: nil}}

// ask asks gw at its failsafe address, and returns its authenticated
// answer, which must be gw's own. ttl is the asker's lease.
func (f *Failsafe) ask(ctx context.Context, gw api.ClusterGateway, ttl time.Duration) (failsafeAnswer, error) {
	var a failsafeAnswer
	addr := gw.Failsafe
	nonce := make([]byte, 16)
	rand.Read(nonce)
	q, _ := json.Marshal(failsafeQuestion{Nonce: hex.EncodeToString(nonce), At: time.Now().UnixMilli(), TTL: ttl.Milliseconds()})
	ctx, cancel := context.WithTimeout(ctx, askTimeout(ttl))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/failsafe", bytes.NewReader(q))
	if err != nil {
		return a, err
	}
	req.Header.Set(macHeader, f.mac([]byte("question"), q))
	client := f.Client
	if client == nil {
		client = noProxy
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
	if a.Name != gw.Name {
		return a, fmt.Errorf("%s answered as %s, not %s", addr, a.Name, gw.Name)
	}
	return a, nil
}

// mayCampaign checks what a campaign needs beyond a free role where
// gateways have a failsafe: this gateway is listed, with its failsafe
// address (so that an active counts it among those it asks), and no other
// listed gateway says it is active (one in failsafe, cut off from etcd,
// still answers partners).
func (c *Candidate) mayCampaign(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	gws, err := c.Etcd.Gateways(gctx)
	cancel()
	if err != nil {
		return fmt.Errorf("list the gateways: %w", err)
	}
	listed := false
	var others []api.ClusterGateway
	for _, g := range gws {
		switch {
		case g.Name == c.Name:
			listed = g.Failsafe == c.Failsafe.Addr
		case g.Failsafe != "":
			others = append(others, g)
		}
	}
	if !listed {
		return fmt.Errorf("%s is not listed in the cluster with its failsafe address %s yet", c.Name, c.Failsafe.Addr)
	}
	for _, r := range c.Failsafe.askAll(ctx, others, c.TTL) {
		if r.err == nil && r.answer.Active {
			return fmt.Errorf("%s says it is active", r.gw.Name)
		}
	}
	return nil
}

// asked is one gateway's answer to a question, or why there is none.
type asked struct {
	gw     api.ClusterGateway
	answer failsafeAnswer
	err    error
}

// askAll asks every gateway of gws at once: a question to a dead one
// waits its whole timeout, and must not add up.
func (f *Failsafe) askAll(ctx context.Context, gws []api.ClusterGateway, ttl time.Duration) []asked {
	out := make([]asked, len(gws))
	var wg sync.WaitGroup
	for i, g := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := f.ask(ctx, g, ttl)
			out[i] = asked{gw: g, answer: a, err: err}
		}()
	}
	wg.Wait()
	return out
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
func (f *Failsafe) othersLostEtcd(ctx context.Context, others []api.ClusterGateway, ttl time.Duration) (time.Duration, error) {
	if len(others) == 0 {
		return 0, errNoOthers
	}
	var reached, other error
	holdsBack := time.Duration(math.MaxInt64)
	for _, r := range f.askAll(ctx, others, ttl) {
		switch a := r.answer; {
		case r.err != nil:
			other = cmp.Or(other, r.err)
		case a.Active:
			other = cmp.Or(other, fmt.Errorf("%s is active", a.Name))
		case a.Etcd:
			reached = cmp.Or(reached, fmt.Errorf("%s %w", a.Name, errReached))
		default:
			holdsBack = min(holdsBack, time.Duration(a.HoldsBack)*time.Millisecond)
		}
	}
	if err := cmp.Or(other, reached); err != nil {
		return 0, err
	}
	return holdsBack, nil
}

// Ready tells whether this gateway, a standby, would campaign at once if
// the role were free (waitFree).
func (c *Candidate) Ready() bool {
	hold := c.holdBack()
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.role.Active && !c.etcdSince.IsZero() && time.Since(c.etcdSince) >= hold && time.Now().After(c.holdOff)
}

// ReadyStandbys are the gateways, this one among them, that would take the
// role at once if it were free: where a switchover may hand over to.
func (c *Candidate) ReadyStandbys(ctx context.Context) ([]string, error) {
	if c.Failsafe == nil {
		return nil, errors.New("this gateway has no failsafe to ask the others with")
	}
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	gws, err := c.Etcd.Gateways(gctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("list the gateways: %w", err)
	}
	var ready []string
	if c.Ready() {
		ready = append(ready, c.Name)
	}
	var others []api.ClusterGateway
	for _, g := range gws {
		if g.Name != c.Name && g.Failsafe != "" {
			others = append(others, g)
		}
	}
	for _, r := range c.Failsafe.askAll(ctx, others, c.TTL) {
		if r.err == nil && r.answer.Ready {
			ready = append(ready, r.gw.Name)
		}
	}
	return ready, nil
}
