package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"

	"github.com/extranetgw/extranet/internal/gwns"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/version"
	"github.com/extranetgw/extranet/internal/vip"
	"github.com/extranetgw/extranet/pkg/client"
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
/run/netns as ` + "`ip netns add`" + ` would. The daemon does this itself at start
when it runs in the host's mount namespace. The systemd unit runs it first,
in PID 1's mount namespace (nsenter --mount=/proc/1/ns/mnt), so that the pin
is the host's and the sandboxed daemon, ` + "`ip netns exec`" + ` and ` + "`extranetd cleanup`" + `
all find the same namespace. Run anywhere else (a sandbox, ` + "`ip netns exec`" + `)
it refuses to make a namespace that only it would see.`,
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
	root.AddCommand(newStopHookCmd(&cfg, &configPath))
	root.AddCommand(newRestoreCmd(&cfg, &configPath))
	root.AddCommand(newClusterCmd(&cfg, &configPath))
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
by public key and lists every peer whose state it changes: peers the backup
would re-enable (their keys unknown now), peers whose keys were revoked or
rotated away since the backup (restored revoked, unless --allow-revoked), peers
suspended or expired since the backup (kept so, unless --allow-resumed), peers
that take the backup's state otherwise, and peers live now that the backup does
not know (lost). Keys revoked since the backup stay burnt. The restore is
audited in the restored state as state.restore.

--dry-run lists and replaces nothing; it works while extranetd runs, comparing
with a copy of the running state read through the daemon's socket (audited
there as a backup, so it needs the role admin).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := loadConfig(cmd, cfg, *configPath); err != nil {
				return err
			}
			if len(cfg.EtcdEndpoints) > 0 && !opts.DryRun {
				// Each start copies the cluster's state over the file, so
				// a restore here would be undone, unnoticed.
				return fmt.Errorf("this gateway shares the cluster's state in etcd (--etcd-endpoints): a restore of its file would be replaced at its next start. "+
					"Stop every gateway, restore on one without --etcd-endpoints, delete the cluster's state (etcdctl del --prefix %s), and run `extranetd cluster init` there (docs/cluster.md)", cfg.EtcdPrefix)
			}
			opts.Actor = unixUser()
			dst := filepath.Join(cfg.StateDir, DBFile)
			out := cmd.OutOrStdout()
			rep, err := store.Restore(args[0], dst, opts)
			if errors.Is(err, store.ErrInUse) && opts.DryRun {
				// The daemon holds the file; its own backup is a
				// consistent copy to compare with, and leaves the file
				// alone.
				fmt.Fprintf(out, "extranetd holds %s: comparing with a copy read through %s (audited as a backup).\n", dst, cfg.Socket)
				rep, err = previewLive(cmd.Context(), cfg, args[0], opts)
			}
			if err != nil {
				return err
			}
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
	cmd.Flags().BoolVar(&opts.AllowResumed, "allow-resumed", false, "restore peers suspended or expired after the backup was taken as the backup has them (active)")
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "compare and list, replace nothing (works while extranetd runs)")
	return cmd
}

// previewLive runs a dry restore against a copy of a running daemon's
// state, fetched through its backup API: bbolt cannot open a file another
// process holds, even to read it. The copy holds keys, so it is made in
// the state directory and removed before returning.
func previewLive(ctx context.Context, cfg *Config, src string, opts store.RestoreOptions) (store.RestoreReport, error) {
	tmp, err := os.MkdirTemp(cfg.StateDir, ".restore-preview-*")
	if err != nil {
		return store.RestoreReport{}, fmt.Errorf("restore --dry-run: %w", err)
	}
	defer os.RemoveAll(tmp)
	cur := filepath.Join(tmp, DBFile)
	f, err := os.OpenFile(cur, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return store.RestoreReport{}, fmt.Errorf("restore --dry-run: %w", err)
	}
	_, err = client.New(cfg.Socket).Backup(ctx, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return store.RestoreReport{}, fmt.Errorf("restore --dry-run: read the running daemon's state: %w", err)
	}
	return store.Restore(src, cur, opts)
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
	list("Suspended or expired since the backup, kept so (pass --allow-resumed to restore them active, as in the backup)", rep.KeptSuspended)
	list("Restored to their state in the backup", rep.Changed)
	if len(rep.Lost) > 0 {
		// Not in the backup: State is theirs now.
		fmt.Fprintln(w, "Live now but not in the backup, gone after the restore (issue them again):")
		for _, p := range rep.Lost {
			fmt.Fprintf(w, "  %s: %s now, not in the backup (key %s)\n", p.Peer, p.State, p.PublicKey)
		}
	}
	if rep.BurntKeys > 0 {
		fmt.Fprintf(w, "%d keys revoked since the backup stay burnt.\n", rep.BurntKeys)
	}
	if len(rep.ReEnabled)+len(rep.KeptRevoked)+len(rep.KeptSuspended)+len(rep.Changed)+len(rep.Lost) == 0 {
		fmt.Fprintln(w, "The restore changes the state of no peer.")
	}
}

func newStopHookCmd(cfg *Config, configPath *string) *cobra.Command {
	unit := "extranetd.service"
	cmd := &cobra.Command{
		Use:   "stop-hook",
		Short: "Take the WireGuard link down unless systemd is about to start extranetd again",
		Long: `Run by systemd when extranetd has stopped: as the unit's ExecStopPost, and
from extranetd-close.service, which the unit's OnFailure= and OnSuccess=
start once it has settled. Unless systemd is about to start the daemon again
(a restart, or an automatic restart after a crash), it takes the WireGuard
interface in the gateway namespace down, so no partner packet crosses a
gateway that nobody enforces: a stop, a crash loop systemd gave up on, a
stop during an automatic restart. The firewall rules and the namespace stay;
the next start brings the link up once they are in force. On a cluster
gateway that takes turns (--vip) it always takes the link down and releases
the address, since another gateway takes over. With userspace
WireGuard the interface ended with the daemon, and there is nothing to do.
It decides from $SERVICE_RESULT (set for ExecStopPost) and from what
systemctl says of the unit's job and state.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Its decisions are logged whatever log-level says: they are
			// what tells an admin why the gateway closed, or did not.
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			if err := loadConfig(cmd, cfg, *configPath); err != nil {
				// A config the daemon could not read either may be why it
				// stopped; the link must close all the same.
				d := Defaults()
				cfg.NetNS, cfg.Interface = d.NetNS, d.Interface
				log.Warn("config unreadable; closing the default namespace's interface", "err", err, "netns", cfg.NetNS, "interface", cfg.Interface)
			} else if strings.EqualFold(cfg.LogFormat, "json") {
				log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
			}
			result, stopping := os.LookupEnv("SERVICE_RESULT")
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			if cfg.VIP != "" {
				// Another gateway takes over, and a restarted one starts
				// as a standby: whatever systemd does next, this one
				// stops answering partners now.
				return stepDown(ctx, *cfg, log)
			}
			st, err := unitStateOf(ctx, unit)
			if err != nil {
				log.Error("cannot ask systemd about the unit; deciding without it", "unit", unit, "err", err)
			}
			keep, why := keepLink(st, err == nil, result, stopping)
			attrs := []any{"unit", unit, "job", st.Job, "state", st.ActiveState, "netns", cfg.NetNS, "interface", cfg.Interface}
			if stopping {
				attrs = append(attrs, "result", result)
			}
			if keep {
				log.Info("WireGuard link left as it is: "+why, attrs...)
				return nil
			}
			done, err := closeLink(cfg.NetNS, cfg.Interface)
			if err != nil {
				return fmt.Errorf("%s, but the WireGuard link could not be taken down: %w", why, err)
			}
			log.Info("WireGuard link closed: "+why+"; "+done, attrs...)
			return nil
		},
	}
	cmd.Flags().StringVar(&unit, "unit", unit, "the systemd unit of the daemon (%n in a unit file)")
	return cmd
}

// stepDown takes a cluster gateway whose daemon ended off the partners'
// path, in the order a demotion does (the link, then the address), and
// then gives up the active role if the daemon held it, so that another
// gateway takes over at once rather than when the lease runs out.
func stepDown(ctx context.Context, cfg Config, log *slog.Logger) error {
	done, linkErr := closeLink(cfg.NetNS, cfg.Interface)
	var addrErr error
	if a, err := vip.Parse(cfg.VIP, cfg.VIPInterface, cfg.ListenPort, cfg.VIPTable); err != nil {
		addrErr = err
	} else {
		addrErr = a.Release()
	}
	if err := errors.Join(linkErr, addrErr); err != nil {
		// Left to the lease: whoever is promoted must not find this
		// gateway still answering.
		return fmt.Errorf("take this cluster gateway off the partners' path: %w", err)
	}
	log.Info("this cluster gateway stopped answering partners: WireGuard link closed ("+done+"), address released", "netns", cfg.NetNS, "interface", cfg.Interface, "vip", cfg.VIP)
	if err := resign(ctx, cfg, log); err != nil {
		log.Warn("the active role moves when its lease runs out", "err", err)
	}
	return nil
}

// unitState is what systemd says of the daemon's unit while the hook runs.
type unitState struct {
	// Job is the type of the unit's pending or running job (start, stop,
	// restart…), empty for none; ActiveState is active, inactive, failed…
	Job, ActiveState string
}

// keepLink decides whether systemd is about to run the daemon again, which
// keeps the link up (partners keep their sessions across a restart), or
// not, which closes it. stopping is true in ExecStopPost, where result is
// $SERVICE_RESULT; known is false when systemd could not be asked.
func keepLink(st unitState, known bool, result string, stopping bool) (bool, string) {
	switch {
	case known && st.Job == "stop":
		return false, "the unit is being stopped"
	case known && slices.Contains([]string{"start", "restart", "try-restart", "reload-or-start", "verify-active"}, st.Job):
		return true, "systemd starts the daemon again (job " + st.Job + ")"
	case stopping && result == "success":
		// Clean exits are not restarted (Restart=on-failure), and with
		// systemd silent a restart cannot be told from a stop: close.
		return false, "the daemon exited cleanly and no restart is pending"
	case stopping:
		// Restart=on-failure restarts it; should systemd give up, the
		// unit fails and OnFailure= runs this hook again.
		return true, "the daemon ended with " + result + " and systemd restarts it (Restart=on-failure)"
	case !known:
		return false, "systemd's view of the unit is unknown"
	case st.ActiveState == "inactive" || st.ActiveState == "failed":
		return false, "the unit is " + st.ActiveState + " and nothing starts it again"
	}
	// Running, starting, or stopping with its own ExecStopPost to decide.
	return true, "the unit is " + st.ActiveState
}

// unitStateOf asks systemctl for the unit's state and the type of its job.
func unitStateOf(ctx context.Context, unit string) (unitState, error) {
	var st unitState
	out, err := exec.CommandContext(ctx, "systemctl", "show", "--property=ActiveState", "--value", "--", unit).Output()
	if err != nil {
		return st, fmt.Errorf("systemctl show %s: %w", unit, err)
	}
	st.ActiveState = strings.TrimSpace(string(out))
	out, err = exec.CommandContext(ctx, "systemctl", "list-jobs", "--no-legend", "--no-pager", "--", unit).Output()
	if err != nil {
		return st, fmt.Errorf("systemctl list-jobs %s: %w", unit, err)
	}
	st.Job = jobType(string(out), unit)
	return st, nil
}

// jobType reads the TYPE column of `systemctl list-jobs --no-legend`
// (JOB UNIT TYPE STATE) for the unit.
func jobType(listJobs, unit string) string {
	for _, line := range strings.Split(listJobs, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[1] == unit {
			return f[2]
		}
	}
	return ""
}

// closeLink takes the interface in the gateway namespace down and says
// what it found. Neither a missing namespace nor a missing interface is an
// error: there is nothing to close.
func closeLink(netnsName, iface string) (string, error) {
	ns, err := gwns.OpenExisting(netnsName)
	if err != nil {
		return "", err
	}
	if ns == nil {
		return "no network namespace " + netnsName, nil
	}
	defer ns.Close()
	link, err := ns.Netlink().LinkByName(iface)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return "no interface " + iface + " (userspace WireGuard ends with the daemon)", nil
	case err != nil:
		return "", fmt.Errorf("look up %s in network namespace %s: %w", iface, netnsName, err)
	case link.Attrs().Flags&net.FlagUp == 0:
		return iface + " was already down", nil
	}
	if err := ns.Netlink().LinkSetDown(link); err != nil {
		return "", fmt.Errorf("take %s down in network namespace %s: %w", iface, netnsName, err)
	}
	return iface + " taken down", nil
}
