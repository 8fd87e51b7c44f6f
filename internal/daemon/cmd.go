package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/version"
)

// Main runs the extranetd command line and returns the exit code.
func Main(args []string) int {
	cmd := newRootCmd()
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "extranetd:", err)
		return 1
	}
	return 0
}

func newRootCmd() *cobra.Command {
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
		Use:   "restore FILE",
		Short: "Replace the state with a backup from `extranetctl backup` (stop the daemon first)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := loadConfig(cmd, &cfg, configPath); err != nil {
				return err
			}
			dst := filepath.Join(cfg.StateDir, DBFile)
			if err := store.Restore(args[0], dst); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Restored %s from %s. Start extranetd; it reconciles the kernel to the restored state.\n", dst, args[0])
			return nil
		},
	})
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
