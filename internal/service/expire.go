package service

import (
	"context"
	"fmt"
	"time"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/timespec"
	"github.com/extranetgw/extranet/pkg/api"
)

// ExpireDefaults are the daemon's configured expiry rules.
type ExpireDefaults struct {
	Idle   time.Duration
	Unused time.Duration
	Action string
}

// expireRules is one resolved expire run.
type expireRules struct {
	now          time.Time
	idle, unused time.Duration
	action       string
}

func (s *Service) expireRules(req api.ExpireRequest) (expireRules, error) {
	r := expireRules{now: s.now(), idle: s.opts.Expire.Idle, unused: s.opts.Expire.Unused, action: s.opts.Expire.Action}
	var err error
	if req.Idle != "" {
		if r.idle, err = timespec.ParseDuration(req.Idle); err != nil {
			return r, api.Errorf(api.CodeInvalid, "--idle: %v", err)
		}
	}
	if req.Unused != "" {
		if r.unused, err = timespec.ParseDuration(req.Unused); err != nil {
			return r, api.Errorf(api.CodeInvalid, "--unused: %v", err)
		}
	}
	if req.Action != "" {
		r.action = req.Action
	}
	if r.action == "" {
		r.action = "suspend"
	}
	if r.action != "suspend" && r.action != "revoke" {
		return r, api.Errorf(api.CodeInvalid, "--action %q: use suspend or revoke", req.Action)
	}
	return r, nil
}

// peerVerdict decides what happens to one peer, or returns an empty reason.
// Thresholds are strict: a peer idle for exactly the idle duration stays.
func (r expireRules) peerVerdict(p *store.Peer, orgEnded bool) (reason, to string) {
	if p.State == api.StateRevoked {
		return "", ""
	}
	target := api.StateSuspended
	if r.action == "revoke" {
		target = api.StateRevoked
	}
	// Dates agreed with the partner end access whatever the action: the
	// peer is marked expired (resumable with a new date), or revoked.
	dated := api.StateExpired
	if r.action == "revoke" {
		dated = api.StateRevoked
	}
	switch {
	case orgEnded && p.State != dated:
		return "organisation contract ended", dated
	case p.Expires != nil && !p.Expires.After(r.now) && p.State != dated:
		return fmt.Sprintf("expired on %s", p.Expires.Format(time.RFC3339)), dated
	case p.State != api.StateActive && !(r.action == "revoke" && p.State != target):
		return "", ""
	}
	kept := p.ClocksFrom != nil
	switch {
	case p.LastHandshake != nil && r.idle > 0:
		if kept && p.ClocksFrom.After(*p.LastHandshake) {
			if d := r.now.Sub(*p.ClocksFrom); d > r.idle {
				return fmt.Sprintf("idle: no handshake since resumed or extended %s ago (limit %s)", d.Round(time.Second), r.idle), target
			}
		} else if d := r.now.Sub(*p.LastHandshake); d > r.idle {
			return fmt.Sprintf("idle: last handshake %s ago (limit %s)", d.Round(time.Second), r.idle), target
		}
	case p.LastHandshake == nil && r.unused > 0:
		if kept && p.ClocksFrom.After(p.CreatedAt) {
			if d := r.now.Sub(*p.ClocksFrom); d > r.unused {
				return fmt.Sprintf("unused: never connected, resumed or extended %s ago (limit %s)", d.Round(time.Second), r.unused), target
			}
		} else if d := r.now.Sub(p.CreatedAt); d > r.unused {
			return fmt.Sprintf("unused: never connected since issued %s ago (limit %s)", d.Round(time.Second), r.unused), target
		}
	}
	return "", ""
}

// Expire applies the expiry rules in one transaction, so two runs at once
// or in a row never act twice: the second finds nothing left to do.
func (s *Service) Expire(ctx context.Context, req api.ExpireRequest) (api.ExpireResult, error) {
	rules, err := s.expireRules(req)
	if err != nil {
		return api.ExpireResult{}, err
	}
	// The poller's last read may be many seconds old: a peer that came
	// online since would still look unused or idle, and be cut while in use.
	if s.opts.Runtime != nil {
		if err := s.opts.Runtime.PollStats(); err != nil {
			return api.ExpireResult{}, fmt.Errorf("read the current handshakes before expiring (nothing was expired): %w", err)
		}
	}
	actor := Actor(ctx)
	var res api.ExpireResult
	run := func(tx *store.Tx) error {
		res = api.ExpireResult{DryRun: req.DryRun, Actions: []api.ExpireAction{}}
		ended := map[string]bool{}
		var orgs []*store.Org
		if err := tx.Orgs(func(o *store.Org) error {
			if o.Expires != nil && !o.Expires.After(rules.now) {
				ended[o.Name] = true
				if o.State != api.StateExpired {
					orgs = append(orgs, o)
				}
			}
			return nil
		}); err != nil {
			return err
		}
		for _, o := range orgs {
			res.Actions = append(res.Actions, api.ExpireAction{Target: o.Name, Reason: fmt.Sprintf("contract ended on %s", o.Expires.Format(time.RFC3339)), From: o.State, To: api.StateExpired})
			if req.DryRun {
				continue
			}
			before := auditOrg(o)
			o.State, o.UpdatedAt = api.StateExpired, rules.now
			if err := tx.PutOrg(o); err != nil {
				return err
			}
			if err := tx.Audit(rules.now, actor, "org.expire", o.Name, before, auditOrg(o)); err != nil {
				return err
			}
		}
		var peers []*store.Peer
		if err := tx.Peers("", func(p *store.Peer) error {
			peers = append(peers, p)
			return nil
		}); err != nil {
			return err
		}
		for _, p := range peers {
			reason, to := rules.peerVerdict(p, ended[p.Org])
			if reason == "" {
				continue
			}
			res.Actions = append(res.Actions, api.ExpireAction{Target: p.ID(), Reason: reason, From: p.State, To: to})
			if req.DryRun {
				continue
			}
			before := auditPeer(p)
			p.State, p.UpdatedAt = to, rules.now
			if to == api.StateRevoked {
				if err := tx.ReleaseAddr(p.Address); err != nil {
					return err
				}
			}
			if err := tx.PutPeer(p); err != nil {
				return err
			}
			if err := tx.Audit(rules.now, actor, "peer."+verbFor(to), p.ID(), before, auditPeer(p)); err != nil {
				return err
			}
		}
		return nil
	}
	if req.DryRun {
		return res, asErr(s.opts.DB.View(run))
	}
	ch, err := s.opts.DB.Change(run)
	if err != nil {
		return api.ExpireResult{}, asAPIError(err)
	}
	if s.opts.OnExpire != nil {
		s.opts.OnExpire(res.Actions)
	}
	if err := s.applied(ctx, ch); err != nil {
		return api.ExpireResult{}, err
	}
	return res, nil
}

func verbFor(state string) string {
	switch state {
	case api.StateSuspended:
		return "suspend"
	case api.StateRevoked:
		return "revoke"
	}
	return "expire"
}
