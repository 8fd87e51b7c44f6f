package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/internal/gwns"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/version"
)

// Main runs the extranetd command line and returns the exit code.
func Main(args []string) int {
	cmd := NewRootCmd()
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "extranetd:", err)
		return 1
	}
	return 0
}

// NewRootCmd builds extranetd's command tree; exported so the man page
// generator (internal/tools/genman) documents the very flags the daemon parses.
func NewRootCmd() *cobra.Command {
	cfg := Defaults()
	var configPath string
	root := &cobra.Command{
		Use:           "extranetd",
		Short:         "WireGuard extranet gateway daemon",
		Long:          "extranetd keeps one WireGuard interface and the firewall that lets each partner organisation reach only what it was granted.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadConfig(cmd, &cfg, configPath); err != nil {
				return err
			}
			log, err := newLogger(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			hup := make(chan struct{}, 1)
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGHUP)
			defer signal.Stop(sigs)
			go func() {
				for range sigs {
					select {
					case hup <- struct{}{}:
					default:
					}
				}
			}()
			return Run(ctx, cfg, log, hup)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&configPath, "config", "", "YAML config file (keys are the flag names)")
	cfg.BindFlags(pf)

	root.AddCommand(&cobra.Command{
		Use:   "cleanup",
		Short: "Remove every firewall rule, set and interface extranetd made (state is kept)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadConfig(cmd, &cfg, configPath); err != nil {
				return err
			}
			log, err := newLogger(cfg)
			if err != nil {
				return err
			}
			return Cleanup(cfg, log)
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "netns",
		Short: "Create the gateway's network namespace if it is missing, and exit",
		Long: `Create (or find) the network namespace named by --netns, pinned under
/run/netns as ` + "`ip netns add`" + ` would. The daemon does this itself at start;
the systemd unit runs it first, outside the service's sandbox, so that the
pin is visible to the whole host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadConfig(cmd, &cfg, configPath); err != nil {
				return err
			}
			if err := gwns.ValidName(cfg.NetNS); err != nil {
				return fmt.Errorf("--netns: %w", err)
			}
			ns, created, err := gwns.Open(cfg.NetNS)
			if err != nil {
				return err
			}
			ns.Close()
			if created {
				fmt.Fprintf(cmd.OutOrStdout(), "created network namespace %s\n", cfg.NetNS)
			}
			return nil
		},
	})
	root.AddCommand(newRestoreCmd(&cfg, &configPath))
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "extranetd", version.Version)
		},
	})
	return root
}

func loadConfig(cmd *cobra.Command, cfg *Config, path string) error {
	if path == "" {
		return nil
	}
	return cfg.LoadFile(path, cmd.Flags())
}

// newLogger logs to stderr, which journald captures; text by default.
func newLogger(cfg Config) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", cfg.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(cfg.LogFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", cfg.LogFormat)
}

func newRestoreCmd(cfg *Config, configPath *string) *cobra.Command {
	var opts store.RestoreOptions
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the state with a backup from `extranetctl backup` (stop the daemon first)",
		Long: `Replace the state with a backup from ` + "`extranetctl backup`" + ` while extranetd is stopped.
Before it replaces anything, restore compares the backup with the current state
by public key and lists what would change: peers the backup would re-enable
(their keys unknown now), peers whose keys were revoked or rotated away since
the backup (restored revoked, unless --allow-revoked), and peers live now that
the backup does not know (lost). Keys revoked since the backup stay burnt. The
restore is audited in the restored state as state.restore.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := loadConfig(cmd, cfg, *configPath); err != nil {
				return err
			}
			opts.Actor = unixUser()
			dst := filepath.Join(cfg.StateDir, DBFile)
			rep, err := store.Restore(args[0], dst, opts)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			printRestoreReport(out, rep)
			if opts.DryRun {
				fmt.Fprintf(out, "Dry run: %s is unchanged.\n", dst)
				return nil
			}
			fmt.Fprintf(out, "Restored %s from %s. Start extranetd; it reconciles the kernel to the restored state.\n", dst, args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&opts.AllowRevoked, "allow-revoked", false, "restore peers whose keys were revoked after the backup was taken as the backup has them")
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "compare and list, replace nothing")
	return cmd
}

// unixUser names who runs a restore for the audit log, as the API names
// its callers.
func unixUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "uid:" + strconv.Itoa(os.Getuid())
}

func printRestoreReport(w io.Writer, rep store.RestoreReport) {
	if !rep.Compared {
		fmt.Fprintln(w, "No current state to compare with: the backup is restored as it is.")
		return
	}
	list := func(title string, ps []store.RestoredPeer) {
		if len(ps) == 0 {
			return
		}
		fmt.Fprintf(w, "%s:\n", title)
		for _, p := range ps {
			fmt.Fprintf(w, "  %s: %s in the backup, %s now (key %s)\n", p.Peer, p.State, p.Now, p.PublicKey)
		}
	}
	list("Re-enabled by the backup", rep.ReEnabled)
	list("Revoked since the backup, restored revoked (pass --allow-revoked to restore them as in the backup)", rep.KeptRevoked)
	list("Live now but not in the backup, gone after the restore (issue them again)", rep.Lost)
	if rep.BurntKeys > 0 {
		fmt.Fprintf(w, "%d keys revoked since the backup stay burnt.\n", rep.BurntKeys)
	}
	if len(rep.ReEnabled)+len(rep.KeptRevoked)+len(rep.Lost) == 0 {
		fmt.Fprintln(w, "The backup re-enables no peer that is not live now.")
	}
}
