// Package wgconfig writes and reads the wg-quick configuration format that
// the stock WireGuard clients import (wg-quick, and the Windows, macOS, iOS
// and Android apps), and turns a config into a QR code for the mobile apps.
//
// Every field is validated before it is written: nothing a caller passes can
// add a line or a section to the file.
package wgconfig

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Config is a client config with the gateway as its only peer.
type Config struct {
	Interface Interface
	Peer      Peer
}

// Interface is the partner's side.
type Interface struct {
	// PrivateKey is base64; empty when the partner supplied its own public
	// key, in which case the file has a placeholder that every client
	// refuses, and says what to paste in its place.
	PrivateKey string
	// MissingKey says, for a config without PrivateKey, where the partner
	// finds the key to paste in place of the placeholder. It is written as a
	// comment only, so Parse does not read it back.
	MissingKey MissingKey
	Address    []netip.Prefix
	DNS        []string
	MTU        int
}

// MissingKey is where the private key of a config without one is found.
type MissingKey int

const (
	// KeyOnDevice: the device made its key pair and the partner sent only
	// the public key.
	KeyOnDevice MissingKey = iota
	// KeyInFirstConfig: the gateway made the key pair and put the private
	// key only in the config it first issued; a config printed again lacks it.
	KeyInFirstConfig
	// KeyInPage: the partner's enrollment page made the key pair and holds
	// the private key, which it puts in place of PageKeyMarker.
	KeyInPage
)

// PageKeyMarker stands for the private key in a config rendered for the
// enrollment page (KeyInPage). Like the placeholder it is no key, so a
// config in which it was not replaced is refused by every app.
const PageKeyMarker = "@PRIVATE-KEY-MADE-IN-THE-PAGE@"

// Peer is the gateway.
type Peer struct {
	PublicKey           string
	PresharedKey        string
	Endpoint            string
	AllowedIPs          []netip.Prefix
	PersistentKeepalive int
}

// placeholder stands where a partner pastes its own private key. It is an
// uncommented value that is no key, so wg-quick and every app refuse the file
// until it is replaced: a commented-out line let wg-quick bring up a tunnel
// that never completes a handshake. It holds nothing that any of their
// parsers treats specially ('#', '=', ',', brackets, quotes, spaces).
const placeholder = "PASTE-THE-PRIVATE-KEY-OF-THIS-DEVICE-HERE"

// Render writes the config in wg-quick format.
func (c *Config) Render() ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("[Interface]\n")
	// The comment is all a partner reads before importing: it says what to
	// do with this file, which depends on where its private key is.
	switch {
	case c.Interface.PrivateKey != "":
		b.WriteString("# Keep this file secret: it holds this device's private key.\n")
		fmt.Fprintf(&b, "PrivateKey = %s\n", c.Interface.PrivateKey)
	case c.Interface.MissingKey == KeyInPage:
		b.WriteString("# Keep this file secret: it holds this device's private key.\n")
		fmt.Fprintf(&b, "PrivateKey = %s\n", PageKeyMarker)
	case c.Interface.MissingKey == KeyInFirstConfig:
		b.WriteString("# Paste this device's private key from the config first issued for it\n")
		b.WriteString("# in place of the placeholder (that key is kept nowhere else; if it is\n")
		b.WriteString("# lost, ask for new keys). WireGuard refuses this file until then.\n")
		fmt.Fprintf(&b, "PrivateKey = %s\n", placeholder)
	default:
		b.WriteString("# Paste this device's private key (from the WireGuard app or `wg genkey`)\n")
		b.WriteString("# in place of the placeholder. WireGuard refuses this file until then.\n")
		fmt.Fprintf(&b, "PrivateKey = %s\n", placeholder)
	}
	fmt.Fprintf(&b, "Address = %s\n", joinPrefixes(c.Interface.Address))
	if len(c.Interface.DNS) > 0 {
		fmt.Fprintf(&b, "DNS = %s\n", strings.Join(c.Interface.DNS, ", "))
	}
	if c.Interface.MTU > 0 {
		fmt.Fprintf(&b, "MTU = %d\n", c.Interface.MTU)
	}
	b.WriteString("\n[Peer]\n")
	fmt.Fprintf(&b, "PublicKey = %s\n", c.Peer.PublicKey)
	if c.Peer.PresharedKey != "" {
		fmt.Fprintf(&b, "PresharedKey = %s\n", c.Peer.PresharedKey)
	}
	fmt.Fprintf(&b, "Endpoint = %s\n", c.Peer.Endpoint)
	fmt.Fprintf(&b, "AllowedIPs = %s\n", joinPrefixes(c.Peer.AllowedIPs))
	if c.Peer.PersistentKeepalive > 0 {
		fmt.Fprintf(&b, "PersistentKeepalive = %d\n", c.Peer.PersistentKeepalive)
	}
	return b.Bytes(), nil
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func checkKey(field, k string) error {
	raw, err := base64.StdEncoding.DecodeString(k)
	// The decoder skips newlines; a key must be one canonical line.
	if err != nil || len(raw) != 32 || base64.StdEncoding.EncodeToString(raw) != k {
		return fmt.Errorf("%s is not base64 of 32 bytes", field)
	}
	return nil
}

// safeToken is what may appear in an endpoint host (brackets already
// stripped by SplitHostPort) or a DNS entry: a name, an IPv4 or an IPv6
// address. A bracket would open a section.
func safeToken(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '.' || r == '-' || r == ':' || r == '_':
		default:
			return false
		}
	}
	return true
}

func (c *Config) validate() error {
	if c.Interface.PrivateKey != "" {
		if err := checkKey("Interface.PrivateKey", c.Interface.PrivateKey); err != nil {
			return err
		}
	}
	if c.Interface.MissingKey != KeyOnDevice && c.Interface.MissingKey != KeyInFirstConfig && c.Interface.MissingKey != KeyInPage {
		return fmt.Errorf("Interface.MissingKey %d is not KeyOnDevice, KeyInFirstConfig or KeyInPage", c.Interface.MissingKey)
	}
	if len(c.Interface.Address) == 0 {
		return fmt.Errorf("Interface.Address is empty")
	}
	for _, a := range c.Interface.Address {
		if !a.IsValid() {
			return fmt.Errorf("Interface.Address has an invalid prefix")
		}
	}
	for _, d := range c.Interface.DNS {
		if !safeToken(d) {
			return fmt.Errorf("Interface.DNS entry %q is not an address or a domain", d)
		}
	}
	if c.Interface.MTU < 0 || c.Interface.MTU > 65535 {
		return fmt.Errorf("Interface.MTU %d is out of range", c.Interface.MTU)
	}
	if err := checkKey("Peer.PublicKey", c.Peer.PublicKey); err != nil {
		return err
	}
	if c.Peer.PresharedKey != "" {
		if err := checkKey("Peer.PresharedKey", c.Peer.PresharedKey); err != nil {
			return err
		}
	}
	host, port, err := net.SplitHostPort(c.Peer.Endpoint)
	if err != nil || !safeToken(host) || strings.ContainsAny(host, ":") && !strings.Contains(c.Peer.Endpoint, "[") {
		return fmt.Errorf("Peer.Endpoint %q is not HOST:PORT", c.Peer.Endpoint)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("Peer.Endpoint %q has no valid port", c.Peer.Endpoint)
	}
	for _, a := range c.Peer.AllowedIPs {
		if !a.IsValid() {
			return fmt.Errorf("Peer.AllowedIPs has an invalid prefix")
		}
	}
	if c.Peer.PersistentKeepalive < 0 || c.Peer.PersistentKeepalive > 65535 {
		return fmt.Errorf("Peer.PersistentKeepalive %d is out of range", c.Peer.PersistentKeepalive)
	}
	return nil
}

// Parse reads a wg-quick config with one peer, as wg-quick does: sections
// and keys are case-insensitive, '#' starts a comment, lists are
// comma-separated and may repeat.
func Parse(data []byte) (*Config, error) {
	c := &Config{}
	section := ""
	peers := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = strings.ToLower(line)
			switch section {
			case "[interface]":
			case "[peer]":
				peers++
				if peers > 1 {
					return nil, fmt.Errorf("line %d: more than one [Peer]", n)
				}
			default:
				return nil, fmt.Errorf("line %d: unknown section %s", n, line)
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: expected KEY = VALUE", n)
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if err := c.set(section, k, v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) set(section, k, v string) error {
	list := func() []string {
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	prefixes := func() ([]netip.Prefix, error) {
		var out []netip.Prefix
		for _, s := range list() {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not a prefix", k, s)
			}
			out = append(out, p)
		}
		return out, nil
	}
	number := func() (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not a number", k, v)
		}
		return n, nil
	}
	var err error
	switch section + "." + k {
	case "[interface].privatekey":
		// An unfilled placeholder reads back as no key, as Render wrote it.
		if v != placeholder {
			c.Interface.PrivateKey = v
		}
	case "[interface].address":
		var ps []netip.Prefix
		ps, err = prefixes()
		c.Interface.Address = append(c.Interface.Address, ps...)
	case "[interface].dns":
		c.Interface.DNS = append(c.Interface.DNS, list()...)
	case "[interface].mtu":
		c.Interface.MTU, err = number()
	case "[interface].listenport", "[interface].table", "[interface].fwmark",
		"[interface].preup", "[interface].postup", "[interface].predown", "[interface].postdown", "[interface].saveconfig":
		// wg-quick settings a gateway never writes; accepted, not kept.
	case "[peer].publickey":
		c.Peer.PublicKey = v
	case "[peer].presharedkey":
		c.Peer.PresharedKey = v
	case "[peer].endpoint":
		c.Peer.Endpoint = v
	case "[peer].allowedips":
		var ps []netip.Prefix
		ps, err = prefixes()
		c.Peer.AllowedIPs = append(c.Peer.AllowedIPs, ps...)
	case "[peer].persistentkeepalive":
		if v == "off" {
			c.Peer.PersistentKeepalive = 0
		} else {
			c.Peer.PersistentKeepalive, err = number()
		}
	default:
		return fmt.Errorf("unknown key %q in %s", k, section)
	}
	return err
}
