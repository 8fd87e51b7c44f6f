package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestSampleConfigLoads(t *testing.T) {
	cfg := Defaults()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	cfg.BindFlags(fs)
	if err := cfg.LoadFile("../../configs/extranetd.yaml", fs); err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/var/lib/extranet" || cfg.ListenPort != 51820 || cfg.ReconcileInterval != 10*time.Second {
		t.Errorf("sample config differs from defaults: %+v", cfg)
	}
	if _, err := cfg.Validate(); err != nil {
		t.Errorf("sample config does not validate: %v", err)
	}
}

func TestFlagsWinOverFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("listen-port: 4000\ninterface: wg-file\nclient-dns: [10.0.0.53]\nreconcile-interval: 3s\n"), 0o600)
	cfg := Defaults()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	cfg.BindFlags(fs)
	if err := fs.Parse([]string{"--listen-port", "5000", "--client-dns", "1.1.1.1,9.9.9.9"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.LoadFile(path, fs); err != nil {
		t.Fatal(err)
	}
	if cfg.ListenPort != 5000 || cfg.Interface != "wg-file" || cfg.ReconcileInterval != 3*time.Second {
		t.Errorf("got port %d iface %s interval %v", cfg.ListenPort, cfg.Interface, cfg.ReconcileInterval)
	}
	if len(cfg.ClientDNS) != 2 || cfg.ClientDNS[0] != "1.1.1.1" {
		t.Errorf("client-dns = %v, want the flag's", cfg.ClientDNS)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("listen-prot: 4000\n"), 0o600)
	cfg := Defaults()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	cfg.BindFlags(fs)
	if err := cfg.LoadFile(path, fs); err == nil {
		t.Fatal("a misspelt key was accepted")
	}
}

func TestValidateNamesTheBadValue(t *testing.T) {
	for _, mod := range []func(*Config){
		func(c *Config) { c.TunnelNetwork = "100.64.0.1/16" },
		func(c *Config) { c.Endpoint = "no-port" },
		func(c *Config) { c.ListenPort = 70000 },
		func(c *Config) { c.WireGuard = "magic" },
		func(c *Config) { c.MaxPeerLifetime = "forever" },
		func(c *Config) { c.OrgBlockBits = 8 },
		func(c *Config) { c.PprofListen = "0.0.0.0:6060" },
		func(c *Config) { c.PprofListen = "6060" },
	} {
		c := Defaults()
		mod(&c)
		if _, err := c.Validate(); err == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}

func TestPprofOnLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:6060": true, "[::1]:6060": true, "10.0.0.1:6060": false, ":6060": false} {
		c := Defaults()
		c.PprofListen = addr
		if _, err := c.Validate(); (err == nil) != ok {
			t.Errorf("--pprof-listen %s: err = %v, want accepted=%v", addr, err, ok)
		}
	}
}

// TestEnrollSettings: the page is on only with TLS, its links name an
// https URL, and nothing is half set.
func TestEnrollSettings(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		url  string
		fail string
	}{
		{func(c *Config) { c.EnrollTLSCert = "/c" }, "", "need --enroll-listen"},
		{func(c *Config) { c.EnrollListen = ":8443" }, "", "needs --enroll-tls-cert"},
		{func(c *Config) { c.EnrollListen, c.EnrollTLSCert, c.EnrollTLSKey = ":8443", "/c", "/k" }, "", "needs --endpoint"},
		{func(c *Config) {
			c.EnrollListen, c.EnrollTLSCert, c.EnrollTLSKey, c.Endpoint = ":8443", "/c", "/k", "vpn.example.com:51820"
		}, "https://vpn.example.com:8443", ""},
		{func(c *Config) {
			c.EnrollListen, c.EnrollTLSCert, c.EnrollTLSKey, c.EnrollURL = ":8443", "/c", "/k", "https://join.example.com/"
			c.Endpoint = "vpn.example.com:51820"
		}, "https://join.example.com", ""},
		{func(c *Config) {
			c.EnrollListen, c.EnrollTLSCert, c.EnrollTLSKey, c.EnrollURL = ":8443", "/c", "/k", "http://join.example.com"
			c.Endpoint = "vpn.example.com:51820"
		}, "", "is not https://"},
		{func(c *Config) {
			c.EnrollListen, c.EnrollTLSCert, c.EnrollTLSKey, c.EnrollURL = ":8443", "/c", "/k", "https://join.example.com/x?y"
			c.Endpoint = "vpn.example.com:51820"
		}, "", "is not https://"},
		{func(c *Config) {
			c.EnrollListen, c.EnrollTLSCert, c.EnrollTLSKey, c.EnrollURL = "8443", "/c", "/k", "https://j.example"
		}, "", "is not [HOST]:PORT"},
		{func(c *Config) {
			c.EnrollListen, c.EnrollTLSCert, c.EnrollTLSKey, c.EnrollURL = ":8443", "/c", "/k", "https://j.example"
			c.EnrollTrustedProxies, c.Endpoint = []string{"proxy"}, "vpn.example.com:51820"
		}, "", "not an address or prefix"},
	} {
		c := Defaults()
		tc.mod(&c)
		st, err := c.Validate()
		switch {
		case tc.fail != "" && (err == nil || !strings.Contains(err.Error(), tc.fail)):
			t.Errorf("%+v: %v, want %q", c, err, tc.fail)
		case tc.fail == "" && (err != nil || st.EnrollURL != tc.url):
			t.Errorf("%+v: %v, url %q, want %q", c, err, st.EnrollURL, tc.url)
		}
	}
}

// TestScanAndAlertSettings: scan thresholds in order, allowlisted names
// that are peers' names; a webhook only with a secret only its owner can
// read, long enough, and errors that never repeat the URL's path.
func TestScanAndAlertSettings(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "0123456789abcdef0123\n", 0o600)
	open := write("open", "0123456789abcdef0123\n", 0o644)
	short := write("short", "tiny\n", 0o600)
	ca := write("ca.pem", testCAPEM, 0o644)
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string // "" for accepted
	}{
		"defaults":           {func(*Config) {}, ""},
		"observe":            {func(c *Config) { c.ScanMode = "observe" }, ""},
		"a mode":             {func(c *Config) { c.ScanMode = "kill" }, "--scan-mode"},
		"warn above suspend": {func(c *Config) { c.ScanWarn, c.ScanSuspend = 200, 100 }, "--scan-warn 200"},
		"allow a name":       {func(c *Config) { c.ScanAllow = []string{"acme/scanner"} }, ""},
		"allow not a peer":   {func(c *Config) { c.ScanAllow = []string{"acme"} }, `--scan-allow "acme"`},
		"webhook":            {func(c *Config) { c.AlertWebhook, c.AlertWebhookSecretFile = "https://hooks.example.com/T0KEN", good }, ""},
		"no secret":          {func(c *Config) { c.AlertWebhook = "https://hooks.example.com/T0KEN" }, "needs --alert-webhook-secret-file"},
		"open secret":        {func(c *Config) { c.AlertWebhook, c.AlertWebhookSecretFile = "https://hooks.example.com/T0KEN", open }, "chmod 600"},
		"short secret":       {func(c *Config) { c.AlertWebhook, c.AlertWebhookSecretFile = "https://hooks.example.com/T0KEN", short }, "at least 16"},
		"not http":           {func(c *Config) { c.AlertWebhook, c.AlertWebhookSecretFile = "ftp://hooks.example.com/T0KEN", good }, "not an http"},
		"secret alone":       {func(c *Config) { c.AlertWebhookSecretFile = good }, "needs --alert-webhook"},
		"negative days":      {func(c *Config) { c.AlertExpiryDays = -1 }, "--alert-expiry-days"},
		"syslog":             {func(c *Config) { c.ActivitySyslog, c.ActivitySyslogFacility = "udp://10.0.0.5", "authpriv" }, ""},
		"syslog tls with ca": {func(c *Config) { c.ActivitySyslog, c.ActivitySyslogCA = "tls://siem.example", ca }, ""},
		"syslog no scheme":   {func(c *Config) { c.ActivitySyslog = "10.0.0.5:514" }, `--activity-syslog: syslog address "10.0.0.5:514"`},
		"syslog facility":    {func(c *Config) { c.ActivitySyslog, c.ActivitySyslogFacility = "udp://10.0.0.5", "kern" }, `--activity-syslog-facility: syslog facility "kern"`},
		"syslog without log": {func(c *Config) { c.ActivitySyslog, c.ActivityLog = "udp://10.0.0.5", false }, "needs --activity-log"},
		"syslog ca not tls":  {func(c *Config) { c.ActivitySyslog, c.ActivitySyslogCA = "tcp://siem.example", ca }, "is for a tls:// receiver"},
		"syslog ca no pem":   {func(c *Config) { c.ActivitySyslog, c.ActivitySyslogCA = "tls://siem.example", good }, "holds no PEM certificate"},
		"syslog ca alone":    {func(c *Config) { c.ActivitySyslogCA = ca }, "--activity-syslog-ca needs --activity-syslog"},
	} {
		c := Defaults()
		tc.mod(&c)
		st, err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want one naming %q", name, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "T0KEN"):
			t.Errorf("%s: the error shows the URL's path: %v", name, err)
		case name == "webhook" && string(st.AlertSecret) != "0123456789abcdef0123":
			t.Errorf("the secret read: %q", st.AlertSecret)
		}
	}
}

// TestSharedAddressSettings: gateways take turns only in a cluster, with an
// address and the interface that holds it, and a lease etcd can keep.
func TestSharedAddressSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		err  string
	}{
		{"a cluster gateway that takes turns", func(c *Config) {}, ""},
		{"no etcd", func(c *Config) { c.EtcdEndpoints = nil }, "needs --etcd-endpoints"},
		{"no interface", func(c *Config) { c.VIPInterface = "" }, "needs --vip-interface"},
		{"the veth", func(c *Config) { c.VIPInterface = c.HostVeth }, "--vip-interface"},
		{"no length", func(c *Config) { c.VIP = "203.0.113.10" }, "network's length"},
		{"a lease etcd cannot keep", func(c *Config) { c.RoleTTL = 100 * time.Millisecond }, "--role-ttl"},
		{"the main table", func(c *Config) { c.VIPTable = 254 }, "--vip-table"},
		{"nowhere to ask it", func(c *Config) { c.ClusterListen = "" }, "--cluster-listen"},
		{"any address", func(c *Config) { c.ClusterListen = ":51821" }, "--cluster-listen"},
		{"every address", func(c *Config) { c.ClusterListen = "0.0.0.0:51821" }, "--cluster-listen"},
		{"loopback", func(c *Config) { c.ClusterListen = "127.0.0.1:51821" }, "--cluster-listen"},
	} {
		c := Defaults()
		c.EtcdEndpoints = []string{"https://10.0.0.5:2379"}
		c.VIP, c.VIPInterface, c.ClusterListen = "203.0.113.10/24", "eth0", "10.0.0.11:51821"
		tc.mod(&c)
		st, err := c.Validate()
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v; want an error with %q", tc.name, err, tc.err)
		}
		if err == nil && (st.VIP == nil || st.VIP.Port != c.ListenPort || st.VIP.Prefix.String() != "203.0.113.10/24") {
			t.Errorf("%s: settings %+v", tc.name, st.VIP)
		}
	}
}

// testCAPEM is a self-signed certificate, for a CA file that parses.
const testCAPEM = `-----BEGIN CERTIFICATE-----
MIIBezCCASGgAwIBAgIUTIqys+qOjTShpDksKp3PzqTR7wowCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdC1jYTAgFw0yNjEyMDgwMTI3MTVaGA8yMTI2MTExNDAx
MjcxNVowEjEQMA4GA1UEAwwHdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABNq6m6orOeqGnwfIihdPB1OYmElYyfyp2IxX/tATL6qPaOFLdJ+CSNfZ92BI
zZdkUAC5teDEnNlcxOlZi49JbEOjUzBRMB0GA1UdDgQWBBTZCWBTFpZQ/9qaI2xt
+4o8k1t6DjAfBgNVHSMEGDAWgBTZCWBTFpZQ/9qaI2xt+4o8k1t6DjAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQCJFGuJigEHhN7P7S2b4YeZAn3S
qjSG1p4raw9SLZsBtgIgRB2QVNwCdVW6E1/pWukK6rdYL7+YLvJ4QxDDhBy7fbc=
-----END CERTIFICATE-----
`
