package main

import (
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/extranetgw/extranet/internal/cli"
	"github.com/extranetgw/extranet/internal/daemon"
)

// valueName is what a backquoted word in a flag's usage may be: pflag
// shows it as the flag's value (--out FILE), so it must read as one.
var valueName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// checkFlagUsages fails for any flag of cmd or its subcommands whose
// usage string has a backquoted word that is not a value name: pflag
// would print it in place of the value and drop its quotes, garbling
// --help and the man pages ("--expire-action extranetctl expire --action
// default of").
func checkFlagUsages(t *testing.T, cmd *cobra.Command) {
	t.Helper()
	check := func(f *pflag.Flag) {
		if !strings.Contains(f.Usage, "`") {
			return
		}
		name, usage := pflag.UnquoteUsage(f)
		if !valueName.MatchString(name) {
			t.Errorf("%s --%s: usage %q shows as \"--%s %s   %s\"; quote commands another way (pflag takes `...` as the value's name)", cmd.CommandPath(), f.Name, f.Usage, f.Name, name, usage)
		}
	}
	cmd.LocalFlags().VisitAll(check)
	for _, sub := range cmd.Commands() {
		checkFlagUsages(t, sub)
	}
}

// TestHelpShowsEveryFlagPlainly walks every command of both binaries, as
// their man pages are made.
func TestHelpShowsEveryFlagPlainly(t *testing.T) {
	ctl, _ := cli.NewRootCmd(&cli.Env{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard, Now: time.Now,
		IsTTY: func() bool { return false }, Getenv: func(string) string { return "" }})
	checkFlagUsages(t, ctl)
	checkFlagUsages(t, daemon.NewRootCmd())
}
