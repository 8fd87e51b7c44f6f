package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/alert"
	"github.com/extranetgw/extranet/internal/refusals"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// alerts hands what people should hear of to the webhook; a nil *alerts
// (no webhook) takes everything and sends nothing.
type alerts struct {
	sender *alert.Sender
	// changed wakes the expiry watch after a change of the store.
	changed chan struct{}
	within  time.Duration
	log     *slog.Logger
}

func (a *alerts) send(al api.Alert) {
	if a != nil {
		a.sender.Send(al)
	}
}

// storeChanged wakes the expiry watch, so that a peer issued to expire in
// three days is announced at once rather than within the hour.
func (a *alerts) storeChanged() {
	if a == nil {
		return
	}
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// scanAlert is the alert of a scan report: suspended says the peer was,
// failed why a suspension called for was not done.
func scanAlert(s refusals.Scan, suspended bool, failed error) api.Alert {
	who := s.Peer
	if who == "" {
		who = "an address no peer holds"
	}
	al := api.Alert{Kind: api.AlertScanWarned, Org: s.Org, Peer: s.Peer,
		Details: map[string]any{"address": s.Address.String(), "distinct_refused": s.Distinct, "window": s.Window.String(), "sample": s.Sample}}
	what := fmt.Sprintf("%s (%s) was refused at %d distinct destinations within %s, e.g. %s", who, s.Address, s.Distinct, s.Window, strings.Join(s.Sample[:min(3, len(s.Sample))], ", "))
	switch {
	case suspended:
		al.Kind = api.AlertScanSuspended
		al.Text = what + fmt.Sprintf(": suspended by extranetd; `extranetctl peer resume %s` once someone has looked", s.Peer)
	case failed != nil:
		al.Text = what + fmt.Sprintf(": its suspension FAILED (%v); `extranetctl peer suspend %s`", failed, s.Peer)
	default:
		al.Text = what + ": it may be scanning (`extranetctl activity --denied --peer " + s.Peer + "`)"
	}
	return al
}

// watchExpiry announces active peers and organisations whose date comes
// within a.within: at start, hourly, and after each change of the store,
// each date once while the daemon runs (a restart announces what is still
// coming again). Many at once (peers issued together share a lifetime)
// make one alert that lists them, not a flood.
func (a *alerts) watchExpiry(ctx context.Context, db *store.DB) {
	if a == nil || a.within <= 0 {
		return
	}
	told := map[string]time.Time{}
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		now := time.Now()
		var due []expiring
		err := db.View(func(tx *store.Tx) error {
			if err := tx.Orgs(func(o *store.Org) error {
				due = a.add(due, expiring{key: "org " + o.Name, org: o.Name, what: "organisation " + o.Name + " and all its peers",
					fix: "extranetctl org extend " + o.Name + " --expires DATE"}, o.State, o.Expires, now)
				return nil
			}); err != nil {
				return err
			}
			return tx.Peers("", func(p *store.Peer) error {
				due = a.add(due, expiring{key: p.ID(), org: p.Org, peer: p.ID(), what: "peer " + p.ID(),
					fix: "extranetctl peer extend " + p.ID() + " --expires DATE"}, p.State, p.Expires, now)
				return nil
			})
		})
		if err != nil {
			a.log.Error("alert: reading expiry dates", "err", err)
		} else {
			// What is due now is all that is remembered: a date extended,
			// or a peer revoked, leaves nothing behind.
			next := make(map[string]time.Time, len(due))
			var fresh []expiring
			for _, e := range due {
				next[e.key] = e.at
				if t, ok := told[e.key]; !ok || !t.Equal(e.at) {
					fresh = append(fresh, e)
				}
			}
			told = next
			a.announce(fresh, now)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-a.changed:
		}
	}
}

// expiring is a peer or organisation whose date is near.
type expiring struct {
	key, org, peer, what, fix string
	at                        time.Time
}

func (a *alerts) add(due []expiring, e expiring, state string, expires *time.Time, now time.Time) []expiring {
	if state != api.StateActive || expires == nil || !expires.After(now) || expires.Sub(now) > a.within {
		return due
	}
	e.at = expires.UTC()
	return append(due, e)
}

// digestOver is how many expiring things get an alert each; more make one.
const digestOver = 5

func (a *alerts) announce(fresh []expiring, now time.Time) {
	if len(fresh) <= digestOver {
		for _, e := range fresh {
			a.send(api.Alert{Kind: api.AlertExpiring, Org: e.org, Peer: e.peer,
				Text:    fmt.Sprintf("%s expires on %s (in %s); to keep it: `%s`", e.what, e.at.Format(time.RFC3339), e.at.Sub(now).Round(time.Hour), e.fix),
				Details: map[string]any{"expires": e.at}})
		}
		return
	}
	slices.SortFunc(fresh, func(x, y expiring) int { return x.at.Compare(y.at) })
	var names []string
	type item struct {
		Org     string    `json:"org"`
		Peer    string    `json:"peer,omitempty"`
		Expires time.Time `json:"expires"`
	}
	var items []item
	for i, e := range fresh {
		if i < digestOver {
			names = append(names, fmt.Sprintf("%s (%s)", strings.TrimPrefix(e.what, "peer "), e.at.Format(time.RFC3339)))
		}
		if i < 1000 {
			items = append(items, item{Org: e.org, Peer: e.peer, Expires: e.at})
		}
	}
	a.send(api.Alert{Kind: api.AlertExpiring,
		Text: fmt.Sprintf("%d peers and organisations expire within %d days: %s and %d more; see `extranetctl peer list` and `extranetctl org list`, extend with `extranetctl peer extend` or `extranetctl org extend`",
			len(fresh), int(a.within.Hours()/24), strings.Join(names, ", "), len(fresh)-digestOver),
		Details: map[string]any{"expiring": items}})
}
