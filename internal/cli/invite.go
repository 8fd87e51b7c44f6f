package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/wgconfig"
)

func newInviteCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "invite",
		Aliases: []string{"invites"},
		Short:   "Invite partners to enroll their devices themselves, addressed as ORG/ID",
		Long: `An invite is a link a partner opens in a browser to enroll a device: the
browser makes the key pair and sends only the public key, and a sponsor or
admin approves the request (extranetctl request). The link holds a token
that is shown once, when the invite is made, and kept only as a hash.`,
		RunE: groupRun,
	}
	cmd.AddCommand(newInviteCreateCmd(g), newInviteListCmd(g), newInviteRevokeCmd(g))
	return cmd
}

// splitID reads ORG/ID of invites and requests.
func splitID(kind, s string) (string, string, error) {
	return splitPath(kind, "ORG/ID", "acme/k7f3q2ab (see `extranetctl "+kind+" list`)", s)
}

func newInviteCreateCmd(g *globals) *cobra.Command {
	var req api.CreateInviteRequest
	var qr bool
	cmd := &cobra.Command{
		Use:   "create ORG",
		Short: "Make an enrollment link for an organisation's partners",
		Example: `  extranetctl invite create acme --group support --devices 3 --expires 72h --contact anna@acme.example
  extranetctl invite create acme --qr              # the link as a QR code, for a phone`,
		Args:              exactArgs(1, "an organisation NAME"),
		ValidArgsFunction: completeOrgs(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Devices < 1 {
				return usagef("--devices %d: an invite enrolls at least one device", req.Devices)
			}
			out, err := g.client().CreateInvite(g.ctx(), args[0], req)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, out)
			}
			i := out.Invite
			approval := ""
			if i.AutoApprove {
				approval = ", approved without review"
			}
			fmt.Fprintf(g.env.ErrOut, "Invite %s: %d device(s) into %s/%s until %s%s. The link is shown only now; send it to the partner by a channel you trust.\n",
				i.ID, i.Devices, i.Org, i.Group, i.Expires.Format(time.RFC3339), approval)
			if qr {
				code, err := wgconfig.QRTerminal([]byte(out.Link))
				if err != nil {
					return fmt.Errorf("QR code of the link: %w", err)
				}
				fmt.Fprint(g.env.Out, code)
			}
			fmt.Fprintln(g.env.Out, out.Link)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Group, "group", "", "the access group enrolled devices join (default: the group \"default\")")
	f.IntVar(&req.Devices, "devices", 1, "how many devices (`N`) the link enrolls")
	f.StringVar(&req.Expires, "expires", "", "until when the link works: `DURATION` (72h, 7d), DATE or RFC 3339 time (default 72h, at most 30 days)")
	f.StringVar(&req.Contact, "contact", "", "who at the partner the link is for")
	f.BoolVar(&req.AutoApprove, "auto-approve", false, "enroll devices without a sponsor's approval (for low-risk groups)")
	f.BoolVar(&qr, "qr", false, "also print the link as a QR code")
	cmd.RegisterFlagCompletionFunc("group", completeGroupFlag(g))
	return cmd
}

func newInviteListCmd(g *globals) *cobra.Command {
	var org string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List invites",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			invites, err := g.client().ListInvites(g.ctx(), org)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, invites)
			}
			t := newTable(g.env.Out, "INVITE", "GROUP", "STATE", "DEVICES", "EXPIRES", "APPROVAL", "CONTACT")
			for _, i := range invites {
				approval := "sponsor"
				if i.AutoApprove {
					approval = "auto"
				}
				t.row(i.ID, i.Group, i.State, fmt.Sprintf("%d/%d", i.Used, i.Devices), date(&i.Expires), approval, orDash(i.Contact))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&org, "org", "", "only this organisation's")
	cmd.RegisterFlagCompletionFunc("org", completeOrgs(g))
	return cmd
}

// completeInvites offers the invites that still open something.
func completeInvites(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		invites, err := g.client().ListInvites(g.ctx(), "")
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, i := range invites {
			if i.State == "active" && strings.HasPrefix(i.ID, toComplete) {
				out = append(out, i.ID)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func newInviteRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "revoke ORG/ID",
		Short:             "End an invite: its link opens nothing any more, and its pending requests are denied",
		Args:              exactArgs(1, "an invite as ORG/ID"),
		ValidArgsFunction: completeInvites(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, id, err := splitID("invite", args[0])
			if err != nil {
				return err
			}
			i, err := g.client().RevokeInvite(g.ctx(), org, id)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, i)
			}
			fmt.Fprintf(g.env.Out, "Revoked invite %s.\n", i.ID)
			return nil
		},
	}
}

func newRequestCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "request",
		Aliases: []string{"requests"},
		Short:   "Approve or deny devices partners enrolled through invites, addressed as ORG/ID",
		RunE:    groupRun,
	}
	cmd.AddCommand(newRequestListCmd(g), newRequestDecideCmd(g, "approve"), newRequestDecideCmd(g, "deny"))
	return cmd
}

func newRequestListCmd(g *globals) *cobra.Command {
	var org, state string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List enrollment requests",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reqs, err := g.client().ListRequests(g.ctx(), org, state)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, reqs)
			}
			t := newTable(g.env.Out, "REQUEST", "DEVICE", "GROUP", "STATE", "KEYS", "FROM", "SENT", "INVITE")
			for _, r := range reqs {
				state := r.State
				if r.Reason != "" {
					state += " (" + r.Reason + ")"
				}
				t.row(r.ID, r.Device, r.Group, state, r.KeyFrom, r.Source, r.CreatedAt.Format(time.RFC3339), r.Invite)
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&org, "org", "", "only this organisation's")
	cmd.Flags().StringVar(&state, "state", "", "only requests in this state: pending, approved, denied or expired")
	cmd.RegisterFlagCompletionFunc("org", completeOrgs(g))
	return cmd
}

// completePending offers the requests waiting for a decision.
func completePending(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		reqs, err := g.client().ListRequests(g.ctx(), "", api.RequestPending)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, r := range reqs {
			if strings.HasPrefix(r.ID, toComplete) {
				out = append(out, r.ID)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func newRequestDecideCmd(g *globals, verb string) *cobra.Command {
	var reason string
	short := "Issue the device a request asks for; the partner's page then shows its config"
	if verb == "deny" {
		short = "Refuse a request; the partner's page shows the reason"
	}
	cmd := &cobra.Command{
		Use:               verb + " ORG/ID",
		Short:             short,
		Args:              exactArgs(1, "a request as ORG/ID"),
		ValidArgsFunction: completePending(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, id, err := splitID("request", args[0])
			if err != nil {
				return err
			}
			var r api.Request
			if verb == "approve" {
				r, err = g.client().ApproveRequest(g.ctx(), org, id)
			} else {
				if reason == "" {
					return usagef("pass --reason TEXT: the partner reads it")
				}
				r, err = g.client().DenyRequest(g.ctx(), org, id, reason)
			}
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, r)
			}
			if verb == "approve" {
				fmt.Fprintf(g.env.Out, "Approved %s: peer %s/%s is issued in group %s; the partner's page now shows its config.\n", r.ID, r.Org, r.Device, r.Group)
			} else {
				fmt.Fprintf(g.env.Out, "Denied %s.\n", r.ID)
			}
			return nil
		},
	}
	if verb == "deny" {
		// Shown in the use line: the synopsis brackets the other flags as optional.
		cmd.Use += " --reason TEXT"
		cmd.Flags().StringVar(&reason, "reason", "", "why, for the partner (required)")
	}
	return cmd
}
