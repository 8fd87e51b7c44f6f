package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/extranetgw/extranet/internal/cluster"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/validate"
	"github.com/extranetgw/extranet/internal/wgdev"
	"github.com/extranetgw/extranet/pkg/api"
)

// validEtcd checks the cluster settings: URLs etcd's client can dial, and
// a prefix that is a directory of keys.
func validEtcd(endpoints []string, prefix string) error {
	for _, e := range endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--etcd-endpoints %q is not a URL such as http://10.0.0.5:2379", e)
		}
	}
	if !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("--etcd-prefix %q must start and end with a slash, such as /extranet/", prefix)
	}
	return nil
}

// dialEtcd returns the cluster's state in the etcd of cfg. etcd's client
// logs nothing of its own: its errors reach ours, with context.
func dialEtcd(cfg Config) (*cluster.Etcd, error) {
	tlsCfg, err := etcdTLS(cfg)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.EtcdEndpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: tlsCfg})
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(cfg.EtcdEndpoints, ","), err)
	}
	return &cluster.Etcd{Client: cli, Prefix: cfg.EtcdPrefix}, nil
}

// joinCluster replaces this gateway's state file with a copy of the
// cluster's state, and returns the etcd revision to follow it from. The
// copy is made anew at every start, so it never starts from a state the
// cluster moved on from while this gateway was down.
//
// When etcd cannot be reached, or has lost its quorum, the gateway starts
// from its last copy, if it has one: its data plane is then what it was
// (revocations it applied stay applied), changes are refused until etcd
// answers, and the copy catches up then (fail static).
func joinCluster(ctx context.Context, cl *cluster.Etcd, path string, log *slog.Logger) (int64, error) {
	ws, fence, rev, err := cl.Load(ctx)
	if err != nil && !errors.Is(err, cluster.ErrNoState) {
		if last, origin, ferr := store.ReadCopy(path); ferr == nil && last > 0 && cl.SetOrigin(origin) == nil {
			log.Warn("etcd cannot be reached; starting from this gateway's last copy of the cluster's state, and refusing changes until etcd answers", "err", err, "revision", last)
			return last + 1, nil
		}
	}
	if err != nil {
		return 0, err
	}
	if err := store.Rebuild(path, fence, cl.Origin(), ws); err != nil {
		return 0, err
	}
	log.Info("copied the cluster's state", "records", len(ws), "revision", fence)
	return rev + 1, nil
}

// followCluster brings this gateway's copy the changes other gateways make
// and hands each to apply, until ctx ends. An error means the copy can no
// longer follow: the daemon exits, and its next start copies the state
// anew; its data plane stays as it was meanwhile (fail static).
func followCluster(ctx context.Context, cl *cluster.Etcd, db *store.DB, from int64, apply func(store.Changes), log *slog.Logger) error {
	return cl.Follow(ctx, db, from, func(ch store.Changes) {
		log.Debug("another gateway changed the state", "peers", len(ch.Peers), "orgs", ch.Orgs)
		apply(ch)
	})
}

func newClusterCmd(cfg *Config, configPath *string) *cobra.Command {
	c := &cobra.Command{
		Use:   "cluster",
		Short: "Share this gateway's state with others through etcd (docs/cluster.md)",
	}
	c.AddCommand(&cobra.Command{
		Use:   "init",
		Short: "Make this gateway's state the cluster's first, losslessly",
		Long: `Write this gateway's whole state (organisations, peers, grants, roles,
invites, the address plan, the audit chain) into the etcd of --etcd-endpoints,
under --etcd-prefix, in one transaction. Run it once, with extranetd stopped,
on the gateway whose state the cluster starts from; it refuses an etcd that
holds a state under the prefix already. Then start extranetd with
--etcd-endpoints on every gateway, each with a copy of this one's gateway.key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadConfig(cmd, cfg, *configPath); err != nil {
				return err
			}
			if len(cfg.EtcdEndpoints) == 0 {
				return fmt.Errorf("cluster init needs --etcd-endpoints (or etcd-endpoints in the config file)")
			}
			if err := validEtcd(cfg.EtcdEndpoints, cfg.EtcdPrefix); err != nil {
				return err
			}
			db, err := store.Open(filepath.Join(cfg.StateDir, DBFile), time.Second)
			if err != nil {
				return err
			}
			defer db.Close()
			cl, err := dialEtcd(*cfg)
			if err != nil {
				return err
			}
			defer cl.Client.Close()
			// The cluster's partners know this gateway's key; every
			// gateway must answer with it.
			key, err := wgdev.LoadOrCreateKey(filepath.Join(cfg.StateDir, KeyFile))
			if err != nil {
				return fmt.Errorf("gateway key: %w", err)
			}
			rev, err := cl.Init(cmd.Context(), db, key.PublicKey().String())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "the cluster's state is this gateway's (etcd revision %d); start extranetd with --etcd-endpoints on every gateway\n", rev)
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "join",
		Short: "Check that this gateway can join the cluster, and copy its state",
		Long: `Check, before this gateway's first start in a cluster, what would make it
fail there: etcd answers at --etcd-endpoints (with the TLS files given), it
holds a cluster's state under --etcd-prefix, and this gateway's key
(gateway.key in --state-dir, copied from a gateway of the cluster) is the
cluster's, since partners' configs name it. Then copy the cluster's state
into this gateway's state file, as every start does. Run it with extranetd
stopped; start extranetd with the same settings afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadConfig(cmd, cfg, *configPath); err != nil {
				return err
			}
			if len(cfg.EtcdEndpoints) == 0 {
				return fmt.Errorf("cluster join needs --etcd-endpoints (or etcd-endpoints in the config file)")
			}
			if _, err := cfg.Validate(); err != nil {
				return err
			}
			keyPath := filepath.Join(cfg.StateDir, KeyFile)
			if _, err := os.Stat(keyPath); err != nil {
				return fmt.Errorf("%s: %w; copy it from a gateway of the cluster (mode 0600): partners' configs name its key", keyPath, err)
			}
			key, err := wgdev.LoadOrCreateKey(keyPath)
			if err != nil {
				return fmt.Errorf("gateway key: %w", err)
			}
			cl, err := dialEtcd(*cfg)
			if err != nil {
				return err
			}
			defer cl.Client.Close()
			ws, fence, _, err := cl.Load(cmd.Context())
			if err != nil {
				return err
			}
			if err := cl.CheckGatewayKey(cmd.Context(), key.PublicKey().String()); err != nil {
				return err
			}
			if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
				return fmt.Errorf("create state directory: %w", err)
			}
			if err := store.Rebuild(filepath.Join(cfg.StateDir, DBFile), fence, cl.Origin(), ws); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "this gateway holds a copy of the cluster's state (%d records, revision %d) and its key; start extranetd with the same settings\n", len(ws), fence)
			return nil
		},
	})
	return c
}

// sink hands the changes other gateways make to the data plane once it
// exists; before that, the reconciler's start reads them from the copy.
type sink struct {
	mu     sync.Mutex
	to     service.Applier
	failed chan error
}

func (s *sink) set(a service.Applier) {
	s.mu.Lock()
	s.to = a
	s.mu.Unlock()
}

func (s *sink) apply(ch store.Changes) {
	s.mu.Lock()
	to := s.to
	s.mu.Unlock()
	if to != nil {
		to.Apply(ch)
	}
}

// done records why following ended; an error stops the daemon.
func (s *sink) done(err error) {
	if err != nil {
		s.failed <- err
	}
}

// clusterView answers status about the shared state.
type clusterView struct {
	cl        *cluster.Etcd
	db        *store.DB
	name      string
	endpoints []string
	// cand is this gateway's candidacy where gateways take turns.
	cand *cluster.Candidate
}

// status asks etcd for a second at most: status must answer while etcd
// does not.
func (v *clusterView) status() *api.ClusterStatus {
	out := &api.ClusterStatus{Name: v.name, EtcdEndpoints: v.endpoints}
	out.CopyRevision, _ = v.db.Fence()
	out.Following, out.Since = v.cl.Following()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if rev, err := v.cl.Latest(ctx); err == nil {
		out.ClusterRevision = rev
	}
	if gws, err := v.cl.Gateways(ctx); err == nil {
		out.Gateways = gws
	}
	if v.cand != nil {
		out.Role = "standby"
		if v.cand.Role().Active {
			out.Role = "active"
		}
		out.Ready = v.cand.Ready()
		out.Active, out.Epoch, _ = v.cl.Active(ctx)
		out.Failovers, _ = v.cl.Failovers(ctx)
	}
	return out
}

// clusterName is this gateway's name in the cluster: --cluster-name, else
// the host's.
func clusterName(cfg Config) (string, error) {
	if cfg.ClusterName != "" {
		if err := validate.Name("cluster", cfg.ClusterName); err != nil {
			return "", err
		}
		return cfg.ClusterName, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("name this gateway in the cluster: %w (set --cluster-name)", err)
	}
	name, _, _ := strings.Cut(strings.ToLower(host), ".")
	if err := validate.Name("host", name); err != nil {
		return "", fmt.Errorf("name this gateway in the cluster: %w; set --cluster-name", err)
	}
	return name, nil
}

// etcdTLS is how this gateway speaks TLS to etcd: nil (plain HTTP) unless
// an endpoint is https:// or a TLS file is given. The state, preshared keys
// included, crosses this connection.
func etcdTLS(cfg Config) (*tls.Config, error) {
	https := false
	for _, e := range cfg.EtcdEndpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if !https && cfg.EtcdCAFile == "" && cfg.EtcdCertFile == "" {
		return nil, nil
	}
	if !https {
		return nil, fmt.Errorf("--etcd-ca-file and --etcd-cert-file need https:// endpoints, not %s", strings.Join(cfg.EtcdEndpoints, ","))
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.EtcdCAFile != "" {
		pem, err := os.ReadFile(cfg.EtcdCAFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca-file: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca-file %s holds no PEM certificate", cfg.EtcdCAFile)
		}
	}
	if cfg.EtcdCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.EtcdCertFile, cfg.EtcdKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert-file/--etcd-key-file: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// switchoverWait bounds how long a switchover waits for another gateway to
// take the role: the active's hand-over, then a standby's promotion.
const switchoverWait = 10 * time.Second

// switchover asks the active to hand the role to another gateway.
func (v *clusterView) switchover(ctx context.Context) (api.Switchover, error) {
	if v == nil || v.cand == nil {
		return api.Switchover{}, api.Errorf(api.CodeConflict, "this gateway does not take turns answering partners: switchover needs a cluster whose gateways run with --vip (docs/cluster.md)")
	}
	// Each standby waits a while after it reaches etcd before it would
	// take the role (the failsafe): handing over to none that would is
	// an outage.
	ready, err := v.cand.ReadyStandbys(ctx)
	if err != nil {
		return api.Switchover{}, api.Errorf(api.CodeConflict, "switchover: %v", err)
	}
	if len(ready) == 0 {
		return api.Switchover{}, api.Errorf(api.CodeConflict, "switchover: no other gateway is ready to take over (a standby takes the role only %s after it reached etcd, and must be listed with its cluster-listen address; see extranetctl cluster status); try again shortly", v.cand.ReadyAfter())
	}
	from, to, epoch, err := v.cl.Switchover(ctx, switchoverWait)
	if err != nil {
		return api.Switchover{From: from, To: to, Epoch: epoch}, api.Errorf(api.CodeConflict, "switchover: %v", err)
	}
	return api.Switchover{From: from, To: to, Epoch: epoch}, nil
}

// instanceID tells this gateway's runs from another gateway's that has its
// name: the host's machine ID (its name where it has none) and the state
// directory, hashed.
func instanceID(stateDir string) string {
	id, err := os.ReadFile("/etc/machine-id")
	if err != nil {
		h, _ := os.Hostname()
		id = []byte(h)
	}
	abs, _ := filepath.Abs(stateDir)
	sum := sha256.Sum256([]byte(strings.TrimSpace(string(id)) + "\x00" + abs))
	return hex.EncodeToString(sum[:8])
}

// resign gives up this gateway's hold on the active role, if it held it
// when its daemon ended (the stop hook, once the link and the address are
// down).
func resign(ctx context.Context, cfg Config, log *slog.Logger) error {
	name, err := clusterName(cfg)
	if err != nil {
		return err
	}
	cl, err := dialEtcd(cfg)
	if err != nil {
		return err
	}
	defer cl.Client.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	held, err := cl.Resign(ctx, name)
	if err != nil {
		return err
	}
	if held {
		log.Info("gave up the active role: another gateway takes over now", "gateway", name)
	}
	return nil
}
