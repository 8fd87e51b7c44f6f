package service

import (
	"context"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// Switcher moves a cluster's active role on purpose; the Runtime of a
// gateway that can be in a cluster has it. Its errors are api errors.
type Switcher interface {
	Switchover(ctx context.Context) (api.Switchover, error)
}

// Switchover asks the cluster's active gateway to hand partners over to
// another (for patching, say), waits until one has them, and audits who
// asked.
func (s *Service) Switchover(ctx context.Context) (api.Switchover, error) {
	sw, ok := s.opts.Runtime.(Switcher)
	if !ok || sw == nil {
		return api.Switchover{}, api.Errorf(api.CodeConflict, "this gateway does not take turns answering partners: switchover needs a cluster started with --vip (docs/cluster.md)")
	}
	res, err := sw.Switchover(ctx)
	if res.From == "" && err != nil {
		// Nothing was asked of anyone.
		return res, err
	}
	// A switchover that failed half way still moved partners (the active
	// stepped down): it is audited all the same, with how it ended.
	outcome := struct {
		api.Switchover
		Error string `json:"error,omitempty"`
	}{Switchover: res}
	if err != nil {
		outcome.Error = err.Error()
	}
	if aerr := s.opts.DB.Update(func(tx *store.Tx) error {
		return tx.Audit(s.now(), Actor(ctx), "cluster.switchover", res.From, nil, outcome)
	}); err == nil {
		err = asErr(aerr)
	}
	return res, err
}
