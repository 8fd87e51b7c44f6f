package service

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// ScanEvidence is what the audit log keeps of a scan: enough for an admin to
// judge the suspension without the activity log.
type ScanEvidence struct {
	Address string `json:"address"`
	// Distinct destinations the firewall refused within Window.
	Distinct int      `json:"distinct_refused"`
	Window   string   `json:"window"`
	Sample   []string `json:"sample"`
	// Action is what the gateway did: suspended, or only warned (below
	// the suspension threshold, in observe mode, or for a peer that was
	// not active).
	Action string `json:"action"`
}

// DaemonActor is who the audit log names for what the gateway decided
// alone: a scan's suspension, audit retention, a drift repair.
const DaemonActor = "extranetd"

// Scanned records a scan by the peer org/name: a warning in the audit log,
// or, with suspend, the peer's suspension, whose audit event carries the
// evidence. Its flows die with the suspension, as with an admin's. It
// says whether it suspended the peer (not when it was not active).
func (s *Service) Scanned(ctx context.Context, org, name string, ev ScanEvidence, suspend bool) (bool, error) {
	now := s.now()
	suspended := false
	// update waits for the data plane to follow, as for an admin's
	// suspension: the peer's flows are dead when it returns.
	err := s.update(ctx, func(tx *store.Tx) error {
		p, err := getPeer(tx, org, name)
		if err != nil {
			return err
		}
		if !suspend || p.State != api.StateActive {
			ev.Action = "warned"
			return tx.Audit(now, DaemonActor, "peer.scan", p.ID(), nil, ev)
		}
		ev.Action = "suspended"
		before := auditPeer(p)
		p.State, p.UpdatedAt = api.StateSuspended, now
		p.Suspension = fmt.Sprintf("scan: refused at %d destinations within %s (%s), e.g. %s", ev.Distinct, ev.Window, now.Format(time.RFC3339), strings.Join(ev.Sample[:min(3, len(ev.Sample))], ", "))
		if err := tx.PutPeer(p); err != nil {
			return err
		}
		suspended = true
		return tx.Audit(now, DaemonActor, "peer.suspend", p.ID(), before, scanSuspension{Peer: auditPeer(p), Evidence: ev})
	})
	if err != nil && notApplied(err) == "" {
		return false, err
	}
	// Saved (in force, or not yet: the reconciler keeps trying).
	return suspended, err
}

// scanSuspension is the after-image of an automatic suspension.
type scanSuspension struct {
	Peer     any          `json:"peer"`
	Evidence ScanEvidence `json:"evidence"`
}
