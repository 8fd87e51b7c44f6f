package service

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// AuditFilter narrows the audit log. Zero fields match everything.
type AuditFilter struct {
	Since, Until time.Time
	Org          string // events about the org or any of its peers
	Peer         string // ORG/NAME
	Action       string // exact action, or a prefix ending in "." such as "peer."
	Actor        string
}

func (f AuditFilter) match(ev *store.Event) bool {
	switch {
	case !f.Since.IsZero() && ev.Time.Before(f.Since):
		return false
	case !f.Until.IsZero() && ev.Time.After(f.Until):
		return false
	case f.Org != "" && ev.Target != f.Org && !strings.HasPrefix(ev.Target, f.Org+"/"):
		return false
	case f.Peer != "" && ev.Target != f.Peer:
		return false
	case f.Actor != "" && ev.Actor != f.Actor:
		return false
	case f.Action != "" && ev.Action != f.Action && !(strings.HasSuffix(f.Action, ".") && strings.HasPrefix(ev.Action, f.Action)):
		return false
	}
	return true
}

// Audit returns matching events, oldest first.
func (s *Service) Audit(ctx context.Context, f AuditFilter) ([]api.AuditEvent, error) {
	out := []api.AuditEvent{}
	err := s.opts.DB.View(func(tx *store.Tx) error {
		return tx.Events(0, func(ev *store.Event) error {
			if f.match(ev) {
				out = append(out, api.AuditEvent{
					Seq: ev.Seq, Time: ev.Time, Actor: ev.Actor, Action: ev.Action, Target: ev.Target,
					Before: rawOrNil(ev.Before), After: rawOrNil(ev.After), Hash: ev.Hash,
				})
			}
			return nil
		})
	})
	return out, asErr(err)
}

func rawOrNil(r json.RawMessage) any {
	if len(r) == 0 {
		return nil
	}
	return r
}

// VerifyAudit checks the hash chain.
func (s *Service) VerifyAudit(ctx context.Context) (api.VerifyResult, error) {
	var r api.VerifyResult
	err := s.opts.DB.View(func(tx *store.Tx) error {
		n := 0
		if err := tx.Events(0, func(*store.Event) error { n++; return nil }); err != nil {
			return err
		}
		at, why, err := tx.VerifyAudit()
		r = api.VerifyResult{OK: at == 0, Events: n, BrokenAt: at, Reason: why}
		return err
	})
	return r, asErr(err)
}

// Status combines the data plane's live view with counts from the store.
// The counts are of the organisations in visible alone (nil: all), for a
// caller who may see only those.
func (s *Service) Status(ctx context.Context, visible map[string]bool) (api.Status, error) {
	var st api.Status
	if s.opts.Runtime != nil {
		st = s.opts.Runtime.Status(visible == nil)
	}
	st.Endpoint = s.opts.Endpoint
	st.TunnelNetwork = s.opts.Plan.Network.String()
	st.Address = s.opts.Plan.Gateway().String()
	st.PublicKey = s.opts.GatewayPublicKey
	if visible != nil {
		// The activity log's counts are the whole gateway's: how much
		// other organisations' partners do is not a sponsor's to see; nor
		// is the cluster's make-up.
		st.Activity, st.Refusals, st.Alerts, st.Cluster = nil, nil, nil, nil
	}
	now := s.now()
	err := s.opts.DB.View(func(tx *store.Tx) error {
		if err := tx.Orgs(func(o *store.Org) error {
			if visible == nil || visible[o.Name] {
				st.Orgs++
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Peers("", func(p *store.Peer) error {
			if p.State == api.StateActive && (visible == nil || visible[p.Org]) {
				st.PeersActive++
				if p.LastHandshake != nil && now.Sub(*p.LastHandshake) < OnlineWindow {
					st.PeersOnline++
				}
			}
			return nil
		})
	})
	return st, asErr(err)
}

// OnlineWindow is how recent a handshake must be for a peer to count as
// online: WireGuard re-handshakes every two minutes while traffic flows.
const OnlineWindow = 3 * time.Minute

// TrimAudit drops audit events older than retention and records that it
// did, so the log says where it now starts and verification still holds.
func (s *Service) TrimAudit(ctx context.Context, retention time.Duration) (int, error) {
	now := s.now()
	before := now.Add(-retention)
	var n int
	err := s.opts.DB.Update(func(tx *store.Tx) error {
		var err error
		if n, err = tx.TrimAudit(before); err != nil || n == 0 {
			return err
		}
		return tx.Audit(now, Actor(ctx), "audit.trim", "audit", nil, map[string]any{"removed": n, "before": before})
	})
	return n, asErr(err)
}

// Backup returns a consistent copy of the state file, taken into an
// unlinked temporary file, open at its start, and its size. The copy
// holds every preshared key, so it is audited like a change.
func (s *Service) Backup(ctx context.Context) (*os.File, int64, error) {
	f, n, err := s.opts.DB.Snapshot()
	if err != nil {
		return nil, 0, asErr(err)
	}
	if err := s.auditRead(ctx, "state.backup", "state", map[string]any{"bytes": n}); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}

// auditRead records that a caller read secrets. It changes nothing the
// data plane follows, so nothing waits for a reconcile.
func (s *Service) auditRead(ctx context.Context, action, target string, what any) error {
	now := s.now()
	return asErr(s.opts.DB.Update(func(tx *store.Tx) error {
		return tx.Audit(now, Actor(ctx), action, target, nil, what)
	}))
}
