package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/pkg/api"
)

func newClusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "The state this gateway shares with others (docs/cluster.md)",
		Args:  noArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show the gateways that share the state, and how this one's copy stands",
		Long: `Show the gateways that share this one's state through etcd, and whether
this gateway's copy follows the cluster's changes and holds the newest
state. A gateway whose state is its own (no --etcd-endpoints) says so and
exits 1.`,
		Example: `  extranetctl cluster status
  extranetctl cluster status -o json | jq .copy_revision`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := g.client().Status(g.ctx())
			if err != nil {
				return err
			}
			c := st.Cluster
			if c == nil {
				return errors.New("this gateway's state is its own: it shares none through etcd (see docs/cluster.md to make a cluster; a sponsor's view leaves the cluster out)")
			}
			if g.json() {
				return printJSON(g.env.Out, c)
			}
			kv := []string{
				"This gateway", c.Name,
				"etcd", strings.Join(c.EtcdEndpoints, ", "),
				"Copy", clusterCopy(c),
				"Following", fmt.Sprintf("%s (since %s)", c.Following, c.Since.UTC().Format(time.RFC3339)),
			}
			if c.Role != "" {
				role := c.Role
				if c.Role == "standby" && c.Ready {
					role += " (ready to take over)"
				} else if c.Role == "standby" {
					role += " (not ready to take over yet: it waits a while after it reaches etcd)"
				}
				kv = append(kv, "Role", role, "Active", clusterActive(c))
			}
			if err := fields(g.env.Out, kv...); err != nil {
				return err
			}
			if len(c.Failovers) > 0 {
				fmt.Fprintln(g.env.Out)
				t := newTable(g.env.Out, "EPOCH", "FROM", "TO", "AT")
				for _, f := range c.Failovers {
					from := f.From
					if from == "" {
						from = "-"
					}
					t.row(fmt.Sprint(f.Epoch), from, f.To, f.At.UTC().Format(time.RFC3339)+" ("+ago(g.env.Now(), f.At)+")")
				}
				if err := t.flush(); err != nil {
					return err
				}
			}
			fmt.Fprintln(g.env.Out)
			if c.Gateways == nil {
				fmt.Fprintln(g.env.Out, "Gateways: unknown (etcd did not answer)")
				return nil
			}
			cols := []string{"GATEWAY", "VERSION", "STARTED"}
			if c.Role != "" {
				cols = append(cols, "ROLE")
			}
			t := newTable(g.env.Out, cols...)
			for _, gw := range c.Gateways {
				name := gw.Name
				if name == c.Name {
					name += " (this one)"
				}
				row := []string{name, gw.Version, gw.Started.UTC().Format(time.RFC3339) + " (" + ago(g.env.Now(), gw.Started) + ")"}
				if c.Role != "" {
					role := "standby"
					if gw.Name == c.Active {
						role = "active"
					}
					row = append(row, role)
				}
				t.row(row...)
			}
			return t.flush()
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "switchover",
		Short: "Hand partners over from the active gateway to another (for patching, say)",
		Long: `Ask the cluster's active gateway to hand the role over: it takes its link
down and releases the address partners dial, then a standby takes both and
starts the handshakes with the partners seen lately, which come back within
about a second. Works through any gateway of the cluster; it waits until
another holds the role, and exits 1 if none took it (no other gateway runs
with --vip, say), in which case the active takes the role back.`,
		Example: `  extranetctl cluster switchover
  extranetctl cluster switchover -o json | jq -r .to`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := g.client().Switchover(g.ctx())
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, res)
			}
			fmt.Fprintf(g.env.Out, "%s handed partners over to %s (epoch %d)\n", res.From, res.To, res.Epoch)
			return nil
		},
	})
	return cmd
}

// clusterActive names the gateway that answers partners, and its epoch.
func clusterActive(c *api.ClusterStatus) string {
	if c.Active == "" {
		return "none (etcd did not answer, or the role is moving)"
	}
	return fmt.Sprintf("%s (epoch %d)", c.Active, c.Epoch)
}

// clusterCopy says whether the copy holds the cluster's newest state.
func clusterCopy(c *api.ClusterStatus) string {
	switch {
	case c.ClusterRevision == 0:
		return fmt.Sprintf("at revision %d; the cluster's is unknown (etcd did not answer)", c.CopyRevision)
	case c.ClusterRevision == c.CopyRevision:
		return fmt.Sprintf("at revision %d, the cluster's newest", c.CopyRevision)
	default:
		return fmt.Sprintf("at revision %d; the cluster's is %d: BEHIND", c.CopyRevision, c.ClusterRevision)
	}
}
