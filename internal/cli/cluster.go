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
			if err := fields(g.env.Out,
				"This gateway", c.Name,
				"etcd", strings.Join(c.EtcdEndpoints, ", "),
				"Copy", clusterCopy(c),
				"Following", fmt.Sprintf("%s (since %s)", c.Following, c.Since.UTC().Format(time.RFC3339)),
			); err != nil {
				return err
			}
			fmt.Fprintln(g.env.Out)
			if c.Gateways == nil {
				fmt.Fprintln(g.env.Out, "Gateways: unknown (etcd did not answer)")
				return nil
			}
			t := newTable(g.env.Out, "GATEWAY", "VERSION", "STARTED")
			for _, gw := range c.Gateways {
				name := gw.Name
				if name == c.Name {
					name += " (this one)"
				}
				t.row(name, gw.Version, gw.Started.UTC().Format(time.RFC3339)+" ("+ago(g.env.Now(), gw.Started)+")")
			}
			return t.flush()
		},
	})
	return cmd
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
