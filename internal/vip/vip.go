// Package vip moves the address partners dial between the gateways of a
// cluster: the active holds it on its uplink and announces it, the others
// do not hold it at all.
package vip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Address is the address partners dial, on the interface it is reached by.
//
// WireGuard's socket is bound to no address, so a handshake the gateway
// starts (after a failover, say) would leave from the interface's own
// address, and the partner would follow the handshake there: to an address
// that does not move. A routing rule for the socket's port alone sends its
// packets by a table that holds the interface's routes with the shared
// address as their source. No address translation is involved, so nothing
// depends on what conntrack remembers from an earlier turn.
type Address struct {
	// Prefix is the address with its network's length, as on the
	// interface (192.0.2.10/24).
	Prefix    netip.Prefix
	Interface string
	// Port is WireGuard's listen port, and Table the routing table its
	// packets use while the address is held.
	Port  int
	Table int
	Log   *slog.Logger
}

// Parse checks an address and interface as given on the command line.
func Parse(prefix, iface string, port, table int) (*Address, error) {
	p, err := netip.ParsePrefix(prefix)
	if err != nil || !p.Addr().Is4() {
		return nil, fmt.Errorf("--vip %q is not an IPv4 address with its network's length, such as 192.0.2.10/24", prefix)
	}
	if iface == "" {
		return nil, fmt.Errorf("--vip %s needs --vip-interface, the interface partners reach it by", prefix)
	}
	if table <= 0 || table >= 253 && table <= 255 {
		return nil, fmt.Errorf("--vip-table %d is not a routing table of its own: give 1-252 or 256 and above", table)
	}
	return &Address{Prefix: p, Interface: iface, Port: port, Table: table}, nil
}

func (a *Address) addr(link netlink.Link) *netlink.Addr {
	return &netlink.Addr{
		IPNet: &net.IPNet{IP: a.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), 32)},
		// A secondary beside the host's own address, never chosen as
		// the source of the host's other traffic.
		Flags: unix.IFA_F_NOPREFIXROUTE,
		Label: label(link.Attrs().Name),
	}
}

// label marks the address as the gateway's, within the kernel's 15
// characters.
func label(iface string) string {
	if l := iface + ":xg"; len(l) <= 15 {
		return l
	}
	return ""
}

// Hold puts the address on the interface and announces it (gratuitous
// ARP), so that the neighbours that knew another gateway by it send to
// this one from now on.
func (a *Address) Hold() error {
	link, err := netlink.LinkByName(a.Interface)
	if err != nil {
		return fmt.Errorf("--vip-interface %s: %w", a.Interface, err)
	}
	if err := netlink.AddrReplace(link, a.addr(link)); err != nil {
		return fmt.Errorf("add %s to %s: %w", a.Prefix, a.Interface, err)
	}
	if err := a.route(link); err != nil {
		return err
	}
	if err := announce(link, a.Prefix.Addr()); err != nil {
		return fmt.Errorf("announce %s on %s: %w", a.Prefix.Addr(), a.Interface, err)
	}
	// Again, for a neighbour that missed the first while its own link
	// settled; the first is what counts.
	go func() {
		for _, d := range []time.Duration{200 * time.Millisecond, time.Second} {
			time.Sleep(d)
			if held, _ := a.Held(); !held {
				return
			}
			if err := announce(link, a.Prefix.Addr()); err != nil && a.Log != nil {
				a.Log.Warn("announce the address partners dial", "address", a.Prefix.Addr(), "err", err)
			}
		}
	}()
	return nil
}

// Release takes the address off the interface; one that is not there is
// released already.
func (a *Address) Release() error {
	link, err := netlink.LinkByName(a.Interface)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--vip-interface %s: %w", a.Interface, err)
	}
	var errs []error
	if err := netlink.RuleDel(a.rule()); err != nil && !errors.Is(err, syscall.ENOENT) {
		errs = append(errs, fmt.Errorf("remove the routing rule of UDP port %d: %w", a.Port, err))
	}
	if err := a.flushTable(); err != nil {
		errs = append(errs, err)
	}
	err = netlink.AddrDel(link, a.addr(link))
	if err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
		errs = append(errs, fmt.Errorf("remove %s from %s: %w", a.Prefix, a.Interface, err))
	}
	return errors.Join(errs...)
}

// rule sends the packets WireGuard's socket sends (iif lo: made on this
// host, never forwarded ones) by Table.
func (a *Address) rule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = netlink.FAMILY_V4
	r.Priority = rulePriority
	r.IifName = "lo"
	r.IPProto = unix.IPPROTO_UDP
	r.Sport = netlink.NewRulePortRange(uint16(a.Port), uint16(a.Port))
	r.Table = a.Table
	return r
}

// rulePriority puts the rule before the main table's (32766); routeProto
// marks the routes this package puts in Table, so that it never removes
// another's.
const (
	rulePriority = 32000
	routeProto   = 84
)

// route fills Table with the interface's routes of the main table, with
// the shared address as their source, and puts the rule in place. A
// destination the table has no route for falls through to the main table.
func (a *Address) route(link netlink.Link) error {
	if err := a.CheckTable(); err != nil {
		return err
	}
	if err := a.flushTable(); err != nil {
		return err
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("read the routes of %s: %w", a.Interface, err)
	}
	for _, r := range routes {
		r.Table, r.Src, r.Protocol = a.Table, a.Prefix.Addr().AsSlice(), routeProto
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("route %s by %s from %s: %w", r.Dst, a.Interface, a.Prefix.Addr(), err)
		}
	}
	if err := netlink.RuleDel(a.rule()); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("replace the routing rule of UDP port %d: %w", a.Port, err)
	}
	if err := netlink.RuleAdd(a.rule()); err != nil {
		return fmt.Errorf("route UDP port %d from %s: %w", a.Port, a.Prefix.Addr(), err)
	}
	return nil
}

// flushTable removes the routes this package put in Table, and no other.
func (a *Address) flushTable() error {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: a.Table, Protocol: routeProto}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("read routing table %d: %w", a.Table, err)
	}
	for _, r := range routes {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("empty routing table %d: %w", a.Table, err)
		}
	}
	return nil
}

// Check says why partners cannot reach this gateway at the address, or nil
// when they can: the interface is up, with a carrier, and holds it.
func (a *Address) Check() error {
	link, err := netlink.LinkByName(a.Interface)
	if err != nil {
		return fmt.Errorf("--vip-interface %s: %w", a.Interface, err)
	}
	if st := link.Attrs().OperState; st != netlink.OperUp && st != netlink.OperUnknown {
		return fmt.Errorf("%s is %s", a.Interface, st)
	}
	if held, err := a.Held(); err != nil || !held {
		return fmt.Errorf("%s lost %s (%v)", a.Interface, a.Prefix.Addr(), err)
	}
	return nil
}

// Foreign reports whether the interface holds the address as something
// else's (no label of ours): the host's own address given as --vip, say,
// which a release would delete.
func (a *Address) Foreign() (bool, error) {
	link, err := netlink.LinkByName(a.Interface)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return false, err
	}
	ours := label(link.Attrs().Name)
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && ip.Unmap() == a.Prefix.Addr() {
			// Without room for a label, ours cannot be told from
			// another's: taken as ours, which a crash may have left.
			return ours != "" && ad.Label != ours, nil
		}
	}
	return false, nil
}

// CheckTable says why Table is not this package's to use: it holds routes
// another put there.
func (a *Address) CheckTable() error {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: a.Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("read routing table %d: %w", a.Table, err)
	}
	for _, r := range routes {
		if r.Protocol != routeProto {
			return fmt.Errorf("routing table %d holds routes extranetd did not put there (%s, …): give --vip-table one of its own", a.Table, r)
		}
	}
	return nil
}

// Held reports whether the interface holds the address.
func (a *Address) Held() (bool, error) {
	link, err := netlink.LinkByName(a.Interface)
	if err != nil {
		return false, err
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return false, err
	}
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && ip.Unmap() == a.Prefix.Addr() {
			return true, nil
		}
	}
	return false, nil
}

// announce broadcasts a gratuitous ARP request for ip from link: who has
// ip, tell ip at this link's hardware address. Neighbours update the entry
// they hold for ip; none is made where there was none.
func announce(link netlink.Link, ip netip.Addr) error {
	hw := link.Attrs().HardwareAddr
	if len(hw) != 6 {
		return fmt.Errorf("%s has no Ethernet address", link.Attrs().Name)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: link.Attrs().Index, Halen: 6}
	copy(sa.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	return unix.Sendto(fd, garp(hw, ip), 0, sa)
}

// garp is the ARP payload of a gratuitous request (RFC 5227 announcement).
func garp(hw net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:14], hw)
	a := ip.As4()
	copy(b[14:18], a[:])
	// Target hardware address stays zero; the target is ip itself.
	copy(b[24:28], a[:])
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
