package cli

import (
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
			st, err := g.client().Status(g.ctx())
			deadline := g.env.Now().Add(wait)
			// Only "nothing listens" is worth waiting out; a refusal or a
			// failed reconcile will not change by asking again.
			for errors.Is(err, client.ErrDaemonDown) && g.env.Now().Before(deadline) {
				time.Sleep(statusPoll)
				st, err = g.client().Status(g.ctx())
			}
			if err != nil {
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
			return fields(g.env.Out, append(kv, "Version", st.Version)...)
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to `DURATION` (10s, 1m) for a daemon that is starting")
	return cmd
}

// statusPoll is how often status --wait asks again.
const statusPoll = 100 * time.Millisecond
