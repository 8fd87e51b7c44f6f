package cli

import (
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/client"
)

func newActivityCmd(g *globals) *cobra.Command {
	var af activityFilters
	q := &af.q
	var follow, denied bool
	cmd := &cobra.Command{
		Use:   "activity",
		Short: "Show what partners did: their connections through the gateway, oldest first",
		Long: `Show the partner activity log: one record per connection a partner's peer
opened through the gateway, with the bytes each way (OUT is what the partner
sent, IN what it received) and how it ended: closed, timed out, or killed
(the gateway cut it because the access it used ended: a revoke, a
suspension, an expiry, an ungrant, a move). A connection still open gets a
record every 5 minutes (activity-interim in extranetd.yaml), END open, with
what it carried since its previous record. A peer's flows beyond its
budget of records (20 a second) are summarised: one record a minute per
destination with how many there were.

The firewall's refusals are recorded too (--denied): attempts refused, per
peer, destination and reason, added up until the next read or for 10
seconds at most (logged at most 100 a second per partner). The reasons: not-granted (no grant of its group
covers it), no-group, no-org, not-a-peer, host (the gateway host itself),
gateway (the gateway's tunnel address) and tunnel (another partner). A
peer refused at many distinct destinations within a minute is scanning:
extranetd warns, then suspends it (see scan-mode in extranetd.yaml).

A sponsor sees its own organisations' activity only.`,
		Example: `  extranetctl activity --since 24h
  extranetctl activity --org acme --dest 10.20.0.0/24 --port 443
  extranetctl activity --peer acme/laptop --end killed
  extranetctl activity --denied --org acme --since 1h
  extranetctl activity --since 7d -o json | jq .
  extranetctl activity top --org acme`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := af.parse(cmd, g); err != nil {
				return err
			}
			if denied {
				if q.End != "" && q.End != api.FlowRefused {
					return usagef("--denied is --end refused; it cannot go with --end %q", q.End)
				}
				q.End = api.FlowRefused
			}
			if q.Limit < 1 || q.Limit > 100000 {
				return usagef("--limit %d: give a number from 1 to 100000 (use --since and --until to page back)", q.Limit)
			}
			flows, err := g.client().Activity(g.ctx(), *q)
			if err != nil {
				return err
			}
			if err := printFlows(g, flows, !follow); err != nil || !follow {
				return err
			}
			return followFlows(g, *q, flows)
		},
	}
	af.register(cmd, g, "")
	f := cmd.Flags()
	f.StringVar(&q.End, "end", "", `only flows that ended so: closed, "timed out", killed, open (interim records of flows still open), summarised (a peer's flows over its budget, added up), or refused (as --denied)`)
	f.BoolVar(&denied, "denied", false, "only the attempts the firewall refused, with why")
	f.IntVar(&q.Limit, "limit", 1000, "only the newest `N` flows that match (at most 100000)")
	f.BoolVarP(&follow, "follow", "f", false, "then keep printing flows as they are recorded, until interrupted")
	_ = cmd.RegisterFlagCompletionFunc("end", cobra.FixedCompletions(api.FlowEnds, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(newActivityTopCmd(g))
	return cmd
}

func newActivityTopCmd(g *globals) *cobra.Command {
	var af activityFilters
	q := &af.q
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show the destinations and peers that moved the most bytes, and those refused the most",
		Long: `Add up the activity log over a window (the last 24 hours unless --since
says otherwise) and show the destinations and the peers that moved the most
bytes (OUT is what partners sent, IN what they received), and those the
firewall refused the most attempts. FLOWS counts connections (one still
open counts once it ends); PEERS how many peers a destination's came from.

A sponsor sees its own organisations' activity only.`,
		Example: `  extranetctl activity top
  extranetctl activity top --org acme --since 7d
  extranetctl activity top --dest 10.20.0.0/24 --limit 20 -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := af.parse(cmd, g); err != nil {
				return err
			}
			if q.Limit < 1 || q.Limit > 100 {
				return usagef("--limit %d: give a number from 1 to 100", q.Limit)
			}
			top, err := g.client().ActivityTop(g.ctx(), *q)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, top)
			}
			return printTop(g, top)
		},
	}
	af.register(cmd, g, "24h")
	cmd.Flags().IntVar(&q.Limit, "limit", 10, "show the first `N` of each list (at most 100)")
	return cmd
}

// activityFilters are the flags activity and activity top share, and the
// query they make.
type activityFilters struct {
	q            client.ActivityQuery
	since, until string
}

// register adds the filter flags to cmd; since is --since's default.
func (a *activityFilters) register(cmd *cobra.Command, g *globals, since string) {
	f := cmd.Flags()
	f.StringVar(&a.q.Org, "org", "", "only flows of this organisation's peers")
	f.StringVar(&a.q.Peer, "peer", "", "only flows of this peer (ORG/NAME)")
	f.StringVar(&a.q.Dest, "dest", "", "only flows to this `PREFIX` (10.20.0.0/24) or address")
	f.Uint16Var(&a.q.Port, "port", 0, "only flows to this destination port `N`")
	f.StringVar(&a.q.Proto, "proto", "", "only this protocol: tcp, udp, icmp or a protocol number")
	f.StringVar(&a.since, "since", since, "only flows that ended at or after this: `DURATION` ago (24h, 7d) or a time (2026-11-01, RFC 3339)")
	f.StringVar(&a.until, "until", "", "only flows that ended before this: `DURATION` ago or a time")
	_ = cmd.RegisterFlagCompletionFunc("org", completeOrgs(g))
	_ = cmd.RegisterFlagCompletionFunc("peer", completePeers(g))
	_ = cmd.RegisterFlagCompletionFunc("proto", cobra.FixedCompletions([]string{"tcp", "udp", "icmp"}, cobra.ShellCompDirectiveNoFileComp))
}

// parse turns the flags' times into the query's, and checks what the
// daemon would take for something else.
func (a *activityFilters) parse(cmd *cobra.Command, g *globals) error {
	var err error
	if a.q.Since, a.q.Until, err = window(a.since, a.until, a.q.Peer, g.env.Now()); err != nil {
		return err
	}
	// 0 is how the query says "any port", so it cannot be asked for; a
	// flow without ports is found by --proto.
	if cmd.Flags().Changed("port") && a.q.Port == 0 {
		return usagef("--port 0: give a port from 1 to 65535")
	}
	return nil
}

// printTop prints top's four lists, each a table, or says it is empty.
func printTop(g *globals, top api.ActivityTop) error {
	w := g.env.Out
	until := "now"
	if !top.Until.IsZero() {
		until = top.Until.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "%d records from %s to %s.\n", top.Records, top.Since.UTC().Format(time.RFC3339), until)
	if top.Truncated {
		fmt.Fprintln(w, "They name more than 10,000 destinations or peers: those past them are added up as elsewhere and others; narrow the window or filter.")
	}
	size := func(n uint64) string { return bytesHuman(int64(min(n, math.MaxInt64))) }
	for _, list := range []struct {
		title   string
		entries []api.TopEntry
		header  []string
		row     func(api.TopEntry) []string
	}{
		{"Destinations by bytes", top.Destinations, []string{"DEST", "PROTO", "OUT", "IN", "FLOWS", "PEERS"}, func(e api.TopEntry) []string {
			return []string{topDest(e), e.Proto, size(e.BytesOut), size(e.BytesIn), strconv.FormatUint(e.Flows, 10), strconv.Itoa(e.Peers)}
		}},
		{"Peers by bytes", top.Peers, []string{"PEER", "OUT", "IN", "FLOWS"}, func(e api.TopEntry) []string {
			return []string{topPeer(e), size(e.BytesOut), size(e.BytesIn), strconv.FormatUint(e.Flows, 10)}
		}},
		{"Destinations refused", top.RefusedDestinations, []string{"DEST", "PROTO", "ATTEMPTS", "PEERS"}, func(e api.TopEntry) []string {
			return []string{topDest(e), e.Proto, strconv.FormatUint(e.Flows, 10), strconv.Itoa(e.Peers)}
		}},
		{"Peers refused", top.RefusedPeers, []string{"PEER", "ATTEMPTS"}, func(e api.TopEntry) []string {
			return []string{topPeer(e), strconv.FormatUint(e.Flows, 10)}
		}},
	} {
		fmt.Fprintf(w, "\n%s:", list.title)
		if len(list.entries) == 0 {
			fmt.Fprintln(w, " none")
			continue
		}
		fmt.Fprintln(w)
		t := newTable(w, list.header...)
		for _, e := range list.entries {
			t.row(list.row(e)...)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return nil
}

// topDest is a top destination as flowDest shows a flow's.
func topDest(e api.TopEntry) string {
	if e.Dest == "" {
		return "elsewhere"
	}
	return flowDest(api.Flow{Dest: e.Dest, Port: e.Port})
}

// topPeer names a top peer, or the address no peer held, or says it adds
// up the peers past those top tells apart.
func topPeer(e api.TopEntry) string {
	switch {
	case e.Peer != "":
		return e.Peer
	case e.Address != "":
		return e.Address + " (no peer)"
	}
	return "others"
}

// printFlows prints flows: a table, or one JSON object per line, which
// streams into jq or a SIEM. empty says to say so when there are none (an
// empty table looks like a log that is broken); a follower just waits.
func printFlows(g *globals, flows []api.Flow, empty bool) error {
	if g.json() {
		for _, f := range flows {
			if err := printJSONLine(g, f); err != nil {
				return err
			}
		}
		return nil
	}
	if len(flows) == 0 {
		if empty {
			fmt.Fprintln(g.env.Out, "No flows matched.")
		}
		return nil
	}
	t := newTable(g.env.Out, "CLOSED", "PEER", "GROUP", "PROTO", "DEST", "OUT", "IN", "DURATION", "END")
	for _, f := range flows {
		t.row(f.Closed.UTC().Format(time.RFC3339), f.Peer, f.Group, f.Proto, flowDest(f),
			bytesHuman(int64(min(f.BytesOut, math.MaxInt64))), bytesHuman(int64(min(f.BytesIn, math.MaxInt64))),
			flowDuration(f), flowEnd(f))
	}
	return t.flush()
}

// followEvery is how often --follow asks for what is new.
const followEvery = 2 * time.Second

// followFlows prints the flows recorded after those already shown, until
// the command is interrupted. The query asks from the second of the
// newest flow shown (the API's times are to the second), and what was
// shown already is left out.
func followFlows(g *globals, q client.ActivityQuery, shown []api.Flow) error {
	ctx, stop := signal.NotifyContext(g.ctx(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	seen := map[api.Flow]bool{}
	var from time.Time
	note := func(flows []api.Flow) {
		for _, f := range flows {
			if f.Closed.After(from) {
				from = f.Closed
			}
		}
		cut := from.Truncate(time.Second)
		for f := range seen {
			if f.Closed.Before(cut) {
				delete(seen, f)
			}
		}
		for _, f := range flows {
			if !f.Closed.Before(cut) {
				seen[f] = true
			}
		}
	}
	note(shown)
	if from.IsZero() {
		// Nothing shown: what is new is what ends from now on.
		from = g.env.Now()
	}
	q.Limit = 100000
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followEvery):
		}
		q.Since = from.Truncate(time.Second)
		flows, err := g.client().Activity(ctx, q)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		var fresh []api.Flow
		for _, f := range flows {
			if !seen[f] {
				fresh = append(fresh, f)
			}
		}
		if err := printFlows(g, fresh, false); err != nil {
			return err
		}
		note(fresh)
	}
}

// flowDest is where a flow went: addr:port ([addr]:port for IPv6), or the
// address alone for a protocol without ports; with their count for records
// that add up several.
func flowDest(f api.Flow) string {
	what := "flows"
	if f.End == api.FlowRefused {
		what = "attempts"
	}
	switch {
	case f.RateLimited:
		return fmt.Sprintf("%d %s past the log's rate", f.Flows, what)
	case (f.End == api.FlowSummarised || f.End == api.FlowRefused) && f.Dest == "":
		return fmt.Sprintf("%d %s elsewhere", f.Flows, what)
	case f.End == api.FlowSummarised || f.End == api.FlowRefused:
		return fmt.Sprintf("%s (%d %s)", flowDest(api.Flow{Dest: f.Dest, Port: f.Port}), f.Flows, what)
	}
	if f.Port == 0 {
		return f.Dest
	}
	return net.JoinHostPort(f.Dest, strconv.Itoa(int(f.Port)))
}

// flowEnd is how a flow ended, and why a refused one was refused.
func flowEnd(f api.Flow) string {
	if f.End == api.FlowRefused && f.Reason != "" {
		return f.End + ": " + f.Reason
	}
	return f.End
}

// flowDuration is how long a flow lasted, to the second; "-" when its
// start is unknown or after its end (a clock stepped back).
func flowDuration(f api.Flow) string {
	if f.Opened.IsZero() || f.Closed.Before(f.Opened) {
		return "-"
	}
	return f.Closed.Sub(f.Opened).Round(time.Second).String()
}
