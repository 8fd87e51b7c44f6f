package gwns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// HostLocal lists what the host namespace (the caller's) receives itself,
// IPv4 only: its addresses and their networks' broadcast addresses, and
// every route of type local or broadcast in any table (`ip route add local
// 10.9.0.0/24 dev lo` makes the host answer a whole range, with no address
// in it). No partner may reach any of it, whatever its grants cover.
func HostLocal() ([]netip.Prefix, error) {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list the host's addresses: %w", err)
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list the host's routes: %w", err)
	}
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	add := func(p netip.Prefix) {
		if p.IsValid() && p.Addr().Is4() && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	host := func(ip net.IP) {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok && !a.IsUnspecified() {
			add(netip.PrefixFrom(a, 32))
		}
	}
	for _, a := range addrs {
		host(a.IP)
		if a.Broadcast != nil {
			host(a.Broadcast)
		}
	}
	for _, r := range routes {
		if r.Type != unix.RTN_LOCAL && r.Type != unix.RTN_BROADCAST || r.Dst == nil {
			continue
		}
		if p, ok := prefixOf(r.Dst); ok {
			add(p)
		}
	}
	add(netip.MustParsePrefix("255.255.255.255/32"))
	return out, nil
}

// Egress lists the host interfaces partner traffic toward granted may leave
// by, in name order: named, when the admin named them; else every
// interface that holds a route toward a granted prefix (the route its first
// address takes, and any more specific route inside it), except the
// gateway's own veth, loopback, and the kinds of link that carry the
// host's own containers and VMs rather than internal networks (guestLinks).
// A routed veth per container (Calico's cali*) looks like any veth: on such
// hosts the egress interfaces are named.
func Egress(granted []netip.Prefix, named []string, veth string) ([]string, error) {
	if len(named) > 0 {
		out := slices.Clone(named)
		slices.Sort(out)
		return slices.Compact(out), nil
	}
	if len(granted) == 0 {
		return nil, nil
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list the host's routes: %w", err)
	}
	links := map[int]bool{}
	addRoute := func(r netlink.Route) {
		if r.LinkIndex > 0 {
			links[r.LinkIndex] = true
		}
		for _, nh := range r.MultiPath {
			links[nh.LinkIndex] = true
		}
	}
	for _, g := range granted {
		// The route the granted range's traffic takes as a whole...
		if rs, err := netlink.RouteGet(g.Addr().AsSlice()); err == nil {
			for _, r := range rs {
				addRoute(r)
			}
		}
		// ...and any more specific one inside it.
		for _, r := range routes {
			if r.Type != unix.RTN_UNICAST || r.Dst == nil {
				continue
			}
			if d, ok := prefixOf(r.Dst); ok && g.Bits() <= d.Bits() && g.Contains(d.Addr()) {
				addRoute(r)
			}
		}
	}
	var out []string
	for idx := range links {
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			// Gone since the dump: the next run sees the routes as they are.
			continue
		}
		name := l.Attrs().Name
		if name == veth || l.Attrs().Flags&net.FlagLoopback != 0 || guestLinks[l.Type()] {
			continue
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out, nil
}

// guestLinks are the link types that connect the host's own guests:
// bridges (docker0, virbr0, cni0), Open vSwitch, a VM's tap, macvlan and
// ipvlan children.
var guestLinks = map[string]bool{"bridge": true, "openvswitch": true, "tuntap": true, "macvlan": true, "macvtap": true, "ipvlan": true}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits != 32 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

// retryDump retries a netlink dump that changes interrupted: those changes
// are what is being followed.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var out []T
	var err error
	for try := 0; try < 5; try++ {
		if out, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return out, err
}

// ipForward is the host's IPv4 forwarding switch.
const ipForward = "/proc/sys/net/ipv4/ip_forward"

// RecordDir holds what the host was like before a gateway namespace was
// joined to it. It is under /run, which lives as long as the boot, as what
// it records does, and not in systemd's runtime directory of the unit,
// which goes at every stop: `extranetd cleanup` needs it afterwards.
const RecordDir = "/run/extranet-host"

// ForwardingRecord is the file that records the host's forwarding for the
// gateway namespace name.
func ForwardingRecord(name string) string {
	return filepath.Join(RecordDir, name+".forwarding")
}

// HostForwarded tells whether the host forwarded IPv4 before the gateway
// first switched forwarding on since it booted. The first call of a boot
// reads the switch and records the answer in record (with the boot's id),
// so that a restarted daemon, which finds the switch on, still knows.
func HostForwarded(record string) (bool, error) {
	boot, err := bootID()
	if err != nil {
		return false, err
	}
	if b, err := os.ReadFile(record); err == nil {
		if id, val, ok := strings.Cut(strings.TrimSpace(string(b)), " "); ok && id == boot {
			return val == "1", nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", record, err)
	}
	cur, err := os.ReadFile(ipForward)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", ipForward, err)
	}
	val := strings.TrimSpace(string(cur))
	if err := os.MkdirAll(filepath.Dir(record), 0o700); err != nil {
		return false, fmt.Errorf("record the host's forwarding: %w", err)
	}
	if err := os.WriteFile(record, []byte(boot+" "+val+"\n"), 0o600); err != nil {
		return false, fmt.Errorf("record the host's forwarding in %s: %w", record, err)
	}
	return val == "1", nil
}

// RestoreHostForwarding puts the host's IPv4 forwarding back as record says
// it was before the gateway switched it on this boot, and removes record.
// Without a record of this boot it changes nothing. It reports what it did.
func RestoreHostForwarding(record string) (string, error) {
	b, err := os.ReadFile(record)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", record, err)
	}
	boot, err := bootID()
	if err != nil {
		return "", err
	}
	id, val, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	did := ""
	if ok && id == boot && val == "0" {
		if err := os.WriteFile(ipForward, []byte("0\n"), 0o644); err != nil {
			return "", fmt.Errorf("switch the host's forwarding back off: %w", err)
		}
		did = "net.ipv4.ip_forward back to 0"
	}
	if err := os.Remove(record); err != nil {
		return did, fmt.Errorf("remove %s: %w", record, err)
	}
	return did, nil
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read the boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
