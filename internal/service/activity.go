package service

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/activity"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// ActivityReader reads the partner activity log (activity.Log).
type ActivityReader interface {
	Read(activity.Query) ([]api.Flow, error)
	Each(activity.Query, func(api.Flow)) error
}

// Activity returns the partner flows q matches, oldest first. A caller who
// may see only some organisations has them in q.Orgs; a query about
// another organisation is refused, not answered empty, so it cannot be
// mistaken for an organisation whose partners did nothing.
func (s *Service) Activity(ctx context.Context, q activity.Query) ([]api.Flow, error) {
	release, err := s.activityRead(ctx, q)
	if err != nil {
		return nil, err
	}
	defer release()
	flows, err := s.opts.Activity.Read(q)
	if err != nil {
		return nil, asAPIError(err)
	}
	if q.Orgs != nil && s.opts.DB != nil {
		keep, err := s.sinceMade(q.Orgs)
		if err != nil {
			return nil, err
		}
		flows = slices.DeleteFunc(flows, func(f api.Flow) bool { return !keep(f) })
	}
	if flows == nil {
		flows = []api.Flow{}
	}
	return flows, nil
}

// ActivityTop adds up every record q matches (q.Limit aside) into the n
// destinations and peers that moved the most bytes and those refused the
// most attempts. Who may ask about what is as for Activity.
func (s *Service) ActivityTop(ctx context.Context, q activity.Query, n int) (api.ActivityTop, error) {
	release, err := s.activityRead(ctx, q)
	if err != nil {
		return api.ActivityTop{}, err
	}
	defer release()
	keep := func(api.Flow) bool { return true }
	if q.Orgs != nil && s.opts.DB != nil {
		if keep, err = s.sinceMade(q.Orgs); err != nil {
			return api.ActivityTop{}, err
		}
	}
	t := activity.NewTally()
	if err := s.opts.Activity.Each(q, func(f api.Flow) {
		if keep(f) {
			t.Add(f)
		}
	}); err != nil {
		return api.ActivityTop{}, asAPIError(err)
	}
	top := t.Top(n)
	top.Since, top.Until = q.Since, q.Until
	return top, nil
}

// activityRead checks that the log is on and that q stays within the
// caller's organisations, and takes one of the few reads that may parse
// the log at once; release gives it back.
func (s *Service) activityRead(ctx context.Context, q activity.Query) (release func(), err error) {
	if s.opts.Activity == nil {
		if s.opts.ActivityOff != "" {
			return nil, api.Errorf(api.CodeNotFound, "activity logging is off: %s (extranetctl status; the daemon's log says more)", s.opts.ActivityOff)
		}
		return nil, api.Errorf(api.CodeNotFound, "activity logging is off: this extranetd keeps no log of partner activity; set activity-log: true in its config (or --activity-log) and restart it")
	}
	if q.Orgs != nil {
		for _, org := range []string{q.Org, orgOf(q.Peer)} {
			if org != "" && !slices.Contains(q.Orgs, org) {
				return nil, api.Errorf(api.CodeForbidden, "%s may not read the activity of organisation %s: that needs the role admin, auditor or sponsor of %s", Actor(ctx), org, org)
			}
		}
	}
	// Each read parses the log's files, up to hundreds of MB: a few at a
	// time, so that parallel queries cannot take both cores or the memory.
	select {
	case s.activityReads <- struct{}{}:
		return func() { <-s.activityReads }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sinceMade returns whether a flow ended since its organisation, one of
// orgs, was made: one that ended before is of a deleted organisation of
// the same name, which stays in the log for its retention and is not the
// new one's sponsor's to read.
func (s *Service) sinceMade(orgs []string) (func(api.Flow) bool, error) {
	made := map[string]time.Time{}
	err := s.opts.DB.View(func(tx *store.Tx) error {
		for _, name := range orgs {
			o, err := tx.Org(name)
			switch {
			case errors.Is(err, store.ErrNotFound):
				continue
			case err != nil:
				return err
			}
			made[name] = o.CreatedAt
		}
		return nil
	})
	if err != nil {
		return nil, asErr(err)
	}
	return func(f api.Flow) bool { at := made[f.Org]; return !at.IsZero() && !f.Closed.Before(at) }, nil
}

// orgOf is the organisation of a peer named ORG/NAME.
func orgOf(peer string) string {
	org, _, _ := strings.Cut(peer, "/")
	return org
}
