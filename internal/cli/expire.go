package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/pkg/api"
)

func newExpireCmd(g *globals) *cobra.Command {
	var req api.ExpireRequest
	cmd := &cobra.Command{
		Use:   "expire",
		Short: "Suspend or revoke idle, unused and expired peers (run by cron or the systemd timer)",
		Long: `Retire access that is no longer used or no longer agreed:
  - idle:    the last handshake is older than --idle;
  - unused:  issued longer ago than --unused and never connected;
  - expired: past the peer's own expiry date, or its organisation's contract end.
Idle and unused peers get --action (suspend or revoke); expired ones are marked
expired (or revoked with --action revoke). Defaults come from extranetd's
config. Exit status 0 whenever it worked, also with nothing to do.`,
		Example: `  extranetctl expire --dry-run
  extranetctl expire --idle 30d --unused 14d --action suspend`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := g.client()
			// The audit log names the job, next to the user who runs it.
			c.Via = "expire"
			res, err := c.Expire(g.ctx(), req)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, res)
			}
			if len(res.Actions) == 0 {
				fmt.Fprintln(g.env.Out, "Nothing to expire.")
				return nil
			}
			verb := "DONE"
			if res.DryRun {
				verb = "WOULD"
			}
			t := newTable(g.env.Out, "TARGET", "FROM", verb, "WHY")
			for _, a := range res.Actions {
				t.row(a.Target, a.From, a.To, a.Reason)
			}
			return t.flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Idle, "idle", "", "suspend peers whose last handshake is older than this `DURATION` (90m, 36h, 30d, 2w)")
	f.StringVar(&req.Unused, "unused", "", "suspend peers issued longer ago than this `DURATION` that never connected")
	f.StringVar(&req.Action, "action", "", "suspend or revoke")
	f.BoolVar(&req.DryRun, "dry-run", false, "say what would happen and change nothing")
	_ = cmd.RegisterFlagCompletionFunc("action", cobra.FixedCompletions([]string{"suspend", "revoke"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
