package service

import (
	"errors"
	"fmt"
	"time"

	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/store"
)

// KeepPlan holds the daemon to the address plan the state was made with.
// Every block, every address and every issued config was cut from it, so
// a start whose --tunnel-network or --org-block-bits differ is refused:
// new blocks cut under another plan would overlap old ones, and one org's
// peers would match another org's rules. A state made before plans were
// stored takes plan once every block in it fits; the choice is audited.
func KeepPlan(db *store.DB, plan ipam.Plan, now time.Time) error {
	want := store.AddressPlan{Network: plan.Network, BlockBits: plan.BlockBits}
	return db.Update(func(tx *store.Tx) error {
		have, err := tx.AddressPlan()
		switch {
		case err == nil && have == want:
			return nil
		case err == nil:
			return fmt.Errorf("the state was made with --tunnel-network %s --org-block-bits %d, but this start asks for --tunnel-network %s --org-block-bits %d. "+
				"Every partner's block and address was cut from the first plan and cannot move under it: start with the first (flags or config file), "+
				"or set up a gateway with a new --state-dir under the new plan and issue partners new configs there",
				have.Network, have.BlockBits, want.Network, want.BlockBits)
		case !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("read the address plan: %w", err)
		}
		if err := tx.Orgs(func(o *store.Org) error {
			for _, b := range o.Blocks {
				if b.Bits() != plan.BlockBits || !plan.Network.Contains(b.Addr()) {
					return fmt.Errorf("organisation %q has block %s, which --tunnel-network %s --org-block-bits %d did not cut; start with the flags this state was made with", o.Name, b, plan.Network, plan.BlockBits)
				}
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tx.SetAddressPlan(want); err != nil {
			return fmt.Errorf("store the address plan: %w", err)
		}
		return tx.Audit(now, "extranetd", "plan.record", plan.Network.String(), nil, want)
	})
}
