// Package service holds the rules of the domain: it validates every request,
// plans addresses, changes the store in one transaction together with its
// audit event, and then asks the reconciler to make the kernel match. It
// never touches the kernel itself.
package service

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// Clock tells the time; tests substitute a fake.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns the current time.
func (SystemClock) Now() time.Time { return time.Now() }

// Applier makes the kernel match the store. Apply is told what a
// transaction changed and returns a channel that yields the outcome of a
// reconcile that started after the call, so a request answers only once
// its change is in force, or says that it is not.
type Applier interface {
	Apply(store.Changes) <-chan error
}

// Runtime is the live data plane: its state for `status`, and its current
// statistics for decisions that must not rest on an old poll.
type Runtime interface {
	// Status is the gateway's account; the gateway-wide parts (activity,
	// refusals, alerts, the cluster) only when all, for a caller who sees
	// every organisation, so that nobody else's request even asks for them.
	Status(all bool) api.Status
	// PollStats copies the device's current handshakes into the store.
	PollStats() error
}

// Options configure a Service.
type Options struct {
	DB       *store.DB
	Plan     ipam.Plan
	Clock    Clock
	Applier  Applier
	Runtime  Runtime
	Endpoint string // host:port partners dial; issuing refuses without it
	DNS      []string
	MTU      int
	// GatewayPublicKey goes into every client config.
	GatewayPublicKey string
	// MaxPeerLifetime caps peer expiry; 0 means none.
	MaxPeerLifetime time.Duration
	// Expire holds the defaults of `extranetctl expire`.
	Expire ExpireDefaults
	// OnExpire, when set, learns what each expire run did (for metrics).
	OnExpire func([]api.ExpireAction)
	// ApplyTimeout bounds how long a request waits for the kernel to follow.
	ApplyTimeout time.Duration
	// EnrollURL is where partners open enrollment links
	// (https://HOST:PORT); empty when self-enrollment is off.
	EnrollURL string
	// RequestTTL is how long an enrollment request waits for a decision.
	RequestTTL time.Duration
	// Activity reads the partner activity log; nil when logging is off,
	// and ActivityOff then says why, when it was not the config.
	Activity    ActivityReader
	ActivityOff string
	// Alert, when set, is told what people should hear of at once (an
	// enrollment request waiting); it must not block.
	Alert func(api.Alert)
}

// Service implements every operation of the API.
type Service struct {
	opts Options
	// activityReads holds a slot per activity query being read.
	activityReads chan struct{}
}

// New returns a Service.
func New(opts Options) *Service {
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.ApplyTimeout == 0 {
		opts.ApplyTimeout = 5 * time.Second
	}
	if opts.RequestTTL == 0 {
		opts.RequestTTL = DefaultRequestTTL
	}
	return &Service{opts: opts, activityReads: make(chan struct{}, 2)}
}

type actorKey struct{}

// WithActor records who is calling, for the audit log.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// Actor returns the caller recorded by WithActor, or "unknown".
func Actor(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return "unknown"
}

func (s *Service) now() time.Time { return s.opts.Clock.Now().UTC().Truncate(time.Second) }

// update runs fn in one transaction, then waits until the data plane
// follows. An error with CodeNotApplied means the change is saved but not
// in force.
func (s *Service) update(ctx context.Context, fn func(*store.Tx) error) error {
	ch, err := s.opts.DB.Change(fn)
	if err != nil {
		return asAPIError(err)
	}
	return s.applied(ctx, ch)
}

// applied waits for the reconciler to apply ch, bounded: the change is
// durable already, and later reconciles keep trying. A revoke or an
// ungrant that is not in force must not look done, so a failed or late
// reconcile is an error.
func (s *Service) applied(ctx context.Context, ch store.Changes) error {
	if s.opts.Applier == nil || ch.Empty() {
		return nil
	}
	done := s.opts.Applier.Apply(ch)
	t := time.NewTimer(s.opts.ApplyTimeout)
	defer t.Stop()
	var err error
	select {
	case err = <-done:
	case <-t.C:
		err = fmt.Errorf("no reconcile finished within %s", s.opts.ApplyTimeout)
	case <-ctx.Done():
		// Nobody is left to tell.
		return nil
	}
	if err == nil {
		return nil
	}
	return api.Errorf(api.CodeNotApplied, "the change is saved (see `extranetctl audit`) but not in force yet: %v. extranetd retries at every reconcile; `extranetctl status` shows the last result", err)
}

// notApplied returns the message of a CodeNotApplied error, or "".
func notApplied(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) && ae.Code == api.CodeNotApplied {
		return ae.Message
	}
	return ""
}

func asAPIError(err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	return &api.Error{Code: api.CodeInternal, Message: err.Error()}
}

func invalid(err error) *api.Error { return &api.Error{Code: api.CodeInvalid, Message: err.Error()} }

func orgNotFound(name string) *api.Error {
	return api.Errorf(api.CodeNotFound, "organisation %q not found; see `extranetctl org list`", name)
}

func peerNotFound(org, name string) *api.Error {
	return api.Errorf(api.CodeNotFound, "peer %s/%s not found; see `extranetctl peer list --org %s`", org, name, org)
}

func getOrg(tx *store.Tx, name string) (*store.Org, error) {
	o, err := tx.Org(name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, orgNotFound(name)
	}
	return o, err
}

func getPeer(tx *store.Tx, org, name string) (*store.Peer, error) {
	p, err := tx.Peer(org, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, peerNotFound(org, name)
	}
	return p, err
}

// checkGrants refuses grants that would let partners reach the tunnel
// network, i.e. each other or the gateway, and grants of address space no
// partner should get (grant.Covers).
func (s *Service) checkGrants(gs []grant.Grant) error {
	return s.checkGrantsForce(gs, false)
}

// checkGrantsForce is checkGrants, where force lets an admin who means it
// grant special or very broad address space. Nothing opens the tunnel
// network: partners reaching each other is what the product exists to stop.
func (s *Service) checkGrantsForce(gs []grant.Grant, force bool) error {
	for _, g := range gs {
		if g.Prefix.Overlaps(s.opts.Plan.Network) {
			return api.Errorf(api.CodeInvalid, "grant %s overlaps the tunnel network %s; partners may never reach each other or the gateway through a grant", g, s.opts.Plan.Network)
		}
		if c := grant.Covers(g.Prefix); len(c) > 0 && !force {
			return api.Errorf(api.CodeInvalid, "grant %s covers %s; no partner should normally reach that. Grant the internal networks it needs instead, or pass --force if you mean it", g, strings.Join(c, " and "))
		}
	}
	return nil
}

func grantStrings(gs []grant.Grant) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.String()
	}
	return out
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func orgToAPI(o *store.Org, counts api.PeerCounts) api.Org {
	return api.Org{
		Name:        o.Name,
		DisplayName: o.DisplayName,
		Contact:     o.Contact,
		State:       o.State,
		Expires:     o.Expires,
		Grants:      grantStrings(o.Grants),
		Blocks:      prefixStrings(o.Blocks),
		Groups:      groupSummaries(o),
		Peers:       counts,
		CreatedAt:   o.CreatedAt,
		CreatedBy:   o.CreatedBy,
		UpdatedAt:   o.UpdatedAt,
	}
}

func peerToAPI(p *store.Peer) api.Peer {
	return api.Peer{
		Org:           p.Org,
		Name:          p.Name,
		PublicKey:     p.PublicKey,
		Address:       p.Address.String(),
		Group:         p.Group,
		State:         p.State,
		KeyOrigin:     p.KeyOrigin,
		Expires:       p.Expires,
		CreatedAt:     p.CreatedAt,
		CreatedBy:     p.CreatedBy,
		UpdatedAt:     p.UpdatedAt,
		LastHandshake: p.LastHandshake,
		Endpoint:      p.Endpoint,
		RxBytes:       p.RxBytes,
		TxBytes:       p.TxBytes,
		Suspension:    p.Suspension,
	}
}

// auditOrg is what the audit log records of an organisation.
func auditOrg(o *store.Org) any {
	if o == nil {
		return nil
	}
	return orgToAPI(o, api.PeerCounts{})
}

func auditPeer(p *store.Peer) any {
	if p == nil {
		return nil
	}
	ap := peerToAPI(p)
	// Traffic counters change constantly and say nothing about who did what.
	ap.RxBytes, ap.TxBytes, ap.LastHandshake, ap.Endpoint = 0, 0, nil, ""
	return ap
}

func countPeers(tx *store.Tx, org string) (api.PeerCounts, error) {
	var c api.PeerCounts
	err := tx.Peers(org, func(p *store.Peer) error {
		if p.State == api.StateRevoked {
			return nil
		}
		c.Total++
		if p.State == api.StateActive {
			c.Active++
		}
		return nil
	})
	return c, err
}
