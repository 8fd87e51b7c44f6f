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
}

// Activity returns the partner flows q matches, oldest first. A caller who
// may see only some organisations has them in q.Orgs; a query about
// another organisation is refused, not answered empty, so it cannot be
// mistaken for an organisation whose partners did nothing.
func (s *Service) Activity(ctx context.Context, q activity.Query) ([]api.Flow, error) {
	if s.opts.Activity == nil {
		if s.opts.ActivityOff != "" {
			return nil, api.Errorf(api.CodeNotFound, "activity logging is off: %s (extranetctl status; the daemon's log says more)", s.opts.ActivityOff)
		}
		return nil, api.Errorf(api.CodeNotFound, "activity logging is off: this extranetd keeps no log of partner activity; set activity-log: true in its config (or --activity-log) and restart it")
	}
	// Each read parses the log's files, up to hundreds of MB: a few at a
	// time, so that parallel queries cannot take both cores or the memory.
	select {
	case s.activityReads <- struct{}{}:
		defer func() { <-s.activityReads }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if q.Orgs != nil {
		for _, org := range []string{q.Org, orgOf(q.Peer)} {
			if org != "" && !slices.Contains(q.Orgs, org) {
				return nil, api.Errorf(api.CodeForbidden, "%s may not read the activity of organisation %s: that needs the role admin, auditor or sponsor of %s", Actor(ctx), org, org)
			}
		}
	}
	flows, err := s.opts.Activity.Read(q)
	if err != nil {
		return nil, asAPIError(err)
	}
	if q.Orgs != nil && s.opts.DB != nil {
		if flows, err = s.sinceMade(flows); err != nil {
			return nil, err
		}
	}
	if flows == nil {
		flows = []api.Flow{}
	}
	return flows, nil
}

// sinceMade leaves out the flows that ended before their organisation was
// made: those of a deleted organisation of the same name, which stay in
// the log for its retention and are not the new one's sponsor's to read.
func (s *Service) sinceMade(flows []api.Flow) ([]api.Flow, error) {
	made := map[string]time.Time{}
	err := s.opts.DB.View(func(tx *store.Tx) error {
		for _, f := range flows {
			if _, ok := made[f.Org]; ok {
				continue
			}
			o, err := tx.Org(f.Org)
			switch {
			case errors.Is(err, store.ErrNotFound):
				// Deleted since: none of its flows is anyone's now.
				made[f.Org] = time.Time{}
				continue
			case err != nil:
				return err
			}
			made[f.Org] = o.CreatedAt
		}
		return nil
	})
	if err != nil {
		return nil, asErr(err)
	}
	kept := flows[:0]
	for _, f := range flows {
		if at := made[f.Org]; !at.IsZero() && !f.Closed.Before(at) {
			kept = append(kept, f)
		}
	}
	return kept, nil
}

// orgOf is the organisation of a peer named ORG/NAME.
func orgOf(peer string) string {
	org, _, _ := strings.Cut(peer, "/")
	return org
}
