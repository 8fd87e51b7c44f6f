package service

import (
	"context"
	"fmt"
	"os/user"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/authz"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/validate"
	"github.com/extranetgw/extranet/pkg/api"
)

// unixName is what useradd and groupadd accept by default.
var unixName = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,31}\$?$`)

// checkSubject validates a user name or @group, and that it exists on this
// host: identity is the caller's unix user, so a typo would grant nobody
// and be hard to notice.
func checkSubject(subject string) error {
	name, isGroup := strings.CutPrefix(subject, "@")
	if !unixName.MatchString(name) {
		return fmt.Errorf("%q is not a user name or @group", subject)
	}
	if isGroup {
		if _, err := user.LookupGroup(name); err != nil {
			return fmt.Errorf("no group %s on this host (roles go to unix users and @groups): %w", name, err)
		}
		return nil
	}
	if _, err := user.Lookup(name); err != nil {
		return fmt.Errorf("no user %s on this host (roles go to unix users and @groups): %w", name, err)
	}
	return nil
}

// AssignRole gives subject a role; a sponsor's, for the organisations
// named, added to those it sponsors already.
func (s *Service) AssignRole(ctx context.Context, req api.RoleRequest) (api.RoleAssignment, error) {
	role, err := authz.ParseRole(req.Role)
	if err != nil {
		return api.RoleAssignment{}, invalid(err)
	}
	if err := checkSubject(req.Subject); err != nil {
		return api.RoleAssignment{}, invalid(err)
	}
	switch {
	case role == authz.Sponsor && len(req.Orgs) == 0:
		return api.RoleAssignment{}, api.Errorf(api.CodeInvalid, "a sponsor sponsors organisations: name them with --org")
	case role != authz.Sponsor && len(req.Orgs) > 0:
		return api.RoleAssignment{}, api.Errorf(api.CodeInvalid, "--org is for sponsors; a %s's role covers every organisation", role)
	}
	var out authz.Assignment
	now := s.now()
	err = s.opts.DB.Update(func(tx *store.Tx) error {
		for _, o := range req.Orgs {
			if err := validate.Name("org", o); err != nil {
				return invalid(err)
			}
			if _, err := getOrg(tx, o); err != nil {
				return err
			}
		}
		old, err := tx.Role(req.Subject, role)
		if err != nil {
			return err
		}
		out = authz.Assignment{Subject: req.Subject, Role: role}
		if old != nil {
			out.Orgs = slices.Clone(old.Orgs)
		}
		for _, o := range req.Orgs {
			if !slices.Contains(out.Orgs, o) {
				out.Orgs = append(out.Orgs, o)
			}
		}
		sort.Strings(out.Orgs)
		if old != nil && slices.Equal(old.Orgs, out.Orgs) {
			return api.Errorf(api.CodeConflict, "%s is %s already", req.Subject, describe(*old))
		}
		if err := tx.PutRole(out); err != nil {
			return err
		}
		var before any
		if old != nil {
			before = old
		}
		return tx.Audit(now, Actor(ctx), "role.assign", req.Subject, before, out)
	})
	return roleToAPI(out), asErr(err)
}

// RevokeRole takes a role from subject; a sponsor's for the organisations
// named only, when some are.
func (s *Service) RevokeRole(ctx context.Context, req api.RoleRequest) error {
	role, err := authz.ParseRole(req.Role)
	if err != nil {
		return invalid(err)
	}
	if role != authz.Sponsor && len(req.Orgs) > 0 {
		return api.Errorf(api.CodeInvalid, "--org is for sponsors")
	}
	now := s.now()
	err = s.opts.DB.Update(func(tx *store.Tx) error {
		old, err := tx.Role(req.Subject, role)
		if err != nil {
			return err
		}
		if old == nil {
			return api.Errorf(api.CodeNotFound, "%s has no role %s", req.Subject, role)
		}
		left := authz.Assignment{Subject: old.Subject, Role: old.Role}
		for _, o := range old.Orgs {
			if len(req.Orgs) > 0 && !slices.Contains(req.Orgs, o) {
				left.Orgs = append(left.Orgs, o)
			}
		}
		for _, o := range req.Orgs {
			if !slices.Contains(old.Orgs, o) {
				return api.Errorf(api.CodeNotFound, "%s does not sponsor %s", req.Subject, o)
			}
		}
		var after any
		if len(left.Orgs) > 0 {
			after = left
			err = tx.PutRole(left)
		} else {
			if err := fallsBackTo(tx, req.Subject, role, req.Force); err != nil {
				return err
			}
			err = tx.DeleteRole(req.Subject, role)
		}
		if err != nil {
			return err
		}
		return tx.Audit(now, Actor(ctx), "role.revoke", req.Subject, old, after)
	})
	return asErr(err)
}

// fallsBackTo refuses to take a user's last role of its own when that
// would give it its groups' roles instead: a user's own roles replace its
// groups', so revoking alice's sponsorship would make her an admin through
// @extranet. With force it goes anyway.
func fallsBackTo(tx *store.Tx, subject string, role authz.Role, force bool) error {
	if strings.HasPrefix(subject, "@") || force {
		return nil
	}
	all, err := tx.Roles()
	if err != nil {
		return err
	}
	var groups []string
	if u, err := user.Lookup(subject); err == nil {
		ids, _ := u.GroupIds()
		for _, id := range ids {
			if g, err := user.LookupGroupId(id); err == nil {
				groups = append(groups, g.Name)
			}
		}
	}
	var own int
	var through []string
	for _, a := range all {
		switch {
		case a.Subject == subject:
			own++
		case strings.HasPrefix(a.Subject, "@") && slices.Contains(groups, a.Subject[1:]):
			through = append(through, describe(a)+" through "+a.Subject)
		}
	}
	if own > 1 || len(through) == 0 {
		return nil
	}
	return api.Errorf(api.CodeConflict, "%s is %s; without it, its own last role, %s would hold its groups' roles: %s. Assign it another role first, or revoke with --force", subject, role, subject, strings.Join(through, "; "))
}

// dropSponsorships takes a deleted organisation out of every sponsor's
// assignment, so that a new organisation of the same name does not go to
// the old sponsor. A sponsor left with none keeps its (empty) role: without
// a role of its own, a user would get its groups' roles instead.
func dropSponsorships(tx *store.Tx, org string, now time.Time, actor string) error {
	all, err := tx.Roles()
	if err != nil {
		return err
	}
	for _, a := range all {
		if a.Role != authz.Sponsor || !slices.Contains(a.Orgs, org) {
			continue
		}
		after := a
		after.Orgs = slices.DeleteFunc(slices.Clone(a.Orgs), func(o string) bool { return o == org })
		if err := tx.PutRole(after); err != nil {
			return err
		}
		if err := tx.Audit(now, actor, "role.revoke", a.Subject, a, after); err != nil {
			return err
		}
	}
	return nil
}

// ListRoles returns every assignment.
func (s *Service) ListRoles(ctx context.Context) ([]api.RoleAssignment, error) {
	out := []api.RoleAssignment{}
	err := s.opts.DB.View(func(tx *store.Tx) error {
		as, err := tx.Roles()
		for _, a := range as {
			out = append(out, roleToAPI(a))
		}
		return err
	})
	return out, asErr(err)
}

// Assignments returns every assignment, for deciding a request.
func (s *Service) Assignments() ([]authz.Assignment, error) {
	var out []authz.Assignment
	err := s.opts.DB.View(func(tx *store.Tx) error {
		var err error
		out, err = tx.Roles()
		return err
	})
	return out, err
}

// Refused records a request the caller's roles did not allow.
//
// org is the organisation the refused request was about, if any: it is
// kept apart from the target, which for a request about no organisation
// is the route's name, and a route may share its name with an
// organisation ("backup"). A sponsor reads the refusals about its own.
func (s *Service) Refused(ctx context.Context, action authz.Action, org, target, needs string) error {
	now := s.now()
	after := map[string]string{"action": string(action), "needs": needs}
	if org != "" {
		after["org"] = org
	}
	return s.opts.DB.Update(func(tx *store.Tx) error {
		return tx.Audit(now, Actor(ctx), "denied", target, nil, after)
	})
}

// BootstrapRoles makes the first assignments, once in the life of a state
// file, so that a fresh install works as before roles: root is admin
// anyway, the socket group (@extranet) becomes admin, and the account the
// expire timer runs as (extranet-expire) expirer, where they exist. An
// admin tightens this by revoking them; they are not made again.
func BootstrapRoles(db *store.DB, socketGroup, expireUser string, now time.Time) ([]authz.Assignment, error) {
	var made []authz.Assignment
	err := db.Update(func(tx *store.Tx) error {
		if tx.RolesBootstrapped() {
			return nil
		}
		if socketGroup != "" {
			if _, err := user.LookupGroup(socketGroup); err != nil {
				// Not yet: the start fails on the socket anyway, and the
				// next one, with the group made, bootstraps.
				return nil
			}
			made = append(made, authz.Assignment{Subject: "@" + socketGroup, Role: authz.Admin})
		}
		if _, err := user.Lookup(expireUser); err == nil {
			made = append(made, authz.Assignment{Subject: expireUser, Role: authz.Expirer})
		}
		at := now.UTC().Truncate(time.Second)
		for _, a := range made {
			if err := tx.PutRole(a); err != nil {
				return err
			}
			if err := tx.Audit(at, "extranetd", "role.assign", a.Subject, nil, a); err != nil {
				return err
			}
		}
		return tx.MarkRolesBootstrapped()
	})
	return made, err
}

func describe(a authz.Assignment) string {
	if a.Role == authz.Sponsor {
		return "sponsor of " + strings.Join(a.Orgs, ", ")
	}
	return string(a.Role)
}

func roleToAPI(a authz.Assignment) api.RoleAssignment {
	return api.RoleAssignment{Subject: a.Subject, Role: string(a.Role), Orgs: a.Orgs}
}
