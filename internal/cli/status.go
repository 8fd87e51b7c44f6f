package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/extranetgw/extranet/pkg/client"
	"github.com/spf13/cobra"
)

func jsonCompact(v any) ([]byte, error) { return json.Marshal(v) }

func newStatusCmd(g *globals) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the gateway: interface, keys, peers and reconcile state",
		Long: `Show the gateway: interface, keys, peers and reconcile state.

With --wait, a daemon that is still starting (its socket not there yet, or
not answering) is waited for, up to that long: for scripts that start
extranetd and go on with extranetctl.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := g.ctx()
			if wait > 0 {
				// The whole wait is bounded, a daemon that takes the
				// connection but never answers included.
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, wait)
				defer cancel()
			}
			st, err := g.client().Status(ctx)
			// Only "nothing listens" is worth waiting out; a refusal or a
			// failed reconcile will not change by asking again.
			for wait > 0 && errors.Is(err, client.ErrDaemonDown) && ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-time.After(statusPoll):
					st, err = g.client().Status(ctx)
				}
			}
			if err != nil {
				if ctx.Err() != nil && !errors.Is(err, client.ErrDaemonDown) {
					return fmt.Errorf("extranetd did not answer within %s: %w", wait, err)
				}
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, st)
			}
			last := "never"
			if st.LastReconcile != nil {
				last = st.LastReconcile.UTC().Format(time.RFC3339) + " (" + ago(g.env.Now(), *st.LastReconcile) + ")"
			}
			kv := []string{
				"Interface", fmt.Sprintf("%s (%s)", st.Interface, st.Mode),
				"Namespace", fmt.Sprintf("%s (host side %s; inspect with `ip netns exec %s iptables -S`)", st.NetNS, st.HostVeth, st.NetNS),
				"Public key", st.PublicKey,
				"Endpoint", orDash(st.Endpoint),
				"Listen port", fmt.Sprint(st.ListenPort),
				"Address", st.Address,
				"Tunnel network", st.TunnelNetwork,
				"Organisations", fmt.Sprint(st.Orgs),
				"Peers", fmt.Sprintf("%d active, %d online", st.PeersActive, st.PeersOnline),
				"Last reconcile", last,
				"Result", st.ReconcileResult,
				"Firewall", st.Firewall,
			}
			if len(st.EndedWhileDown) > 0 {
				since := "its last run (unknown)"
				if st.DownSince != nil {
					since = st.DownSince.UTC().Format(time.RFC3339)
				}
				kv = append(kv, "Ended while down", fmt.Sprintf("since %s: %s", since, strings.Join(st.EndedWhileDown, ", ")))
			}
			// Absent for a caller who sees some organisations only: the
			// counts are the whole gateway's.
			if a := st.Activity; a != nil && a.Off != "" {
				kv = append(kv, "Activity", "off: "+a.Off)
			} else if a != nil {
				line := fmt.Sprintf("%d flows recorded", a.Recorded)
				if a.Summarised > 0 {
					line = fmt.Sprintf("%d records written; %d flows of peers over their budget added up in summaries", a.Recorded, a.Summarised)
				}
				if a.Lost > 0 || a.Failed > 0 {
					line += fmt.Sprintf("; MISSING SOME: the event stream failed %d times, %d records not written", a.Lost, a.Failed)
				}
				if a.LastError != "" {
					line += " (last error: " + a.LastError + ")"
				}
				kv = append(kv, "Activity", line)
				if sl := a.Syslog; sl != nil {
					line := fmt.Sprintf("%d records sent to %s", sl.Sent, sl.Target)
					if sl.Dropped > 0 || sl.Failed > 0 {
						line += fmt.Sprintf("; NOT SENT: %d dropped while it was slow or away, %d failed", sl.Dropped, sl.Failed)
					}
					if sl.LastError != "" {
						line += " (last error: " + sl.LastError + ")"
					}
					kv = append(kv, "Syslog", line)
				}
			}
			if r := st.Refusals; r != nil {
				line := fmt.Sprintf("%d refused attempts logged, %d more past the log's rate; scans: %d warned, %d suspended (%s)", r.Refused, r.RateLimited, r.Warnings, r.Suspensions, r.Scan)
				if r.Lost > 0 {
					line += fmt.Sprintf("; MISSING SOME: the log socket failed %d times (last error: %s)", r.Lost, r.LastError)
				}
				kv = append(kv, "Refusals", line)
			}
			if a := st.Alerts; a != nil {
				line := fmt.Sprintf("webhook %s: %d sent, %d pending, %d failed attempts", a.Webhook, a.Sent, a.Pending, a.Failures)
				if a.Dropped > 0 {
					line += fmt.Sprintf("; %d DROPPED", a.Dropped)
				}
				if a.LastError != "" {
					line += " (last error: " + a.LastError + ")"
				}
				kv = append(kv, "Alerts", line)
			}
			if c := st.Cluster; c != nil {
				kv = append(kv, "Cluster", fmt.Sprintf("%s; following: %s (`extranetctl cluster status`)", clusterCopy(c), c.Following))
				if c.Role != "" {
					kv = append(kv, "Role", fmt.Sprintf("%s; active: %s", c.Role, clusterActive(c)))
				}
			}
			return fields(g.env.Out, append(kv, "Version", st.Version)...)
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to `DURATION` (10s, 1m) for a daemon that is starting")
	return cmd
}

// statusPoll is how often status --wait asks again.
const statusPoll = 100 * time.Millisecond
