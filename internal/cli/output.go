package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/client"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints aligned columns; the header is upper case like kubectl's.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		cols[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

// cell is a value as a table shows it. Some values come from partners (a
// request's source, an audit actor), and whatever checks them upstream, a
// terminal must never receive their control characters, nor a newline or
// tab that forges a row or a column: such a value is printed quoted, as Go
// quotes strings (\x1b, \n), so it is seen to be odd; others as they are.
func cell(s string) string {
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

func (t *table) flush() error { return t.tw.Flush() }

// fields prints "Key:  value" lines for one object.
func fields(w io.Writer, kv ...string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", cell(kv[i]), cell(kv[i+1]))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func date(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04")
}

// ago says how long ago t was in the unit a person would use.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// lastSeen is "online, 12s ago", "3d ago" or "never connected".
func lastSeen(now time.Time, p api.Peer) string {
	if p.LastHandshake == nil {
		return "never connected"
	}
	s := ago(now, *p.LastHandshake)
	if now.Sub(*p.LastHandshake) < 3*time.Minute {
		return "online, " + s
	}
	return s
}

func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return ExitUsage
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case api.CodeInvalid, api.CodeTooLarge:
			return ExitUsage
		case api.CodeNotFound:
			return ExitNotFound
		case api.CodeConflict:
			return ExitConflict
		case api.CodeForbidden, api.CodeDenied:
			return ExitForbidden
		}
	}
	return ExitError
}

func errorJSON(err error) api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return *ae
	}
	code := api.CodeInternal
	switch exitCode(err) {
	case ExitUsage:
		code = api.CodeInvalid
	}
	if errors.Is(err, client.ErrDaemonDown) {
		code = "unavailable"
	}
	return api.Error{Code: code, Message: err.Error()}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// confirm asks before destructive verbs. Without a terminal it needs --yes,
// so a script never blocks on a prompt nor destroys by accident. what is
// the action in lowercase, as in "revoking acme/alice": confirm says it
// cannot be undone, in an error or, capitalised, in the prompt.
func confirm(g *globals, yes bool, what, answer string) error {
	if yes {
		return nil
	}
	if !g.env.IsTTY() {
		return usagef("%s cannot be undone: pass --yes to confirm", what)
	}
	fmt.Fprintf(g.env.ErrOut, "%s%s cannot be undone. Type %q to confirm: ", strings.ToUpper(what[:1]), what[1:], answer)
	var got string
	fmt.Fscanln(g.env.In, &got)
	if got != answer {
		return errCanceled
	}
	return nil
}

// noArgs and exactArgs are cobra's validators with usage exit codes.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s needs %s (got %d arguments)", cmd.CommandPath(), names, len(args))
		}
		return nil
	}
}

func minArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s needs %s", cmd.CommandPath(), names)
		}
		return nil
	}
}

// splitPeer parses ORG/NAME.
func splitPeer(s string) (string, string, error) {
	return splitPath("peer", "ORG/NAME", "acme/laptop-1", s)
}

// splitPath reads ORG/NAME, the form of peers, groups, invites and
// requests; the error names the kind, its form and an example.
func splitPath(kind, form, example, s string) (string, string, error) {
	org, name, ok := strings.Cut(s, "/")
	if !ok || org == "" || name == "" || strings.Contains(name, "/") {
		return "", "", usagef("%s %q is not %s, e.g. %s", kind, s, form, example)
	}
	return org, name, nil
}

// groupRun makes a noun without a verb print its help, and a misspelt verb
// a usage error rather than help with exit status 0.
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return cmd.Help()
}
