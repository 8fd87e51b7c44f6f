package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/internal/authz"
	"github.com/extranetgw/extranet/pkg/api"
)

func newRoleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "role",
		Aliases: []string{"roles"},
		Short:   "Manage who may do what: roles of unix users and @groups",
		Long: `Roles decide what each caller may do. The caller is the unix user that runs
extranetctl, as the kernel tells extranetd; roles go to users and to @groups.

  admin     everything
  sponsor   the peers of the organisations named with --org, nothing else
  auditor   read everything but secrets, and verify the audit log
  expirer   run expire, nothing else

root is always admin. A fresh install makes the socket group (@extranet) admin
and the expire timer's account (extranet-expire) expirer; see docs/permissions.md.`,
		RunE: groupRun,
	}
	cmd.AddCommand(newRoleAssignCmd(g), newRoleRevokeCmd(g), newRoleListCmd(g))
	return cmd
}

var completeRoles = func() cobra.CompletionFunc {
	names := make([]string, len(authz.Roles))
	for i, r := range authz.Roles {
		names[i] = string(r)
	}
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) != 1 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}()

func newRoleAssignCmd(g *globals) *cobra.Command {
	var orgs []string
	cmd := &cobra.Command{
		Use:   "assign SUBJECT ROLE",
		Short: "Give a user or @group a role",
		Example: `  extranetctl role assign @netops admin
  extranetctl role assign alice sponsor --org acme --org globex
  extranetctl role assign @audit auditor`,
		Args:              exactArgs(2, "a SUBJECT (user or @group) and a ROLE"),
		ValidArgsFunction: completeRoles,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.client().AssignRole(g.ctx(), api.RoleRequest{Subject: args[0], Role: args[1], Orgs: orgs})
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, a)
			}
			fmt.Fprintf(g.env.Out, "%s is now %s\n", a.Subject, roleText(a))
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&orgs, "org", nil, "organisation a sponsor sponsors (repeatable)")
	_ = cmd.RegisterFlagCompletionFunc("org", completeOrgs(g))
	return cmd
}

func newRoleRevokeCmd(g *globals) *cobra.Command {
	var orgs []string
	var force bool
	cmd := &cobra.Command{
		Use:   "revoke SUBJECT ROLE",
		Short: "Take a role from a user or @group (a sponsor's for some organisations only, with --org)",
		Example: `  extranetctl role revoke @extranet admin       # tighten a fresh install
  extranetctl role revoke alice sponsor --org globex`,
		Args:              exactArgs(2, "a SUBJECT (user or @group) and a ROLE"),
		ValidArgsFunction: completeRoles,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().RevokeRole(g.ctx(), api.RoleRequest{Subject: args[0], Role: args[1], Orgs: orgs, Force: force}); err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, struct{}{})
			}
			what := args[1]
			if len(orgs) > 0 {
				what += " of " + strings.Join(orgs, ", ")
			}
			fmt.Fprintf(g.env.Out, "%s is no longer %s\n", args[0], what)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&orgs, "org", nil, "organisation to stop sponsoring (repeatable); without it, the whole role goes")
	cmd.Flags().BoolVar(&force, "force", false, "revoke a user's last role of its own even though its groups' roles (admin, say) then apply to it")
	_ = cmd.RegisterFlagCompletionFunc("org", completeOrgs(g))
	return cmd
}

func newRoleListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List role assignments",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			roles, err := g.client().ListRoles(g.ctx())
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, roles)
			}
			if len(roles) == 0 {
				// The first start assigns only what exists then: the
				// socket group (none with --socket-group "") and the
				// expire timer's account. Say so, or an empty table
				// looks like a lost state.
				fmt.Fprintln(g.env.Out, "No role assignments: only root may do anything (root is always admin).")
				fmt.Fprintln(g.env.Out, "The first start assigns admin to the socket group and expirer to the extranet-expire account, where they exist; give roles with `extranetctl role assign`.")
				return nil
			}
			t := newTable(g.env.Out, "SUBJECT", "ROLE", "ORGANISATIONS")
			for _, a := range roles {
				t.row(a.Subject, a.Role, orDash(strings.Join(a.Orgs, ",")))
			}
			return t.flush()
		},
	}
}

func newWhoAmICmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who extranetd takes you for, and your roles",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w, err := g.client().WhoAmI(g.ctx())
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, w)
			}
			return fields(g.env.Out,
				"User", fmt.Sprintf("%s (uid %d)", w.User, w.UID),
				"Groups", orDash(strings.Join(w.Groups, ", ")),
				"Roles", orDash(strings.Join(w.Roles, "; ")),
			)
		},
	}
}

func roleText(a api.RoleAssignment) string {
	if len(a.Orgs) > 0 {
		return a.Role + " of " + strings.Join(a.Orgs, ", ")
	}
	return a.Role
}
