// Package cli is extranetctl: nouns and verbs over the daemon's API, tables
// for people and JSON for scripts, and exit codes a script can act on.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/internal/version"
	"github.com/extranetgw/extranet/pkg/client"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitError    = 1
	ExitUsage    = 2
	ExitNotFound = 3
	ExitConflict = 4
	// ExitForbidden: the caller's role does not allow it, or the socket
	// does not let the caller in.
	ExitForbidden = 5
)

// Env is what commands need from the outside world; tests substitute it.
type Env struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	Now    func() time.Time
	// IsTTY reports whether stdin is a terminal, for confirmations.
	IsTTY func() bool
	// Getenv reads the environment.
	Getenv func(string) string
}

// globals are the flags every command shares.
type globals struct {
	socket string
	output string
	env    *Env
}

func (g *globals) client() *client.Client { return client.New(g.socket) }

func (g *globals) json() bool { return g.output == "json" }

func (g *globals) ctx() context.Context { return context.Background() }

// usageError marks errors in how the command was called (exit 2).
type usageError struct{ error }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// NewRootCmd builds the command tree. Nothing is registered globally.
func NewRootCmd(env *Env) (*cobra.Command, *globals) {
	g := &globals{env: env}
	root := &cobra.Command{
		Use:   "extranetctl",
		Short: "Manage the WireGuard extranet gateway",
		Long: `extranetctl manages partner organisations, their grants and their peers on an
extranet gateway, by talking to extranetd over its unix socket.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" {
				return usagef("--output %q: use table or json", g.output)
			}
			return nil
		},
	}
	root.SetIn(env.In)
	root.SetOut(env.Out)
	root.SetErr(env.ErrOut)
	defSocket := env.Getenv("EXTRANET_SOCKET")
	if defSocket == "" {
		defSocket = client.DefaultSocket
	}
	root.PersistentFlags().StringVar(&g.socket, "socket", defSocket, "extranetd's unix socket (env EXTRANET_SOCKET)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	root.AddCommand(newOrgCmd(g), newGroupCmd(g), newPeerCmd(g), newInviteCmd(g), newRequestCmd(g), newAuditCmd(g), newActivityCmd(g), newExpireCmd(g), newStatusCmd(g), newClusterCmd(g),
		newBackupCmd(g), newImportCmd(g), newExportCmd(g), newRoleCmd(g), newWhoAmICmd(g), newVersionCmd(g))
	return root, g
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client's (and the daemon's) version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			daemon := "unreachable"
			if st, err := g.client().Status(g.ctx()); err == nil {
				daemon = st.Version
			}
			if g.json() {
				return printJSON(g.env.Out, map[string]string{"client": version.Version, "daemon": daemon})
			}
			fmt.Fprintf(g.env.Out, "extranetctl %s\nextranetd   %s\n", version.Version, daemon)
			return nil
		},
	}
}

// Main runs extranetctl and returns its exit code.
func Main(args []string, env *Env) int {
	root, g := NewRootCmd(env)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	if g.json() {
		_ = printJSON(env.ErrOut, errorJSON(err))
	} else {
		fmt.Fprintln(env.ErrOut, "error:", err)
		var ue usageError
		if errors.As(err, &ue) || isCobraUsage(err) {
			fmt.Fprintln(env.ErrOut, "Run 'extranetctl --help' or add --help to the command for usage.")
		}
	}
	return code
}

// DefaultEnv is the process's real environment.
func DefaultEnv() *Env {
	return &Env{
		In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr,
		Now:    time.Now,
		IsTTY:  func() bool { return isTerminal(os.Stdin) },
		Getenv: os.Getenv,
	}
}

// cobra reports unknown commands and bad argument counts as plain errors.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "invalid argument"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

var errCanceled = errors.New("canceled")
