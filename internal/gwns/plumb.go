package gwns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Link is how the gateway namespace is joined to the host: a veth pair on
// a small link network, the host routing the tunnel network into the
// namespace and the namespace routing everything else out to the host.
// None of it decides who reaches what; that is the namespace's rules.
type Link struct {
	// HostVeth is the host's end of the pair, NSVeth the namespace's.
	HostVeth, NSVeth string
	// Network is the link network, a /30 or /31: the host takes its first
	// usable address, the namespace the next.
	Network netip.Prefix
	// Tunnel is routed from the host into the namespace.
	Tunnel netip.Prefix
}

// Addrs returns the host's and the namespace's address on the link.
func (l Link) Addrs() (host, ns netip.Addr, err error) {
	if !l.Network.IsValid() || !l.Network.Addr().Is4() || l.Network.Bits() < 30 || l.Network.Bits() > 31 {
		return host, ns, fmt.Errorf("link network %s: use an IPv4 /30 or /31", l.Network)
	}
	host = l.Network.Masked().Addr()
	if l.Network.Bits() == 30 {
		host = host.Next()
	}
	return host, host.Next(), nil
}

// Validate checks the link against the tunnel network.
func (l Link) Validate() error {
	if _, _, err := l.Addrs(); err != nil {
		return err
	}
	if l.Network.Overlaps(l.Tunnel) {
		return fmt.Errorf("link network %s overlaps the tunnel network %s; choose another with --link-network", l.Network, l.Tunnel)
	}
	for _, name := range []string{l.HostVeth, l.NSVeth} {
		if len(name) == 0 || len(name) > 15 || strings.ContainsAny(name, "/ \t\n") {
			return fmt.Errorf("interface name %q is not a valid Linux interface name", name)
		}
	}
	return nil
}

// Plumb makes the link as described, and returns what it found missing or
// changed and put back: nothing on a namespace already plumbed. Every step
// is idempotent.
func (n *NS) Plumb(l Link) ([]string, error) { return n.plumb(l, true) }

// CheckPlumbing returns what Plumb would put back, changing nothing.
func (n *NS) CheckPlumbing(l Link) ([]string, error) { return n.plumb(l, false) }

func (n *NS) plumb(l Link, fix bool) ([]string, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	hostAddr, nsAddr, _ := l.Addrs()
	var fixed []string
	note := func(what string) { fixed = append(fixed, what) }
	e := ensurer{fix: fix, note: note}
	if err := n.pin(e); err != nil {
		return fixed, err
	}

	hostEnd, err := netlink.LinkByName(l.HostVeth)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound) && !fix:
		return []string{"veth pair " + l.HostVeth + " missing"}, nil
	case errors.As(err, &notFound):
		// A veth pair lives and dies as a pair: a stale end in the
		// namespace would only be one left by something else.
		if stale, err := n.nl.LinkByName(l.NSVeth); err == nil {
			if err := n.nl.LinkDel(stale); err != nil {
				return fixed, fmt.Errorf("remove stale %s in namespace %s: %w", l.NSVeth, n.name, err)
			}
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = l.HostVeth
		veth := &netlink.Veth{LinkAttrs: attrs, PeerName: l.NSVeth, PeerNamespace: netlink.NsFd(int(n.h))}
		if !n.h.IsOpen() {
			veth.PeerNamespace = nil
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fixed, fmt.Errorf("create veth pair %s/%s: %w", l.HostVeth, l.NSVeth, err)
		}
		note("veth pair " + l.HostVeth + " created")
		if hostEnd, err = netlink.LinkByName(l.HostVeth); err != nil {
			return fixed, fmt.Errorf("find %s: %w", l.HostVeth, err)
		}
	case err != nil:
		return fixed, fmt.Errorf("look up %s: %w", l.HostVeth, err)
	case hostEnd.Type() != "veth":
		return fixed, fmt.Errorf("interface %s exists and is a %s, not the veth of extranetd; remove it or choose another with --host-veth", l.HostVeth, hostEnd.Type())
	}
	nsEnd, err := n.nl.LinkByName(l.NSVeth)
	if err != nil {
		return fixed, fmt.Errorf("find %s in namespace %s (the other end of %s): %w", l.NSVeth, n.name, l.HostVeth, err)
	}

	if err := e.addr(netlink.AddrList, netlink.AddrReplace, hostEnd, hostAddr, l.Network.Bits()); err != nil {
		return fixed, err
	}
	if err := e.addr(n.nl.AddrList, n.nl.AddrReplace, nsEnd, nsAddr, l.Network.Bits()); err != nil {
		return fixed, err
	}
	if err := e.up(netlink.LinkSetUp, hostEnd); err != nil {
		return fixed, err
	}
	if lo, err := n.nl.LinkByName("lo"); err == nil {
		if err := e.up(n.nl.LinkSetUp, lo); err != nil {
			return fixed, err
		}
	}
	if err := e.up(n.nl.LinkSetUp, nsEnd); err != nil {
		return fixed, err
	}

	// Everything the namespace forwards out goes to the host; the host
	// sends the tunnel network in.
	if err := e.route(n.nl.RouteList, n.nl.RouteReplace, nsEnd, netip.MustParsePrefix("0.0.0.0/0"), hostAddr); err != nil {
		return fixed, err
	}
	if err := e.route(netlink.RouteList, netlink.RouteReplace, hostEnd, l.Tunnel.Masked(), nsAddr); err != nil {
		return fixed, err
	}
	if err := e.sysctl("/proc/sys/net/ipv4/ip_forward", "1", "host "); err != nil {
		return fixed, err
	}
	err = n.Do(func() error {
		for _, s := range []struct{ path, val string }{
			{"/proc/sys/net/ipv4/ip_forward", "1"},
			// Partners get IPv4 only; in here IPv6 is off whatever a
			// peer's AllowedIPs say, and the rules drop it as well.
			{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"},
			{"/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"},
			// Strict reverse-path filtering: a packet from the uplink
			// whose source routes elsewhere (a tunnel address, forged on
			// the internal side) is dropped. The effective value is the
			// higher of all and the interface's, so all is strict too.
			{"/proc/sys/net/ipv4/conf/all/rp_filter", "1"},
			{"/proc/sys/net/ipv4/conf/" + l.NSVeth + "/rp_filter", "1"},
		} {
			if err := e.sysctl(s.path, s.val, "namespace "); err != nil {
				return err
			}
		}
		return nil
	})
	return fixed, err
}

// ensurer checks one piece of the plumbing at a time, notes what differs
// and, with fix, puts it right.
type ensurer struct {
	fix  bool
	note func(string)
}

func (e ensurer) addr(list func(netlink.Link, int) ([]netlink.Addr, error), replace func(netlink.Link, *netlink.Addr) error, link netlink.Link, a netip.Addr, bits int) error {
	name := link.Attrs().Name
	have, err := list(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	want := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
	for _, h := range have {
		if h.IPNet.String() == want.String() {
			return nil
		}
	}
	e.note("address " + want.String() + " on " + name)
	if !e.fix {
		return nil
	}
	if err := replace(link, &netlink.Addr{IPNet: want}); err != nil {
		return fmt.Errorf("set address %s on %s: %w", want, name, err)
	}
	return nil
}

func (e ensurer) up(up func(netlink.Link) error, link netlink.Link) error {
	if link.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	e.note(link.Attrs().Name + " was down")
	if !e.fix {
		return nil
	}
	if err := up(link); err != nil {
		return fmt.Errorf("bring %s up: %w", link.Attrs().Name, err)
	}
	return nil
}

func (e ensurer) route(list func(netlink.Link, int) ([]netlink.Route, error), replace func(*netlink.Route) error, link netlink.Link, dst netip.Prefix, via netip.Addr) error {
	name := link.Attrs().Name
	have, err := list(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", name, err)
	}
	for _, r := range have {
		d := "0.0.0.0/0"
		if r.Dst != nil {
			d = r.Dst.String()
		}
		if d == dst.String() && r.Gw.Equal(via.AsSlice()) && r.Table == unix.RT_TABLE_MAIN {
			return nil
		}
	}
	e.note("route " + dst.String() + " via " + name)
	if !e.fix {
		return nil
	}
	route := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)},
		Gw:        via.AsSlice(),
	}
	if err := replace(route); err != nil {
		return fmt.Errorf("route %s via %s dev %s: %w", dst, via, name, err)
	}
	return nil
}

// sysctl sees to val in a sysctl of the calling thread's namespace.
func (e ensurer) sysctl(path, val, where string) error {
	cur, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && strings.Contains(path, "ipv6") {
		// A kernel without IPv6 needs no switch to turn it off.
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if strings.TrimSpace(string(cur)) == val {
		return nil
	}
	e.note(where + strings.TrimPrefix(path, "/proc/sys/") + " was " + strings.TrimSpace(string(cur)))
	if !e.fix {
		return nil
	}
	if err := os.WriteFile(path, []byte(val+"\n"), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
