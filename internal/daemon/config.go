package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/extranetgw/extranet/internal/gwns"
	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/refusals"
	"github.com/extranetgw/extranet/internal/syslog"
	"github.com/extranetgw/extranet/internal/timespec"
	"github.com/extranetgw/extranet/internal/validate"
	"github.com/extranetgw/extranet/internal/vip"
)

// Config is every setting of extranetd. Each has a flag and a key of the
// same name (dashes and all) in the YAML config file; flags win.
type Config struct {
	StateDir          string        `yaml:"state-dir"`
	Socket            string        `yaml:"socket"`
	SocketGroup       string        `yaml:"socket-group"`
	TunnelNetwork     string        `yaml:"tunnel-network"`
	OrgBlockBits      int           `yaml:"org-block-bits"`
	Interface         string        `yaml:"interface"`
	NetNS             string        `yaml:"netns"`
	HostVeth          string        `yaml:"host-veth"`
	LinkNetwork       string        `yaml:"link-network"`
	EgressInterfaces  []string      `yaml:"egress-interface"`
	ListenPort        int           `yaml:"listen-port"`
	Endpoint          string        `yaml:"endpoint"`
	ClientDNS         []string      `yaml:"client-dns"`
	MTU               int           `yaml:"mtu"`
	WireGuard         string        `yaml:"wireguard"`
	Masquerade        bool          `yaml:"masquerade"`
	IPTablesMode      string        `yaml:"iptables-mode"`
	ReconcileInterval time.Duration `yaml:"reconcile-interval"`
	StatsInterval     time.Duration `yaml:"stats-interval"`
	ApplyTimeout      time.Duration `yaml:"apply-timeout"`
	MaxPeerLifetime   string        `yaml:"max-peer-lifetime"`
	ExpireIdle        string        `yaml:"expire-idle"`
	ExpireUnused      string        `yaml:"expire-unused"`
	ExpireAction      string        `yaml:"expire-action"`
	AuditRetention    string        `yaml:"audit-retention"`
	// A cluster's shared state (docs/cluster.md): etcd's client URLs, and
	// where under its keys the state lives.
	EtcdEndpoints []string `yaml:"etcd-endpoints"`
	EtcdPrefix    string   `yaml:"etcd-prefix"`
	ClusterName   string   `yaml:"cluster-name"`
	// TLS to etcd: the CA that signed etcd's certificate, and this
	// gateway's client certificate and key, when etcd asks for one.
	EtcdCAFile   string `yaml:"etcd-ca-file"`
	EtcdCertFile string `yaml:"etcd-cert-file"`
	EtcdKeyFile  string `yaml:"etcd-key-file"`
	// VIP is the address partners dial where a cluster's gateways take
	// turns answering them, on VIPInterface (docs/cluster.md).
	VIP          string `yaml:"vip"`
	VIPInterface string `yaml:"vip-interface"`
	// VIPTable is the routing table WireGuard's packets use while the
	// gateway holds VIP, so that they leave from it.
	VIPTable int `yaml:"vip-table"`
	// ClusterListen is where the other gateways ask this one whether it
	// reaches etcd (the failsafe, docs/cluster.md): host:port on the
	// network the gateways share.
	ClusterListen string `yaml:"cluster-listen"`
	// RoleTTL is the active role's lease: an active that died is replaced
	// within about this.
	RoleTTL time.Duration `yaml:"role-ttl"`
	// What partners did (docs/activity.md): one record per connection.
	ActivityLog       bool   `yaml:"activity-log"`
	ActivityRetention string `yaml:"activity-retention"`
	// ActivityInterim is how often a connection still open gets a record
	// of what it carried since its last one (0: only when it ends).
	ActivityInterim time.Duration `yaml:"activity-interim"`
	// ActivitySyslog also sends each record to a syslog receiver, as RFC
	// 5424 with the record's JSON as its text (off when empty).
	ActivitySyslog         string `yaml:"activity-syslog"`
	ActivitySyslogFacility string `yaml:"activity-syslog-facility"`
	ActivitySyslogCA       string `yaml:"activity-syslog-ca"`
	// What is done about a partner that scans (docs/activity.md).
	ScanMode    string   `yaml:"scan-mode"`
	ScanWarn    int      `yaml:"scan-warn"`
	ScanSuspend int      `yaml:"scan-suspend"`
	ScanAllow   []string `yaml:"scan-allow"`
	// Alerts that reach people (docs/alerts.md): off while AlertWebhook
	// is empty.
	AlertWebhook           string `yaml:"alert-webhook"`
	AlertWebhookSecretFile string `yaml:"alert-webhook-secret-file"`
	AlertExpiryDays        int    `yaml:"alert-expiry-days"`
	MetricsListen          string `yaml:"metrics-listen"`
	PprofListen            string `yaml:"pprof-listen"`
	// Partner self-enrollment (docs/enrollment.md): off while
	// EnrollListen is empty.
	EnrollListen         string        `yaml:"enroll-listen"`
	EnrollTLSCert        string        `yaml:"enroll-tls-cert"`
	EnrollTLSKey         string        `yaml:"enroll-tls-key"`
	EnrollURL            string        `yaml:"enroll-url"`
	EnrollTrustedProxies []string      `yaml:"enroll-trusted-proxy"`
	EnrollRequestTTL     time.Duration `yaml:"enroll-request-ttl"`
	LogLevel             string        `yaml:"log-level"`
	LogFormat            string        `yaml:"log-format"`
}

// UplinkName is the gateway namespace's end of the veth pair.
const UplinkName = "uplink"

// Defaults returns the documented defaults.
func Defaults() Config {
	return Config{
		StateDir:               "/var/lib/extranet",
		Socket:                 "/run/extranet/extranetd.sock",
		SocketGroup:            "extranet",
		TunnelNetwork:          "100.64.0.0/16",
		OrgBlockBits:           24,
		Interface:              "wg-ext",
		NetNS:                  "extranet",
		HostVeth:               "extranet0",
		LinkNetwork:            "169.254.100.0/30",
		ListenPort:             51820,
		WireGuard:              "auto",
		Masquerade:             true,
		IPTablesMode:           "auto",
		ReconcileInterval:      10 * time.Second,
		EtcdPrefix:             "/extranet/",
		RoleTTL:                2 * time.Second,
		VIPTable:               51820,
		ApplyTimeout:           5 * time.Second,
		StatsInterval:          30 * time.Second,
		MaxPeerLifetime:        "0",
		ExpireIdle:             "30d",
		ExpireUnused:           "14d",
		ExpireAction:           "suspend",
		AuditRetention:         "0",
		ActivityLog:            true,
		ActivityRetention:      "90d",
		ActivityInterim:        5 * time.Minute,
		ActivitySyslogFacility: "local0",
		ScanMode:               refusals.ScanSuspend,
		ScanWarn:               refusals.DefaultWarnAt,
		ScanSuspend:            refusals.DefaultSuspendAt,
		AlertExpiryDays:        7,
		EnrollRequestTTL:       72 * time.Hour,
		LogLevel:               "info",
		LogFormat:              "text",
	}
}

// BindFlags registers the flags on fs, with c's values as defaults.
func (c *Config) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "directory of the state database and the gateway key (0700)")
	fs.StringVar(&c.Socket, "socket", c.Socket, "unix socket of the API")
	fs.StringVar(&c.SocketGroup, "socket-group", c.SocketGroup, "group allowed to use the socket (mode 0660)")
	fs.StringVar(&c.TunnelNetwork, "tunnel-network", c.TunnelNetwork, "IPv4 network partner addresses are taken from")
	fs.IntVar(&c.OrgBlockBits, "org-block-bits", c.OrgBlockBits, "prefix length of each organisation's address block")
	fs.StringVar(&c.Interface, "interface", c.Interface, "WireGuard interface name")
	fs.StringVar(&c.NetNS, "netns", c.NetNS, "network namespace of the gateway (created under /run/netns): the WireGuard interface, the rules and the ipsets live there")
	fs.StringVar(&c.HostVeth, "host-veth", c.HostVeth, "host end of the veth pair to the gateway namespace")
	fs.StringVar(&c.LinkNetwork, "link-network", c.LinkNetwork, "IPv4 /30 or /31 of the veth pair (host takes the first address, the namespace the next)")
	fs.StringSliceVar(&c.EgressInterfaces, "egress-interface", c.EgressInterfaces, "host interfaces partner traffic may leave by (default: those routing toward granted subnets, bridges never)")
	fs.IntVar(&c.ListenPort, "listen-port", c.ListenPort, "UDP port WireGuard listens on")
	fs.StringVar(&c.Endpoint, "endpoint", c.Endpoint, "public HOST:PORT partners dial (required to issue peers)")
	fs.StringSliceVar(&c.ClientDNS, "client-dns", c.ClientDNS, "DNS servers or search domains written into client configs")
	fs.IntVar(&c.MTU, "mtu", c.MTU, "MTU of the interface and of client configs (0: WireGuard's default)")
	fs.StringVar(&c.WireGuard, "wireguard", c.WireGuard, "auto, kernel or userspace")
	fs.BoolVar(&c.Masquerade, "masquerade", c.Masquerade, "masquerade partner traffic toward internal networks")
	fs.StringVar(&c.IPTablesMode, "iptables-mode", c.IPTablesMode, "auto, nft or legacy")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", c.ReconcileInterval, "period of the drift-repairing reconcile")
	fs.StringSliceVar(&c.EtcdEndpoints, "etcd-endpoints", c.EtcdEndpoints, "client URLs of the etcd that holds a cluster's shared state (docs/cluster.md); none: this gateway's state is its own")
	fs.StringVar(&c.EtcdPrefix, "etcd-prefix", c.EtcdPrefix, "key prefix of the cluster's state in etcd")
	fs.StringVar(&c.EtcdCAFile, "etcd-ca-file", c.EtcdCAFile, "PEM CA certificate that signed etcd's (for https:// endpoints; default: the system's)")
	fs.StringVar(&c.EtcdCertFile, "etcd-cert-file", c.EtcdCertFile, "PEM client certificate this gateway shows etcd")
	fs.StringVar(&c.EtcdKeyFile, "etcd-key-file", c.EtcdKeyFile, "PEM private key of --etcd-cert-file (0600)")
	fs.StringVar(&c.VIP, "vip", c.VIP, "address partners dial, with its network's length (192.0.2.10/24), held by whichever gateway of the cluster is active; none: every gateway answers")
	fs.StringVar(&c.VIPInterface, "vip-interface", c.VIPInterface, "host interface that holds --vip while this gateway is active")
	fs.IntVar(&c.VIPTable, "vip-table", c.VIPTable, "routing table that makes WireGuard's packets leave from --vip while this gateway holds it")
	fs.StringVar(&c.ClusterListen, "cluster-listen", c.ClusterListen, "host:port where the other gateways of the cluster ask this one whether it reaches etcd, so that the active keeps answering partners while etcd is gone for all (needed with --vip)")
	fs.DurationVar(&c.RoleTTL, "role-ttl", c.RoleTTL, "lease of the active role in etcd: an active that died is replaced within about this (etcd rounds it to seconds, at least its own minimum)")
	fs.StringVar(&c.ClusterName, "cluster-name", c.ClusterName, "this gateway's name among the cluster's (default: the first label of the host name)")
	fs.DurationVar(&c.ApplyTimeout, "apply-timeout", c.ApplyTimeout, "how long a request waits for the kernel to follow before it answers \"saved but not in force yet\"")
	fs.DurationVar(&c.StatsInterval, "stats-interval", c.StatsInterval, "period of the handshake and traffic poller")
	fs.StringVar(&c.MaxPeerLifetime, "max-peer-lifetime", c.MaxPeerLifetime, "longest expiry a peer may get, e.g. 365d (0: no limit)")
	fs.StringVar(&c.ExpireIdle, "expire-idle", c.ExpireIdle, "default of extranetctl expire --idle: last handshake older than this")
	fs.StringVar(&c.ExpireUnused, "expire-unused", c.ExpireUnused, "default of extranetctl expire --unused: issued longer ago and never connected")
	fs.StringVar(&c.ExpireAction, "expire-action", c.ExpireAction, "default of extranetctl expire --action: suspend or revoke")
	fs.StringVar(&c.AuditRetention, "audit-retention", c.AuditRetention, "drop audit events older than this, e.g. 400d (0: keep all)")
	fs.BoolVar(&c.ActivityLog, "activity-log", c.ActivityLog, "record each partner connection (who, to what, bytes each way, how it ended) under the state directory's activity/, for extranetctl activity")
	fs.StringVar(&c.ActivityRetention, "activity-retention", c.ActivityRetention, "drop activity records older than this, e.g. 400d")
	fs.DurationVar(&c.ActivityInterim, "activity-interim", c.ActivityInterim, "how often a partner connection still open gets a record of what it carried since its last one, so long sessions show before they end (0: only when it ends)")
	fs.StringVar(&c.ActivitySyslog, "activity-syslog", c.ActivitySyslog, "also send each activity record to syslog, as RFC 5424 with the record's JSON as the message, at this `ADDRESS`: udp://HOST[:PORT], tcp://HOST[:PORT], tls://HOST[:PORT] or unix:///PATH (off when empty)")
	fs.StringVar(&c.ActivitySyslogFacility, "activity-syslog-facility", c.ActivitySyslogFacility, "syslog facility of the activity records: local0 to local7, daemon, auth, authpriv or security")
	fs.StringVar(&c.ActivitySyslogCA, "activity-syslog-ca", c.ActivitySyslogCA, "PEM `FILE` of the CA certificates a tls:// syslog receiver is verified against (default: the system's)")
	fs.StringVar(&c.ScanMode, "scan-mode", c.ScanMode, "what is done about a peer refused at --scan-suspend distinct destinations within a minute: suspend it (and warn at --scan-warn), observe (warn only) or off")
	fs.IntVar(&c.ScanWarn, "scan-warn", c.ScanWarn, "distinct refused destinations (address, protocol, port) within a minute at which a peer is reported as scanning")
	fs.IntVar(&c.ScanSuspend, "scan-suspend", c.ScanSuspend, "distinct refused destinations within a minute at which a scanning peer is suspended")
	fs.StringSliceVar(&c.ScanAllow, "scan-allow", c.ScanAllow, "peers (ORG/NAME) never treated as scanners, such as a partner's sanctioned vulnerability scanner")
	fs.StringVar(&c.AlertWebhook, "alert-webhook", c.AlertWebhook, "post signed alerts (scans, enrollment requests waiting, peers and organisations about to expire) to this http(s) `URL` (off when empty)")
	fs.StringVar(&c.AlertWebhookSecretFile, "alert-webhook-secret-file", c.AlertWebhookSecretFile, "file (0600) holding the secret that signs the alerts (HMAC-SHA256), at least 16 bytes")
	fs.IntVar(&c.AlertExpiryDays, "alert-expiry-days", c.AlertExpiryDays, "alert when an active peer or organisation expires within this many `DAYS` (0: never)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "serve Prometheus /metrics and /healthz on this TCP address, e.g. 127.0.0.1:9586 (off when empty)")
	fs.StringVar(&c.PprofListen, "pprof-listen", c.PprofListen, "serve Go's profiler (/debug/pprof/) on this TCP address, e.g. 127.0.0.1:6060, from the first moment (off when empty; loopback only, for investigations)")
	fs.StringVar(&c.EnrollListen, "enroll-listen", c.EnrollListen, "serve the partner enrollment page over TLS on this TCP address, e.g. :8443 (off when empty; needs --enroll-tls-cert and --enroll-tls-key)")
	fs.StringVar(&c.EnrollTLSCert, "enroll-tls-cert", c.EnrollTLSCert, "PEM certificate (chain) of the enrollment page")
	fs.StringVar(&c.EnrollTLSKey, "enroll-tls-key", c.EnrollTLSKey, "PEM private key of the enrollment page's certificate")
	fs.StringVar(&c.EnrollURL, "enroll-url", c.EnrollURL, "https://HOST[:PORT] partners open enrollment links at (default: the --endpoint host and the --enroll-listen port; set it behind a reverse proxy)")
	fs.StringSliceVar(&c.EnrollTrustedProxies, "enroll-trusted-proxy", c.EnrollTrustedProxies, "addresses or prefixes of reverse proxies in front of the enrollment page, whose X-Forwarded-For names the partner")
	fs.DurationVar(&c.EnrollRequestTTL, "enroll-request-ttl", c.EnrollRequestTTL, "how long an enrollment request waits for approval")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
}

// LoadFile reads a YAML config file into c, refusing unknown keys so a typo
// is an error rather than a silently ignored setting. Flags explicitly set
// on fs are re-applied on top.
func (c *Config) LoadFile(path string, fs *pflag.FlagSet) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	// Flags and the struct share memory, so remember what was set on the
	// command line before the file overwrites it, and set it again after.
	type setFlag struct {
		f     *pflag.Flag
		value string
		slice []string
	}
	var set []setFlag
	fs.Visit(func(f *pflag.Flag) {
		sf := setFlag{f: f, value: f.Value.String()}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			sf.slice = sv.GetSlice()
		}
		set = append(set, sf)
	})
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	for _, sf := range set {
		var err error
		if sv, ok := sf.f.Value.(pflag.SliceValue); ok {
			err = sv.Replace(sf.slice)
		} else {
			err = sf.f.Value.Set(sf.value)
		}
		if err != nil {
			return fmt.Errorf("--%s: %w", sf.f.Name, err)
		}
	}
	return nil
}

// Settings are the parsed forms of the settings that need parsing.
type Settings struct {
	// EnrollURL is where partners open enrollment links; empty when
	// enrollment is off. EnrollProxies are the trusted reverse proxies.
	EnrollURL       string
	EnrollProxies   []netip.Prefix
	Plan            ipam.Plan
	Link            gwns.Link
	MaxPeerLifetime time.Duration
	ExpireIdle      time.Duration
	ExpireUnused    time.Duration
	AuditRetention  time.Duration
	// ActivityRetention is set when ActivityLog is on.
	ActivityRetention time.Duration
	// Syslog is set when ActivitySyslog is.
	Syslog *syslog.Options
	Scan   refusals.ScanOptions
	// VIP is set where the cluster's gateways take turns (--vip).
	VIP *vip.Address
	// AlertSecret signs the alerts; set when AlertWebhook is.
	AlertSecret []byte
}

// Validate checks every setting and returns the parsed ones.
func (c *Config) Validate() (Settings, error) {
	var st Settings
	if err := validEtcd(c.EtcdEndpoints, c.EtcdPrefix); err != nil {
		return st, err
	}
	if (c.EtcdCertFile == "") != (c.EtcdKeyFile == "") {
		return st, fmt.Errorf("--etcd-cert-file and --etcd-key-file go together: give both, or neither")
	}
	pfx, err := netip.ParsePrefix(c.TunnelNetwork)
	if err != nil {
		return st, fmt.Errorf("--tunnel-network %q is not a prefix such as 100.64.0.0/16", c.TunnelNetwork)
	}
	plan, err := ipam.NewPlan(pfx, c.OrgBlockBits)
	if err != nil {
		return st, fmt.Errorf("--tunnel-network/--org-block-bits: %w", err)
	}
	if c.Endpoint != "" {
		host, port, err := net.SplitHostPort(c.Endpoint)
		if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			return st, fmt.Errorf("--endpoint %q is not HOST:PORT, e.g. vpn.example.com:51820", c.Endpoint)
		}
	}
	if c.ListenPort < 1 || c.ListenPort > 65535 {
		return st, fmt.Errorf("--listen-port %d is not a port from 1 to 65535", c.ListenPort)
	}
	if c.MTU != 0 && (c.MTU < 1280 || c.MTU > 9000) {
		return st, fmt.Errorf("--mtu %d is outside 1280-9000", c.MTU)
	}
	switch c.WireGuard {
	case "auto", "kernel", "userspace":
	default:
		return st, fmt.Errorf("--wireguard %q: use auto, kernel or userspace", c.WireGuard)
	}
	st.Plan = plan
	link, err := netip.ParsePrefix(c.LinkNetwork)
	if err != nil {
		return st, fmt.Errorf("--link-network %q is not a prefix such as 169.254.100.0/30", c.LinkNetwork)
	}
	st.Link = gwns.Link{HostVeth: c.HostVeth, NSVeth: UplinkName, Network: link, Tunnel: plan.Network}
	if err := st.Link.Validate(); err != nil {
		return st, fmt.Errorf("--link-network/--host-veth: %w", err)
	}
	for _, e := range c.EgressInterfaces {
		if !ifaceName(e) || e == c.HostVeth {
			return st, fmt.Errorf("--egress-interface %q is not the name of a host interface partner traffic may leave by", e)
		}
	}
	if err := gwns.ValidName(c.NetNS); err != nil {
		return st, fmt.Errorf("--netns: %w", err)
	}
	if c.MaxPeerLifetime != "" && c.MaxPeerLifetime != "0" {
		if st.MaxPeerLifetime, err = timespec.ParseDuration(c.MaxPeerLifetime); err != nil {
			return st, fmt.Errorf("--max-peer-lifetime: %w", err)
		}
	}
	if c.ApplyTimeout < 100*time.Millisecond {
		return st, fmt.Errorf("--apply-timeout %s must be at least 100ms", c.ApplyTimeout)
	}
	if c.ReconcileInterval < 100*time.Millisecond || c.StatsInterval < 100*time.Millisecond {
		return st, fmt.Errorf("--reconcile-interval and --stats-interval must be at least 100ms")
	}
	if st.ExpireIdle, err = timespec.ParseDuration(c.ExpireIdle); err != nil {
		return st, fmt.Errorf("--expire-idle: %w", err)
	}
	if st.ExpireUnused, err = timespec.ParseDuration(c.ExpireUnused); err != nil {
		return st, fmt.Errorf("--expire-unused: %w", err)
	}
	if c.AuditRetention != "" && c.AuditRetention != "0" {
		if st.AuditRetention, err = timespec.ParseDuration(c.AuditRetention); err != nil {
			return st, fmt.Errorf("--audit-retention: %w", err)
		}
	}
	if c.ActivityLog {
		if st.ActivityRetention, err = timespec.ParseDuration(c.ActivityRetention); err != nil || st.ActivityRetention <= 0 {
			return st, fmt.Errorf("--activity-retention %q: a duration such as 90d is needed while --activity-log is on (%v)", c.ActivityRetention, err)
		}
		if c.ActivityInterim != 0 && c.ActivityInterim < time.Second {
			return st, fmt.Errorf("--activity-interim %s: give 0 (records only when connections end) or at least 1s; 5m is the default", c.ActivityInterim)
		}
	}
	if st.Syslog, err = c.syslog(); err != nil {
		return st, err
	}
	if c.VIP != "" || c.VIPInterface != "" {
		if len(c.EtcdEndpoints) == 0 {
			return st, fmt.Errorf("--vip is for a cluster's gateways taking turns; it needs --etcd-endpoints (docs/cluster.md)")
		}
		if c.RoleTTL < time.Second || c.RoleTTL > time.Minute {
			return st, fmt.Errorf("--role-ttl %s: give 1s to 1m (2s: a failover within about 2.5 s)", c.RoleTTL)
		}
		if host, port, err := net.SplitHostPort(c.ClusterListen); err != nil || !reachableHost(host) || port == "0" {
			return st, fmt.Errorf("--vip needs --cluster-listen %q to be HOST:PORT on the network the gateways share (10.0.0.11:51821, say): the other gateways ask this one there whether it reaches etcd", c.ClusterListen)
		}
		if st.VIP, err = vip.Parse(c.VIP, c.VIPInterface, c.ListenPort, c.VIPTable); err != nil {
			return st, err
		}
		if c.VIPInterface == c.HostVeth || !ifaceName(c.VIPInterface) {
			return st, fmt.Errorf("--vip-interface %q is not the name of the host interface partners reach the gateway by", c.VIPInterface)
		}
	}
	st.Scan = refusals.ScanOptions{Mode: c.ScanMode, WarnAt: c.ScanWarn, SuspendAt: c.ScanSuspend, Allow: c.ScanAllow}
	if err := st.Scan.Check(); err != nil {
		return st, fmt.Errorf("--%w", err)
	}
	for _, p := range c.ScanAllow {
		org, name, ok := strings.Cut(p, "/")
		if !ok || validate.Name("org", org) != nil || validate.Name("peer", name) != nil {
			return st, fmt.Errorf("--scan-allow %q is not a peer's ORG/NAME, e.g. acme/scanner", p)
		}
	}
	if err := c.validateAlerts(&st); err != nil {
		return st, err
	}
	if c.PprofListen != "" {
		host, _, err := net.SplitHostPort(c.PprofListen)
		if ip, perr := netip.ParseAddr(host); err != nil || perr != nil || !ip.IsLoopback() {
			return st, fmt.Errorf("--pprof-listen %q must be a loopback HOST:PORT such as 127.0.0.1:6060: profiles are not for the network", c.PprofListen)
		}
	}
	if c.ExpireAction != "suspend" && c.ExpireAction != "revoke" {
		return st, fmt.Errorf("--expire-action %q: use suspend or revoke", c.ExpireAction)
	}
	if err := c.validateEnroll(&st); err != nil {
		return st, err
	}
	return st, nil
}

// validateEnroll checks the enrollment settings: all or nothing, TLS
// always, and a link base partners can open.
func (c *Config) validateEnroll(st *Settings) error {
	if c.EnrollListen == "" {
		if c.EnrollTLSCert != "" || c.EnrollTLSKey != "" || c.EnrollURL != "" || len(c.EnrollTrustedProxies) > 0 {
			return errors.New("--enroll-tls-cert, --enroll-tls-key, --enroll-url and --enroll-trusted-proxy need --enroll-listen")
		}
		return nil
	}
	_, port, err := net.SplitHostPort(c.EnrollListen)
	if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 1 || p > 65535 {
		return fmt.Errorf("--enroll-listen %q is not [HOST]:PORT, e.g. :8443", c.EnrollListen)
	}
	if c.EnrollTLSCert == "" || c.EnrollTLSKey == "" {
		return errors.New("--enroll-listen needs --enroll-tls-cert and --enroll-tls-key: the page is served over TLS only")
	}
	if c.Endpoint == "" {
		return errors.New("--enroll-listen needs --endpoint HOST:PORT: an enrolled device's config names it")
	}
	if c.EnrollRequestTTL < time.Minute {
		return fmt.Errorf("--enroll-request-ttl %s must be at least a minute", c.EnrollRequestTTL)
	}
	st.EnrollURL = c.EnrollURL
	if st.EnrollURL == "" {
		host, _, _ := net.SplitHostPort(c.Endpoint)
		st.EnrollURL = "https://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(st.EnrollURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return fmt.Errorf("--enroll-url %q is not https://HOST[:PORT]", st.EnrollURL)
	}
	st.EnrollURL = "https://" + u.Host
	for _, p := range c.EnrollTrustedProxies {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			a, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return fmt.Errorf("--enroll-trusted-proxy %q is not an address or prefix", p)
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		st.EnrollProxies = append(st.EnrollProxies, pfx.Masked())
	}
	return nil
}

// validateAlerts checks the webhook's settings and reads its secret, which
// must be readable by root alone: it signs what receivers act on.
func (c *Config) validateAlerts(st *Settings) error {
	if c.AlertExpiryDays < 0 {
		return fmt.Errorf("--alert-expiry-days %d: give a number of days, or 0 for never", c.AlertExpiryDays)
	}
	if c.AlertWebhook == "" {
		if c.AlertWebhookSecretFile != "" {
			return errors.New("--alert-webhook-secret-file needs --alert-webhook")
		}
		return nil
	}
	u, err := url.Parse(c.AlertWebhook)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("--alert-webhook is not an http:// or https:// URL")
	}
	if c.AlertWebhookSecretFile == "" {
		return errors.New("--alert-webhook needs --alert-webhook-secret-file: alerts are signed (make one with `head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE`)")
	}
	fi, err := os.Stat(c.AlertWebhookSecretFile)
	if err != nil {
		return fmt.Errorf("--alert-webhook-secret-file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("--alert-webhook-secret-file %s is mode %04o: others may read the secret; chmod 600 it", c.AlertWebhookSecretFile, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(c.AlertWebhookSecretFile)
	if err != nil {
		return fmt.Errorf("--alert-webhook-secret-file: %w", err)
	}
	st.AlertSecret = bytes.TrimSpace(raw)
	if len(st.AlertSecret) < 16 {
		return fmt.Errorf("--alert-webhook-secret-file %s holds %d bytes: give at least 16", c.AlertWebhookSecretFile, len(st.AlertSecret))
	}
	return nil
}

// ifaceName tells whether s can name a network interface.
func ifaceName(s string) bool {
	return len(s) > 0 && len(s) <= 15 && !strings.ContainsAny(s, "/ \t\n")
}

// reachableHost tells whether another host can reach this one at host:
// not empty, not a wildcard, not loopback.
func reachableHost(host string) bool {
	if host == "" {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return !ip.IsUnspecified() && !ip.IsLoopback()
	}
	return host != "localhost"
}

// syslog checks the activity log's syslog settings; nil when it is off.
func (c *Config) syslog() (*syslog.Options, error) {
	if c.ActivitySyslog == "" {
		if c.ActivitySyslogCA != "" {
			return nil, errors.New("--activity-syslog-ca needs --activity-syslog tls://HOST[:PORT]")
		}
		return nil, nil
	}
	if !c.ActivityLog {
		return nil, fmt.Errorf("--activity-syslog %s needs --activity-log: the records it sends are the activity log's", c.ActivitySyslog)
	}
	t, err := syslog.ParseTarget(c.ActivitySyslog)
	if err != nil {
		return nil, fmt.Errorf("--activity-syslog: %w", err)
	}
	o := &syslog.Options{Target: t, AppName: "extranetd"}
	if o.Facility, err = syslog.ParseFacility(c.ActivitySyslogFacility); err != nil {
		return nil, fmt.Errorf("--activity-syslog-facility: %w", err)
	}
	if c.ActivitySyslogCA != "" {
		if t.Network != "tls" {
			return nil, fmt.Errorf("--activity-syslog-ca is for a tls:// receiver, and --activity-syslog is %s", t)
		}
		if o.RootCAs, err = syslog.LoadCAs(c.ActivitySyslogCA); err != nil {
			return nil, fmt.Errorf("--activity-syslog-ca: %w", err)
		}
	}
	return o, nil
}
