package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/internal/timespec"
	"github.com/extranetgw/extranet/pkg/client"
)

func newAuditCmd(g *globals) *cobra.Command {
	var q client.AuditQuery
	var since, until string
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show who changed what, oldest first",
		Example: `  extranetctl audit --since 24h
  extranetctl audit --org acme --action peer.
  extranetctl audit -o json | jq .`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if q.Since, q.Until, err = window(since, until, q.Peer, g.env.Now()); err != nil {
				return err
			}
			evs, err := g.client().Audit(g.ctx(), q)
			if err != nil {
				return err
			}
			if g.json() {
				// One event per line, so the log streams into jq or a SIEM.
				for _, ev := range evs {
					if err := printJSONLine(g, ev); err != nil {
						return err
					}
				}
				return nil
			}
			t := newTable(g.env.Out, "SEQ", "TIME", "ACTOR", "ACTION", "TARGET")
			for _, ev := range evs {
				t.row(fmt.Sprint(ev.Seq), ev.Time.UTC().Format(time.RFC3339), ev.Actor, ev.Action, ev.Target)
			}
			return t.flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "only events after this: `DURATION` ago (24h, 7d) or a time (2026-11-01, RFC 3339)")
	f.StringVar(&until, "until", "", "only events before this: `DURATION` ago or a time")
	f.StringVar(&q.Org, "org", "", "only events about this organisation or its peers")
	f.StringVar(&q.Peer, "peer", "", "only events about this peer (ORG/NAME)")
	f.StringVar(&q.Action, "action", "", "only this action (peer.revoke) or family (peer.)")
	f.StringVar(&q.Actor, "actor", "", "only changes made by this `USER`")
	_ = cmd.RegisterFlagCompletionFunc("org", completeOrgs(g))
	cmd.AddCommand(newAuditVerifyCmd(g))
	return cmd
}

func printJSONLine(g *globals, v any) error {
	raw, err := jsonCompact(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(g.env.Out, string(raw))
	return err
}

// pastTime reads a duration back from now, a day, or an RFC 3339 time.
func pastTime(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := timespec.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("%s %q is not a duration (24h, 7d), a date (2026-11-01) or an RFC 3339 time", flag, s)
}

func newAuditVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the audit log's hash chain and report the first broken link",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := g.client().VerifyAudit(g.ctx())
			if err != nil {
				return err
			}
			if g.json() {
				if err := printJSON(g.env.Out, r); err != nil {
					return err
				}
			} else if r.OK {
				fmt.Fprintf(g.env.Out, "Audit log intact: %d events, hash chain verified.\n", r.Events)
			}
			if !r.OK {
				return fmt.Errorf("audit log broken at event %d: %s", r.BrokenAt, r.Reason)
			}
			return nil
		},
	}
}

// window reads --since and --until of a log query, and checks its --peer.
func window(since, until, peer string, now time.Time) (from, to time.Time, err error) {
	if from, err = pastTime("--since", since, now); err != nil {
		return
	}
	if to, err = pastTime("--until", until, now); err != nil {
		return
	}
	if peer != "" {
		_, _, err = splitPeer(peer)
	}
	return
}
