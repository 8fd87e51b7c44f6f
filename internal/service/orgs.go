package service

import (
	"time"

	"context"
	"errors"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/timespec"
	"github.com/extranetgw/extranet/internal/validate"
	"github.com/extranetgw/extranet/pkg/api"
)

// Limits on free-text fields.
const (
	maxDisplayName = 200
	maxContact     = 200
	maxGrants      = 1000
)

// CreateOrg creates an active organisation. Its first address block is cut
// when its first peer is issued.
func (s *Service) CreateOrg(ctx context.Context, req api.CreateOrgRequest) (api.Org, error) {
	if err := validate.Name("org", req.Name); err != nil {
		return api.Org{}, invalid(err)
	}
	if err := validate.Text("display name", req.DisplayName, maxDisplayName); err != nil {
		return api.Org{}, invalid(err)
	}
	if err := validate.Text("contact", req.Contact, maxContact); err != nil {
		return api.Org{}, invalid(err)
	}
	if len(req.Grants) > maxGrants {
		return api.Org{}, api.Errorf(api.CodeInvalid, "%d grants in one request; the limit is %d", len(req.Grants), maxGrants)
	}
	grants, err := grant.ParseAll(req.Grants)
	if err != nil {
		return api.Org{}, invalid(err)
	}
	if err := s.checkGrantsForce(grants, req.Force); err != nil {
		return api.Org{}, err
	}
	now := s.now()
	o := &store.Org{
		Name:        req.Name,
		DisplayName: req.DisplayName,
		Contact:     req.Contact,
		State:       api.StateActive,
		Grants:      grants,
		CreatedAt:   now,
		CreatedBy:   Actor(ctx),
		UpdatedAt:   now,
	}
	if req.Expires != "" {
		t, err := timespec.ParseExpiry(req.Expires, now)
		if err != nil {
			return api.Org{}, invalid(err)
		}
		o.Expires = &t
	}
	err = s.update(ctx, func(tx *store.Tx) error {
		if _, err := tx.Org(req.Name); err == nil {
			return api.Errorf(api.CodeConflict, "organisation %q already exists; choose another name or see `extranetctl org show %s`", req.Name, req.Name)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return addOrg(tx, o, now, Actor(ctx), "org.create")
	})
	if err != nil {
		return api.Org{}, err
	}
	return orgToAPI(o, api.PeerCounts{}), nil
}

// addOrg stores a new organisation with a fresh id and its default group,
// plus the groups o already holds (an import's), and records the event.
func addOrg(tx *store.Tx, o *store.Org, now time.Time, actor, action string) error {
	id, err := tx.NextOrgID()
	if err != nil {
		return err
	}
	o.ID = id
	gid, err := tx.NextGroupID()
	if err != nil {
		return err
	}
	groups := []store.Group{{ID: gid, Name: store.DefaultGroup, CreatedAt: now, CreatedBy: actor, UpdatedAt: now}}
	for _, g := range o.Groups {
		if g.ID, err = tx.NextGroupID(); err != nil {
			return err
		}
		g.CreatedBy = actor
		groups = append(groups, g)
	}
	o.Groups = groups
	if err := tx.PutOrg(o); err != nil {
		return err
	}
	return tx.Audit(now, actor, action, o.Name, nil, auditOrg(o))
}

// ListOrgs returns every organisation in name order.
func (s *Service) ListOrgs(ctx context.Context) ([]api.Org, error) {
	out := []api.Org{}
	err := s.opts.DB.View(func(tx *store.Tx) error {
		counts := map[string]api.PeerCounts{}
		err := tx.Peers("", func(p *store.Peer) error {
			if p.State == api.StateRevoked {
				return nil
			}
			c := counts[p.Org]
			c.Total++
			if p.State == api.StateActive {
				c.Active++
			}
			counts[p.Org] = c
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Orgs(func(o *store.Org) error {
			out = append(out, orgToAPI(o, counts[o.Name]))
			return nil
		})
	})
	return out, asErr(err)
}

func asErr(err error) error {
	if err == nil {
		return nil
	}
	return asAPIError(err)
}

// GetOrg returns one organisation.
func (s *Service) GetOrg(ctx context.Context, name string) (api.Org, error) {
	if err := validate.Name("org", name); err != nil {
		return api.Org{}, invalid(err)
	}
	var out api.Org
	err := s.opts.DB.View(func(tx *store.Tx) error {
		o, err := getOrg(tx, name)
		if err != nil {
			return err
		}
		c, err := countPeers(tx, name)
		out = orgToAPI(o, c)
		return err
	})
	return out, asErr(err)
}

// modifyOrg loads an organisation, lets fn change it, and stores it with an
// audit event. fn returning errNoChange skips the write and the event.
func (s *Service) modifyOrg(ctx context.Context, name, action string, fn func(tx *store.Tx, o *store.Org) error) (api.Org, error) {
	if err := validate.Name("org", name); err != nil {
		return api.Org{}, invalid(err)
	}
	var out api.Org
	now := s.now()
	err := s.update(ctx, func(tx *store.Tx) error {
		o, err := getOrg(tx, name)
		if err != nil {
			return err
		}
		before := auditOrg(o)
		if err := fn(tx, o); err != nil {
			return err
		}
		o.UpdatedAt = now
		if err := tx.PutOrg(o); err != nil {
			return err
		}
		c, err := countPeers(tx, name)
		if err != nil {
			return err
		}
		out = orgToAPI(o, c)
		return tx.Audit(now, Actor(ctx), action, name, before, auditOrg(o))
	})
	return out, err
}

// Grant adds resources to an organisation. Granting what it already has is
// not an error.
func (s *Service) Grant(ctx context.Context, name string, req api.GrantsRequest) (api.Org, error) {
	gs, err := s.parseGrantList(req.Grants, req.Force)
	if err != nil {
		return api.Org{}, err
	}
	return s.modifyOrg(ctx, name, "org.grant", func(_ *store.Tx, o *store.Org) error {
		o.Grants = grant.Normalize(append(o.Grants, gs...))
		if len(o.Grants) > maxGrants {
			return api.Errorf(api.CodeInvalid, "organisation %q would have %d grants; the limit is %d", name, len(o.Grants), maxGrants)
		}
		return nil
	})
}

// Ungrant removes resources. Each must be granted exactly as written. The
// organisation's groups narrow with it: what they held outside the new
// ceiling is cut away, in the same transaction and audit event.
func (s *Service) Ungrant(ctx context.Context, name string, req api.GrantsRequest) (api.Org, error) {
	// Taking away never needs force, whatever was granted with it.
	gs, err := s.parseGrantList(req.Grants, true)
	if err != nil {
		return api.Org{}, err
	}
	return s.modifyOrg(ctx, name, "org.ungrant", func(_ *store.Tx, o *store.Org) error {
		kept, missing := removeGrants(o.Grants, gs)
		if missing != nil {
			return api.Errorf(api.CodeNotFound, "organisation %q has no grant %s; its grants are %v", name, missing, grantStrings(o.Grants))
		}
		o.Grants = kept
		for i := range o.Groups {
			if g := &o.Groups[i]; g.Name != store.DefaultGroup {
				g.Grants = grant.Narrow(g.Grants, o.Grants)
				if len(g.Grants) > maxGrants {
					return api.Errorf(api.CodeInvalid, "group %s/%s would be cut into %d grants; the limit is %d: ungrant from the group first (`extranetctl group ungrant`)", name, g.Name, len(g.Grants), maxGrants)
				}
			}
		}
		return nil
	})
}

// removeGrants returns have without gs, each of which must be in have as
// written; else it returns the first that is not.
func removeGrants(have, gs []grant.Grant) ([]grant.Grant, *grant.Grant) {
	for i, g := range gs {
		kept := have[:0:0]
		for _, h := range have {
			if h != g {
				kept = append(kept, h)
			}
		}
		if len(kept) == len(have) {
			return nil, &gs[i]
		}
		have = kept
	}
	return have, nil
}

func (s *Service) parseGrantList(in []string, force bool) ([]grant.Grant, error) {
	if len(in) == 0 {
		return nil, api.Errorf(api.CodeInvalid, "no grant given; name at least one resource such as 10.20.0.0/24")
	}
	if len(in) > maxGrants {
		return nil, api.Errorf(api.CodeInvalid, "%d grants in one request; the limit is %d", len(in), maxGrants)
	}
	gs, err := grant.ParseAll(in)
	if err != nil {
		return nil, invalid(err)
	}
	return gs, s.checkGrantsForce(gs, force)
}

// SuspendOrg withdraws all access of an organisation, keeping its peers.
func (s *Service) SuspendOrg(ctx context.Context, name string) (api.Org, error) {
	return s.modifyOrg(ctx, name, "org.suspend", func(_ *store.Tx, o *store.Org) error {
		if o.State == api.StateSuspended {
			return api.Errorf(api.CodeConflict, "organisation %q is already suspended", name)
		}
		o.State = api.StateSuspended
		return nil
	})
}

// ResumeOrg restores a suspended or expired organisation. An expired one
// needs its contract end moved first.
func (s *Service) ResumeOrg(ctx context.Context, name string) (api.Org, error) {
	now := s.now()
	return s.modifyOrg(ctx, name, "org.resume", func(_ *store.Tx, o *store.Org) error {
		if o.State == api.StateActive {
			return api.Errorf(api.CodeConflict, "organisation %q is already active", name)
		}
		if o.Expires != nil && !o.Expires.After(now) {
			return api.Errorf(api.CodeConflict, "organisation %q's contract ended on %s; extend it first with `extranetctl org extend %s --expires DATE`", name, o.Expires.Format("2006-01-02"), name)
		}
		o.State = api.StateActive
		return nil
	})
}

// ExtendOrg sets or clears (empty) the contract end.
func (s *Service) ExtendOrg(ctx context.Context, name, expires string) (api.Org, error) {
	now := s.now()
	var at *time.Time
	if expires != "" && expires != "never" {
		t, err := timespec.ParseExpiry(expires, now)
		if err != nil {
			return api.Org{}, invalid(err)
		}
		at = &t
	}
	return s.modifyOrg(ctx, name, "org.extend", func(_ *store.Tx, o *store.Org) error {
		o.Expires = at
		return nil
	})
}

// DeleteOrg removes an organisation and its peers. With active peers it
// refuses unless force is set, in which case they are revoked first: their
// keys stay burnt and the audit log keeps what they were.
func (s *Service) DeleteOrg(ctx context.Context, name string, force bool) error {
	if err := validate.Name("org", name); err != nil {
		return invalid(err)
	}
	now := s.now()
	actor := Actor(ctx)
	return s.update(ctx, func(tx *store.Tx) error {
		o, err := getOrg(tx, name)
		if err != nil {
			return err
		}
		var peers []*store.Peer
		active := 0
		if err := tx.Peers(name, func(p *store.Peer) error {
			peers = append(peers, p)
			if p.State == api.StateActive {
				active++
			}
			return nil
		}); err != nil {
			return err
		}
		if active > 0 && !force {
			peers := "peers"
			if active == 1 {
				peers = "peer"
			}
			return api.Errorf(api.CodeConflict, "organisation %q has %d active %s; revoke them first or pass --force to revoke them with it", name, active, peers)
		}
		for _, p := range peers {
			if p.State != api.StateRevoked {
				before := auditPeer(p)
				p.State = api.StateRevoked
				p.UpdatedAt = now
				if err := tx.Audit(now, actor, "peer.revoke", p.ID(), before, auditPeer(p)); err != nil {
					return err
				}
			}
			if err := tx.DeletePeer(p); err != nil {
				return err
			}
		}
		if err := tx.DeleteOrg(name); err != nil {
			return err
		}
		if err := tx.DeleteEnrollment(name); err != nil {
			return err
		}
		if err := tx.Audit(now, actor, "org.delete", name, auditOrg(o), nil); err != nil {
			return err
		}
		return dropSponsorships(tx, name, now, actor)
	})
}
