package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/pkg/api"
)

func newGroupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "group",
		Aliases: []string{"groups"},
		Short:   "Manage access groups inside an organisation, addressed as ORG/GROUP",
		Long: `An organisation's peers are in access groups, each reaching its own part of
what the organisation was granted (org grant sets that ceiling). Every
organisation has a group "default", which reaches the organisation's whole
grant; new peers join it unless peer issue says --group.`,
		RunE: groupRun,
	}
	cmd.AddCommand(newGroupCreateCmd(g), newGroupListCmd(g), newGroupShowCmd(g),
		newGroupGrantCmd(g, "grant"), newGroupGrantCmd(g, "ungrant"), newGroupDeleteCmd(g))
	return cmd
}

func splitGroup(s string) (string, string, error) {
	return splitPath("group", "ORG/GROUP", "acme/support", s)
}

// completeGroups offers ORG/ as the first part, then the groups of ORG.
func completeGroups(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		org, _, hasOrg := strings.Cut(toComplete, "/")
		if !hasOrg {
			orgs, _ := completeOrgs(g)(cmd, nil, toComplete)
			for i := range orgs {
				orgs[i] += "/"
			}
			return orgs, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
		}
		return groupsOf(g, org, org+"/", toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// groupsOf lists prefix+GROUP for the groups of org that start like
// toComplete.
func groupsOf(g *globals, org, prefix, toComplete string) []string {
	groups, err := g.client().ListGroups(g.ctx(), org)
	if err != nil {
		return nil
	}
	var out []string
	for _, gr := range groups {
		if s := prefix + gr.Name; strings.HasPrefix(s, toComplete) {
			out = append(out, s)
		}
	}
	return out
}

// completeGroupFlag offers the groups of the organisation of the peer
// named first on the command line, for --group.
func completeGroupFlag(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		org, _, _ := strings.Cut(args[0], "/")
		return groupsOf(g, org, "", toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

func newGroupCreateCmd(g *globals) *cobra.Command {
	var grants []string
	cmd := &cobra.Command{
		Use:   "create ORG/GROUP",
		Short: "Create an access group, with grants within its organisation's",
		Example: `  extranetctl group create acme/support --grant 10.20.0.10/32:tcp/22 --grant 10.20.0.11/32:tcp/22
  extranetctl group create acme/sales --grant 10.20.5.10/32:tcp/443`,
		Args: exactArgs(1, "a group as ORG/GROUP"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			orgs, dir := completeOrgs(g)(cmd, args, toComplete)
			for i := range orgs {
				orgs[i] += "/"
			}
			return orgs, dir | cobra.ShellCompDirectiveNoSpace
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitGroup(args[0])
			if err != nil {
				return err
			}
			gr, err := g.client().CreateGroup(g.ctx(), org, api.CreateGroupRequest{Name: name, Grants: grants})
			if err != nil {
				return err
			}
			return printGroup(g, gr)
		},
	}
	cmd.Flags().StringArrayVar(&grants, "grant", nil, "`RESOURCE` the group reaches (repeatable), within the organisation's grants: PREFIX[:PROTO[/PORT[-PORT]]]")
	return cmd
}

func newGroupListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "list ORG",
		Aliases:           []string{"ls"},
		Short:             "List an organisation's access groups",
		Args:              exactArgs(1, "an organisation NAME"),
		ValidArgsFunction: completeOrgs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			groups, err := g.client().ListGroups(g.ctx(), args[0])
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, groups)
			}
			t := newTable(g.env.Out, "GROUP", "PEERS", "GRANTS")
			for _, gr := range groups {
				t.row(gr.Org+"/"+gr.Name, fmt.Sprintf("%d/%d", gr.Peers.Active, gr.Peers.Total), groupGrantsText(gr, ","))
			}
			return t.flush()
		},
	}
}

func groupGrantsText(gr api.Group, sep string) string {
	s := orDash(strings.Join(gr.Grants, sep))
	if gr.Default {
		s += " (the organisation's)"
	}
	return s
}

func newGroupShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "show ORG/GROUP",
		Short:             "Show one access group",
		Args:              exactArgs(1, "a group as ORG/GROUP"),
		ValidArgsFunction: completeGroups(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitGroup(args[0])
			if err != nil {
				return err
			}
			gr, err := g.client().GetGroup(g.ctx(), org, name)
			if err != nil {
				return err
			}
			return printGroup(g, gr)
		},
	}
}

func printGroup(g *globals, gr api.Group) error {
	if g.json() {
		return printJSON(g.env.Out, gr)
	}
	return fields(g.env.Out,
		"Group", gr.Org+"/"+gr.Name,
		"Grants", groupGrantsText(gr, " "),
		"Peers", fmt.Sprintf("%d active, %d total", gr.Peers.Active, gr.Peers.Total),
		"Created", fmt.Sprintf("%s by %s", date(&gr.CreatedAt), gr.CreatedBy),
	)
}

func newGroupGrantCmd(g *globals, verb string) *cobra.Command {
	short := "Let a group reach more of its organisation's grants"
	if verb == "ungrant" {
		short = "Withdraw resources from a group (its peers' open connections to them are cut)"
	}
	return &cobra.Command{
		Use:               verb + " ORG/GROUP RESOURCE...",
		Short:             short,
		Example:           "  extranetctl group " + verb + " acme/support 10.20.0.12/32:tcp/22",
		Args:              minArgs(2, "a group as ORG/GROUP and at least one RESOURCE"),
		ValidArgsFunction: completeGroups(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitGroup(args[0])
			if err != nil {
				return err
			}
			c := g.client()
			var gr api.Group
			if verb == "grant" {
				gr, err = c.GroupGrant(g.ctx(), org, name, args[1:])
			} else {
				gr, err = c.GroupUngrant(g.ctx(), org, name, args[1:])
			}
			if err != nil {
				return err
			}
			return printGroup(g, gr)
		},
	}
}

func newGroupDeleteCmd(g *globals) *cobra.Command {
	var moveTo string
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete ORG/GROUP [--move-to GROUP]",
		Short: "Delete an access group",
		Long: `Delete an access group. It refuses while the group has peers, unless
--move-to names the group they move to; their connections that group does
not allow are cut.`,
		Args:              exactArgs(1, "a group as ORG/GROUP"),
		ValidArgsFunction: completeGroups(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitGroup(args[0])
			if err != nil {
				return err
			}
			what := "deleting group " + args[0]
			if moveTo != "" {
				what += " and moving its peers to " + org + "/" + moveTo
			}
			if !yes {
				// A caller who may not see the group, or a name that
				// does not exist, is told so before being asked.
				if _, err := g.client().GetGroup(g.ctx(), org, name); err != nil {
					return err
				}
				// One who may see it but not delete it, too.
				if err := g.client().Checking().DeleteGroup(g.ctx(), org, name, moveTo); err != nil {
					return err
				}
			}
			if err := confirm(g, yes, what, args[0]); err != nil {
				return err
			}
			if err := g.client().DeleteGroup(g.ctx(), org, name, moveTo); err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, map[string]string{"deleted": args[0]})
			}
			fmt.Fprintf(g.env.Out, "Deleted group %s.\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&moveTo, "move-to", "", "the group of the same organisation its peers move to")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.RegisterFlagCompletionFunc("move-to", func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return completeGroupFlag(g)(cmd, args, toComplete)
	})
	return cmd
}

func newPeerMoveCmd(g *globals) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "move ORG/NAME --group GROUP",
		Short: "Move a peer to another access group of its organisation",
		Long: `Move a peer to another access group of its organisation. It keeps its keys
and address; its connections the new group does not allow are cut at once.
Its config routes the old group's grants until the partner imports the one
` + "`peer config`" + ` prints now (without the private key).`,
		Example:           "  extranetctl peer move acme/bob --group sales",
		Args:              exactArgs(1, "a peer as ORG/NAME"),
		ValidArgsFunction: completePeers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitPeer(args[0])
			if err != nil {
				return err
			}
			if group == "" {
				return usagef("pass --group GROUP; `extranetctl group list %s` lists them", org)
			}
			p, err := g.client().MovePeer(g.ctx(), org, name, group)
			if err != nil {
				return err
			}
			return printPeer(g, p)
		},
	}
	cmd.Flags().StringVar(&group, "group", "", "the access group to move to")
	cmd.RegisterFlagCompletionFunc("group", completeGroupFlag(g))
	return cmd
}
