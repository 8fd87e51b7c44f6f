package service

import (
	"context"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/validate"
	"github.com/extranetgw/extranet/pkg/api"
)

// maxGroups bounds an organisation's groups: each costs a chain and up to
// two sets, and a new flow of the organisation tests their marks in turn.
const maxGroups = 64

func groupSummaries(o *store.Org) []api.GroupGrants {
	out := make([]api.GroupGrants, 0, len(o.Groups))
	for i := range o.Groups {
		g := &o.Groups[i]
		out = append(out, api.GroupGrants{Name: g.Name, Grants: grantStrings(o.GroupGrants(g))})
	}
	return out
}

func groupToAPI(o *store.Org, g *store.Group, counts api.PeerCounts) api.Group {
	return api.Group{
		Org: o.Name, Name: g.Name, ID: g.ID, Default: g.Name == store.DefaultGroup,
		Grants: grantStrings(o.GroupGrants(g)), Peers: counts,
		CreatedAt: g.CreatedAt, CreatedBy: g.CreatedBy, UpdatedAt: g.UpdatedAt,
	}
}

// groupNames lists an organisation's groups, for error messages.
func groupNames(o *store.Org) string {
	names := make([]string, len(o.Groups))
	for i, g := range o.Groups {
		names[i] = g.Name
	}
	return strings.Join(names, ", ")
}

func getGroup(o *store.Org, name string) (*store.Group, error) {
	if g := o.Group(name); g != nil {
		return g, nil
	}
	return nil, api.Errorf(api.CodeNotFound, "organisation %q has no group %q; its groups are %s (see `extranetctl group list %s`)", o.Name, name, groupNames(o), o.Name)
}

// peerGrants is what a peer's config routes into the tunnel: its group's
// grants.
func peerGrants(o *store.Org, p *store.Peer) []grant.Grant {
	if g := o.Group(p.Group); g != nil {
		return o.GroupGrants(g)
	}
	return nil
}

func validateGroupPath(org, name string) error {
	if err := validate.Name("org", org); err != nil {
		return invalid(err)
	}
	if err := validate.Name("group", name); err != nil {
		return invalid(err)
	}
	return nil
}

// groupCounts counts the peers of each group of org that are not revoked.
func groupCounts(tx *store.Tx, org string) (map[string]api.PeerCounts, error) {
	out := map[string]api.PeerCounts{}
	err := tx.Peers(org, func(p *store.Peer) error {
		if p.State == api.StateRevoked {
			return nil
		}
		c := out[p.Group]
		c.Total++
		if p.State == api.StateActive {
			c.Active++
		}
		out[p.Group] = c
		return nil
	})
	return out, err
}

// withinCeiling refuses grants that no single grant of the organisation
// holds: a group gets a part of what its organisation was granted, never
// more.
func withinCeiling(o *store.Org, gs []grant.Grant) error {
	for _, g := range gs {
		if !grant.WithinAny(g, o.Grants) {
			ceiling := "none"
			if len(o.Grants) > 0 {
				ceiling = strings.Join(grantStrings(o.Grants), " ")
			}
			return api.Errorf(api.CodeInvalid, "grant %s is outside what organisation %q may reach (%s); a group gets only a part of one of those, and a network admin widens them with `extranetctl org grant %s %s`", g, o.Name, ceiling, o.Name, g)
		}
	}
	return nil
}

// modifyGroup loads an organisation and one of its groups, lets fn change
// the group, and stores the organisation with the group's audit event.
func (s *Service) modifyGroup(ctx context.Context, org, name, action string, fn func(o *store.Org, g *store.Group) error) (api.Group, error) {
	if err := validateGroupPath(org, name); err != nil {
		return api.Group{}, err
	}
	now := s.now()
	var out api.Group
	err := s.update(ctx, func(tx *store.Tx) error {
		o, err := getOrg(tx, org)
		if err != nil {
			return err
		}
		g, err := getGroup(o, name)
		if err != nil {
			return err
		}
		before := groupToAPI(o, g, api.PeerCounts{})
		if err := fn(o, g); err != nil {
			return err
		}
		g.UpdatedAt, o.UpdatedAt = now, now
		if err := tx.PutOrg(o); err != nil {
			return err
		}
		counts, err := groupCounts(tx, org)
		if err != nil {
			return err
		}
		out = groupToAPI(o, g, counts[name])
		return tx.Audit(now, Actor(ctx), action, org+"/"+name, before, groupToAPI(o, g, api.PeerCounts{}))
	})
	return out, err
}

// CreateGroup adds an access group to an organisation, with grants within
// the organisation's.
func (s *Service) CreateGroup(ctx context.Context, org string, req api.CreateGroupRequest) (api.Group, error) {
	if err := validateGroupPath(org, req.Name); err != nil {
		return api.Group{}, err
	}
	if len(req.Grants) > maxGrants {
		return api.Group{}, api.Errorf(api.CodeInvalid, "%d grants in one request; the limit is %d", len(req.Grants), maxGrants)
	}
	gs, err := grant.ParseAll(req.Grants)
	if err != nil {
		return api.Group{}, invalid(err)
	}
	now := s.now()
	var out api.Group
	err = s.update(ctx, func(tx *store.Tx) error {
		o, err := getOrg(tx, org)
		if err != nil {
			return err
		}
		if o.Group(req.Name) != nil {
			return api.Errorf(api.CodeConflict, "organisation %q already has a group %q; see `extranetctl group show %s/%s`", org, req.Name, org, req.Name)
		}
		if len(o.Groups) >= maxGroups {
			return api.Errorf(api.CodeInvalid, "organisation %q has %d groups; the limit is %d", org, len(o.Groups), maxGroups)
		}
		if err := withinCeiling(o, gs); err != nil {
			return err
		}
		id, err := tx.NextGroupID()
		if err != nil {
			return err
		}
		o.Groups = append(o.Groups, store.Group{ID: id, Name: req.Name, Grants: gs, CreatedAt: now, CreatedBy: Actor(ctx), UpdatedAt: now})
		o.UpdatedAt = now
		if err := tx.PutOrg(o); err != nil {
			return err
		}
		out = groupToAPI(o, &o.Groups[len(o.Groups)-1], api.PeerCounts{})
		return tx.Audit(now, Actor(ctx), "group.create", org+"/"+req.Name, nil, out)
	})
	return out, err
}

// ListGroups returns an organisation's groups, the default group first.
func (s *Service) ListGroups(ctx context.Context, org string) ([]api.Group, error) {
	if err := validate.Name("org", org); err != nil {
		return nil, invalid(err)
	}
	var out []api.Group
	err := s.opts.DB.View(func(tx *store.Tx) error {
		o, err := getOrg(tx, org)
		if err != nil {
			return err
		}
		counts, err := groupCounts(tx, org)
		if err != nil {
			return err
		}
		for i := range o.Groups {
			out = append(out, groupToAPI(o, &o.Groups[i], counts[o.Groups[i].Name]))
		}
		return nil
	})
	return out, asErr(err)
}

// GetGroup returns one group.
func (s *Service) GetGroup(ctx context.Context, org, name string) (api.Group, error) {
	if err := validateGroupPath(org, name); err != nil {
		return api.Group{}, err
	}
	var out api.Group
	err := s.opts.DB.View(func(tx *store.Tx) error {
		o, err := getOrg(tx, org)
		if err != nil {
			return err
		}
		g, err := getGroup(o, name)
		if err != nil {
			return err
		}
		counts, err := groupCounts(tx, org)
		out = groupToAPI(o, g, counts[name])
		return err
	})
	return out, asErr(err)
}

func notDefault(o *store.Org, g *store.Group, verb string) error {
	if g.Name == store.DefaultGroup {
		return api.Errorf(api.CodeConflict, "the default group always has organisation %q's whole grant and cannot be %s; change the organisation's grants with `extranetctl org grant|ungrant %s`, or put peers in a group of their own", o.Name, verb, o.Name)
	}
	return nil
}

// GroupGrant adds grants to a group, each within the organisation's.
func (s *Service) GroupGrant(ctx context.Context, org, name string, req api.GrantsRequest) (api.Group, error) {
	gs, err := s.parseGrantList(req.Grants, true)
	if err != nil {
		return api.Group{}, err
	}
	return s.modifyGroup(ctx, org, name, "group.grant", func(o *store.Org, g *store.Group) error {
		if err := notDefault(o, g, "granted more"); err != nil {
			return err
		}
		if err := withinCeiling(o, gs); err != nil {
			return err
		}
		g.Grants = grant.Normalize(append(g.Grants, gs...))
		if len(g.Grants) > maxGrants {
			return api.Errorf(api.CodeInvalid, "group %s/%s would have %d grants; the limit is %d", org, name, len(g.Grants), maxGrants)
		}
		return nil
	})
}

// GroupUngrant removes grants from a group. Each must be granted exactly as
// written.
func (s *Service) GroupUngrant(ctx context.Context, org, name string, req api.GrantsRequest) (api.Group, error) {
	gs, err := s.parseGrantList(req.Grants, true)
	if err != nil {
		return api.Group{}, err
	}
	return s.modifyGroup(ctx, org, name, "group.ungrant", func(o *store.Org, g *store.Group) error {
		if err := notDefault(o, g, "narrowed"); err != nil {
			return err
		}
		kept, missing := removeGrants(g.Grants, gs)
		if missing != nil {
			return api.Errorf(api.CodeNotFound, "group %s/%s has no grant %s; its grants are %v", org, name, missing, grantStrings(g.Grants))
		}
		g.Grants = kept
		return nil
	})
}

// DeleteGroup removes a group. Its peers move to moveTo in the same
// transaction; without moveTo a group that has peers is not deleted.
func (s *Service) DeleteGroup(ctx context.Context, org, name, moveTo string) error {
	if err := validateGroupPath(org, name); err != nil {
		return err
	}
	if moveTo != "" {
		if err := validate.Name("group", moveTo); err != nil {
			return invalid(err)
		}
	}
	now := s.now()
	actor := Actor(ctx)
	return s.update(ctx, func(tx *store.Tx) error {
		o, err := getOrg(tx, org)
		if err != nil {
			return err
		}
		g, err := getGroup(o, name)
		if err != nil {
			return err
		}
		if g.Name == store.DefaultGroup {
			return api.Errorf(api.CodeConflict, "the default group of %q cannot be deleted; every organisation has one", org)
		}
		if moveTo != "" {
			if moveTo == name {
				return api.Errorf(api.CodeInvalid, "--move-to names the group being deleted; name another group of %q (%s)", org, groupNames(o))
			}
			if _, err := getGroup(o, moveTo); err != nil {
				return err
			}
		}
		var members []*store.Peer
		live := 0
		if err := tx.Peers(org, func(p *store.Peer) error {
			if p.Group == name {
				members = append(members, p)
				if p.State != api.StateRevoked {
					live++
				}
			}
			return nil
		}); err != nil {
			return err
		}
		if live > 0 && moveTo == "" {
			return api.Errorf(api.CodeConflict, "group %s/%s has %d peers; move them with `extranetctl peer move` or pass --move-to GROUP to move them all", org, name, live)
		}
		deleted := groupToAPI(o, g, api.PeerCounts{})
		for _, p := range members {
			// A revoked peer keeps a group that exists, for its history.
			to := moveTo
			if to == "" {
				to = store.DefaultGroup
			}
			if err := movePeer(tx, p, to, now, actor); err != nil {
				return err
			}
		}
		kept := o.Groups[:0:0]
		for _, have := range o.Groups {
			if have.Name != name {
				kept = append(kept, have)
			}
		}
		o.Groups, o.UpdatedAt = kept, now
		if err := tx.PutOrg(o); err != nil {
			return err
		}
		if err := s.endGroupEnrollment(tx, org, name, now, actor); err != nil {
			return err
		}
		return tx.Audit(now, actor, "group.delete", org+"/"+name, deleted, nil)
	})
}

// movePeer puts p in group to and records the event.
func movePeer(tx *store.Tx, p *store.Peer, to string, now time.Time, actor string) error {
	before := auditPeer(p)
	p.Group, p.UpdatedAt = to, now
	if err := tx.PutPeer(p); err != nil {
		return err
	}
	return tx.Audit(now, actor, "peer.move", p.ID(), before, auditPeer(p))
}

// MovePeer moves a peer to another group of its organisation. It keeps its
// keys and address; flows its new group does not allow are killed.
func (s *Service) MovePeer(ctx context.Context, org, name string, req api.MoveRequest) (api.Peer, error) {
	if err := validate.Name("group", req.Group); err != nil {
		return api.Peer{}, invalid(err)
	}
	return s.modifyPeer(ctx, org, name, "peer.move", func(_ *store.Tx, o *store.Org, p *store.Peer) error {
		if _, err := getGroup(o, req.Group); err != nil {
			return err
		}
		if p.Group == req.Group {
			return api.Errorf(api.CodeConflict, "peer %s is already in group %q", p.ID(), req.Group)
		}
		p.Group = req.Group
		return nil
	})
}
