package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/pkg/api"
)

func newOrgCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "org",
		Aliases: []string{"orgs", "organisation", "organization"},
		Short:   "Manage partner organisations and their grants",
		RunE:    groupRun,
	}
	cmd.AddCommand(
		newOrgCreateCmd(g), newOrgListCmd(g), newOrgShowCmd(g),
		newOrgGrantCmd(g, "grant"), newOrgGrantCmd(g, "ungrant"),
		newOrgStateCmd(g, "suspend"), newOrgStateCmd(g, "resume"),
		newOrgExtendCmd(g), newOrgDeleteCmd(g),
	)
	return cmd
}

// completeOrgs offers organisation names for shell completion.
func completeOrgs(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		orgs, err := g.client().ListOrgs(g.ctx())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, o := range orgs {
			if strings.HasPrefix(o.Name, toComplete) {
				out = append(out, o.Name)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func newOrgCreateCmd(g *globals) *cobra.Command {
	var req api.CreateOrgRequest
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an organisation",
		Example: `  extranetctl org create acme --display-name "ACME Corp" --contact noc@acme.example \
      --grant 10.20.0.0/24 --grant 10.20.5.10/32:tcp/443 --expires 2027-06-30`,
		Args: exactArgs(1, "an organisation NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			o, err := g.client().CreateOrg(g.ctx(), req)
			if err != nil {
				return err
			}
			return printOrg(g, o)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&req.Grants, "grant", nil, "`RESOURCE` to grant (repeatable): PREFIX[:PROTO[/PORT[-PORT]]]")
	f.StringVar(&req.DisplayName, "display-name", "", "human-readable name")
	f.StringVar(&req.Contact, "contact", "", "who to call about this partner")
	f.StringVar(&req.Expires, "expires", "", "end of contract: `DATE` (2027-06-30), RFC 3339 time or DURATION (365d)")
	f.BoolVar(&req.Force, "force", false, "grant loopback, link-local, multicast, reserved or very broad (shorter than /8) address space, which is refused without it")
	return cmd
}

func newOrgListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List organisations",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			orgs, err := g.client().ListOrgs(g.ctx())
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, orgs)
			}
			t := newTable(g.env.Out, "NAME", "STATE", "PEERS", "GRANTS", "BLOCKS", "EXPIRES")
			for _, o := range orgs {
				t.row(o.Name, o.State, fmt.Sprintf("%d/%d", o.Peers.Active, o.Peers.Total),
					orDash(strings.Join(o.Grants, ",")), orDash(strings.Join(o.Blocks, ",")), date(o.Expires))
			}
			return t.flush()
		},
	}
}

func newOrgShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "show NAME",
		Short:             "Show one organisation",
		Args:              exactArgs(1, "an organisation NAME"),
		ValidArgsFunction: completeOrgs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := g.client().GetOrg(g.ctx(), args[0])
			if err != nil {
				return err
			}
			return printOrg(g, o)
		},
	}
}

func printOrg(g *globals, o api.Org) error {
	if g.json() {
		return printJSON(g.env.Out, o)
	}
	return fields(g.env.Out,
		"Name", o.Name,
		"Display name", orDash(o.DisplayName),
		"Contact", orDash(o.Contact),
		"State", o.State,
		"Expires", date(o.Expires),
		"Grants", orDash(strings.Join(o.Grants, " ")),
		"Groups", groupsText(o.Groups),
		"Blocks", orDash(strings.Join(o.Blocks, " ")),
		"Peers", fmt.Sprintf("%d active, %d total", o.Peers.Active, o.Peers.Total),
		"Created", fmt.Sprintf("%s by %s", date(&o.CreatedAt), o.CreatedBy),
	)
}

// groupsText lists groups with what each reaches, e.g.
// "default (the organisation's), support: 10.20.0.10/32:tcp/22".
func groupsText(groups []api.GroupGrants) string {
	parts := make([]string, 0, len(groups))
	for _, gr := range groups {
		if gr.Name == api.DefaultGroup {
			parts = append(parts, gr.Name+" (the organisation's)")
			continue
		}
		parts = append(parts, gr.Name+": "+orDash(strings.Join(gr.Grants, " ")))
	}
	return orDash(strings.Join(parts, "; "))
}

func newOrgGrantCmd(g *globals, verb string) *cobra.Command {
	short := "Let an organisation reach more resources"
	if verb == "ungrant" {
		short = "Withdraw resources from an organisation and its groups (open connections to them are cut)"
	}
	var force bool
	cmd := &cobra.Command{
		Use:               verb + " NAME RESOURCE...",
		Short:             short,
		Example:           "  extranetctl org " + verb + " acme 10.20.0.0/24 10.30.0.0/16:udp/5000-5010 10.9.0.0/16:icmp",
		Args:              minArgs(2, "an organisation NAME and at least one RESOURCE"),
		ValidArgsFunction: completeOrgs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client()
			var o api.Org
			var err error
			if verb == "grant" {
				o, err = c.Grant(g.ctx(), args[0], args[1:], force)
			} else {
				o, err = c.Ungrant(g.ctx(), args[0], args[1:])
			}
			if err != nil {
				return err
			}
			return printOrg(g, o)
		},
	}
	if verb == "grant" {
		cmd.Flags().BoolVar(&force, "force", false, "grant loopback, link-local, multicast, reserved or very broad (shorter than /8) address space, which is refused without it")
	}
	return cmd
}

func newOrgStateCmd(g *globals, verb string) *cobra.Command {
	short := "Withdraw all access of an organisation, keeping its peers"
	if verb == "resume" {
		short = "Restore a suspended organisation"
	}
	return &cobra.Command{
		Use:               verb + " NAME",
		Short:             short,
		Args:              exactArgs(1, "an organisation NAME"),
		ValidArgsFunction: completeOrgs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := g.client().OrgAction(g.ctx(), args[0], verb)
			if err != nil {
				return err
			}
			return printOrg(g, o)
		},
	}
}

func newOrgExtendCmd(g *globals) *cobra.Command {
	var expires string
	cmd := &cobra.Command{
		Use:               "extend NAME --expires DATE|DURATION|never",
		Short:             "Move the end of an organisation's contract",
		Args:              exactArgs(1, "an organisation NAME"),
		ValidArgsFunction: completeOrgs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			if expires == "" {
				return usagef("pass --expires DATE, DURATION or never")
			}
			o, err := g.client().ExtendOrg(g.ctx(), args[0], expires)
			if err != nil {
				return err
			}
			return printOrg(g, o)
		},
	}
	cmd.Flags().StringVar(&expires, "expires", "", "new end of contract: DATE, RFC 3339 time, DURATION, or never")
	return cmd
}

func newOrgDeleteCmd(g *globals) *cobra.Command {
	var force, yes bool
	cmd := &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete an organisation and its peers",
		Long:              "Delete an organisation. It refuses while the organisation has active peers, unless --force, which revokes them (for good) first.",
		Args:              exactArgs(1, "an organisation NAME"),
		ValidArgsFunction: completeOrgs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "deleting organisation " + args[0]
			if force {
				what += " and revoking its active peers"
			}
			if !yes {
				// A caller who may not see the organisation, or a name
				// that does not exist, is told so before being asked.
				if _, err := g.client().GetOrg(g.ctx(), args[0]); err != nil {
					return err
				}
				// One who may see it but not delete it, too.
				if err := g.client().Checking().DeleteOrg(g.ctx(), args[0], force); err != nil {
					return err
				}
			}
			if err := confirm(g, yes, what, args[0]); err != nil {
				return err
			}
			if err := g.client().DeleteOrg(g.ctx(), args[0], force); err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, map[string]string{"deleted": args[0]})
			}
			fmt.Fprintf(g.env.Out, "Deleted organisation %s.\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "revoke active peers and delete anyway")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
