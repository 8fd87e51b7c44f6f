package wgconfig

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	key1 = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	key2 = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
	key3 = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
)

func sample() Config {
	return Config{
		Interface: Interface{
			PrivateKey: key1,
			Address:    []netip.Prefix{netip.MustParsePrefix("100.64.1.1/32")},
			DNS:        []string{"10.20.0.53", "corp.example"},
			MTU:        1380,
		},
		Peer: Peer{
			PublicKey: key2, PresharedKey: key3,
			Endpoint:            "vpn.example.com:51820",
			AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24"), netip.MustParsePrefix("10.30.0.0/16")},
			PersistentKeepalive: 25,
		},
	}
}

func TestRenderGolden(t *testing.T) {
	c := sample()
	got, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	want := `[Interface]
# Keep this file secret: it holds this device's private key.
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 100.64.1.1/32
DNS = 10.20.0.53, corp.example
MTU = 1380

[Peer]
PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=
PresharedKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
Endpoint = vpn.example.com:51820
AllowedIPs = 10.20.0.0/24, 10.30.0.0/16
PersistentKeepalive = 25
`
	if string(got) != want {
		t.Errorf("rendered:\n%s\nwant:\n%s", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, c := range []Config{sample(), func() Config {
		c := sample()
		c.Interface.PrivateKey = ""
		c.Interface.DNS = nil
		c.Interface.MTU = 0
		return c
	}()} {
		out, err := c.Render()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*back, c) {
			t.Errorf("round trip:\n%+v\nwant\n%+v", *back, c)
		}
	}
}

// TestSuppliedKeyLeavesAPlaceholder: a config for a partner's own key has
// a PrivateKey line that no client accepts until the key is pasted in; a
// commented line let wg-quick bring up a tunnel that never handshakes.
func TestSuppliedKeyLeavesAPlaceholder(t *testing.T) {
	c := sample()
	c.Interface.PrivateKey = ""
	out, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "PrivateKey = ") {
			line = l
		}
	}
	value := strings.TrimPrefix(line, "PrivateKey = ")
	if line == "" || checkKey("placeholder", value) == nil {
		t.Fatalf("no uncommented PrivateKey line with an invalid key as placeholder:\n%s", out)
	}
	// Characters the parsers of wg-quick and the apps treat specially
	// (comments, sections, assignments, lists, quoting) or trim.
	if strings.ContainsAny(value, "#[]=,'\" \t\\") || !strings.Contains(value, "PASTE") {
		t.Errorf("placeholder %q is not a plain, visible placeholder", value)
	}
}

// TestKeyComment: the comment above the key tells the partner what to do
// with this particular file.
func TestKeyComment(t *testing.T) {
	for _, tc := range []struct {
		name      string
		priv      string
		missing   MissingKey
		want, not string
	}{
		{"gateway-made key", key1, KeyOnDevice, "# Keep this file secret: it holds this device's private key.", "paste"},
		{"partner's own key", "", KeyOnDevice, "# Paste this device's private key (from the WireGuard app or `wg genkey`)", "made on the device itself"},
		{"gateway-made key, shown once", "", KeyInFirstConfig, "# Paste this device's private key from the config first issued for it", "made on the device"},
	} {
		c := sample()
		c.Interface.PrivateKey, c.Interface.MissingKey = tc.priv, tc.missing
		out, err := c.Render()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), tc.want) || strings.Contains(strings.ToLower(string(out)), tc.not) {
			t.Errorf("%s: comment does not say %q (or says %q):\n%s", tc.name, tc.want, tc.not, out)
		}
	}
}

func TestRejectsInjection(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"newline in endpoint":  func(c *Config) { c.Peer.Endpoint = "a.example:1\n[Peer]" },
		"space in endpoint":    func(c *Config) { c.Peer.Endpoint = "a b:1" },
		"no port":              func(c *Config) { c.Peer.Endpoint = "a.example" },
		"port 0":               func(c *Config) { c.Peer.Endpoint = "a.example:0" },
		"newline in DNS":       func(c *Config) { c.Interface.DNS = []string{"1.1.1.1\nPostUp = rm -rf /"} },
		"comma in DNS":         func(c *Config) { c.Interface.DNS = []string{"a,b"} },
		"bad public key":       func(c *Config) { c.Peer.PublicKey = "abc" },
		"bad private key":      func(c *Config) { c.Interface.PrivateKey = key1 + "\nPostUp=x" },
		"bad psk":              func(c *Config) { c.Peer.PresharedKey = "AAAA" },
		"newline inside a key": func(c *Config) { c.Peer.PublicKey = key2[:20] + "\n" + key2[20:] },
		"no address":           func(c *Config) { c.Interface.Address = nil },
		"unknown missing key":  func(c *Config) { c.Interface.MissingKey = 7 },
	} {
		c := sample()
		mod(&c)
		if out, err := c.Render(); err == nil {
			t.Errorf("%s: rendered\n%s", name, out)
		}
	}
}

// TestWgQuickStrip feeds the rendered file to the stock wg-quick, which
// refuses anything it would not bring up.
func TestWgQuickStrip(t *testing.T) {
	if _, err := exec.LookPath("wg-quick"); err != nil {
		t.Skip("wg-quick is not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("wg-quick strip needs root")
	}
	c := sample()
	c.Interface.DNS = nil // DNS needs resolvconf only at `up`; keep strip hermetic
	out, _ := c.Render()
	path := filepath.Join(t.TempDir(), "wgtest0.conf")
	os.WriteFile(path, out, 0o600)
	cmd := exec.Command("wg-quick", "strip", path)
	stripped, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wg-quick strip: %v\n%s", err, stripped)
	}
	if !strings.Contains(string(stripped), "PublicKey = "+key2) || strings.Contains(string(stripped), "Address") {
		t.Errorf("unexpected strip output:\n%s", stripped)
	}
}

// TestWgQuickRefusesPlaceholder brings a config for a partner's own key up
// with the stock wg-quick, in a network namespace of its own: it must fail
// on the private key until the key is pasted in, and then come up.
func TestWgQuickRefusesPlaceholder(t *testing.T) {
	if _, err := exec.LookPath("wg-quick"); err != nil {
		t.Skip("wg-quick is not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("wg-quick up in a network namespace needs root")
	}
	ns := fmt.Sprintf("wgconfig-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v %s", err, out)
	}
	const ifname = "wgtest0"
	t.Cleanup(func() {
		// Deleting the link also ends a wireguard-go serving it.
		exec.Command("ip", "-n", ns, "link", "del", ifname).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	up := func(conf []byte) (string, error) {
		path := filepath.Join(t.TempDir(), ifname+".conf")
		if err := os.WriteFile(path, conf, 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "wg-quick", "up", path)
		// Without the kernel module, wg-quick falls back to wireguard-go.
		cmd.Env = append(os.Environ(), "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	c := sample()
	c.Interface.PrivateKey = ""
	c.Interface.DNS = nil               // no resolvconf inside the namespace
	c.Peer.Endpoint = "192.0.2.1:51820" // no name to resolve either
	conf, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	out, err := up(conf)
	if err == nil {
		t.Fatalf("wg-quick brought up a config without a private key:\n%s\n%s", conf, out)
	}
	if !strings.Contains(out, "Key is not the correct length or format") {
		t.Fatalf("wg-quick failed, but not on the private key: %v\n%s", err, out)
	}
	exec.Command("ip", "-n", ns, "link", "del", ifname).Run()
	filled := strings.Replace(string(conf), placeholder, key1, 1)
	if out, err := up([]byte(filled)); err != nil {
		t.Fatalf("wg-quick refused the config once its key was pasted in: %v\n%s", err, out)
	}
}

func TestQR(t *testing.T) {
	c := sample()
	out, _ := c.Render()
	term, err := QRTerminal(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(term), "\n")
	if len([]rune(lines[0])) > 80 {
		t.Errorf("terminal QR is %d columns wide", len([]rune(lines[0])))
	}
	png, err := QRPNG(out, 256)
	if err != nil || !strings.HasPrefix(string(png), "\x89PNG") {
		t.Errorf("QRPNG: %v", err)
	}
}

// TestQRRefusesConfigWithoutKey: the phone apps cannot import a QR code
// whose config has no private key (iOS says only "Invalid QR Code"), so no
// such code is made.
func TestQRRefusesConfigWithoutKey(t *testing.T) {
	c := sample()
	c.Interface.PrivateKey = ""
	out, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := QRTerminal(out); !errors.Is(err, ErrNoPrivateKey) {
		t.Errorf("QRTerminal of a config without a private key: %v, want ErrNoPrivateKey", err)
	}
	if _, err := QRPNG(out, 256); !errors.Is(err, ErrNoPrivateKey) || !strings.Contains(err.Error(), "Invalid QR Code") {
		t.Errorf("QRPNG of a config without a private key: %v, want ErrNoPrivateKey saying what the apps say", err)
	}
}

func FuzzRenderParse(f *testing.F) {
	f.Add("vpn.example.com:51820", "10.0.0.53", 1420, 25)
	f.Add("[::1]:1", "corp", 0, 0)
	f.Add("a\n:1", "x\ny", -1, -1)
	f.Fuzz(func(t *testing.T, endpoint, dns string, mtu, keepalive int) {
		c := sample()
		c.Peer.Endpoint, c.Interface.DNS, c.Interface.MTU, c.Peer.PersistentKeepalive = endpoint, []string{dns}, mtu, keepalive
		out, err := c.Render()
		if err != nil {
			return
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("rendered config does not parse: %v\n%s", err, out)
		}
		if back.Peer.Endpoint != endpoint || len(back.Interface.DNS) != 1 || back.Interface.DNS[0] != dns {
			t.Fatalf("round trip changed fields:\n%s", out)
		}
		if strings.Count(string(out), "[") != 2+strings.Count(endpoint, "[") {
			t.Fatalf("rendered an extra section:\n%s", out)
		}
	})
}
