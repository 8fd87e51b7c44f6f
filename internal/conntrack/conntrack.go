// Package conntrack kills established flows that lost their access. A rule
// that accepts established packets would otherwise let a revoked partner's
// open connection live on; deleting its conntrack entry sends its next
// packet through the rules again, where it is refused.
package conntrack

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/extranetgw/extranet/internal/policy"
)

// Kernel sweeps the conntrack table of the namespace its handle works in:
// the gateway's, where partner flows are tracked. Without one it sweeps
// the caller's.
type Kernel struct {
	NL *netlink.Handle
	// Killed, when set, hears of each flow Sweep deletes (by its
	// original direction), before it is deleted: the activity log tells
	// a killed flow from one that ended by itself.
	Killed func(proto uint8, src, dst netip.Addr, sport, dport uint16)
}

// Sweep deletes, in one walk of the table, every IPv4 flow that Doomed
// says must die, and returns how many it deleted.
func (k Kernel) Sweep(tunnel netip.Prefix, p *policy.Policy) (int, error) {
	del := netlink.ConntrackDeleteFilters
	if k.NL != nil {
		del = k.NL.ConntrackDeleteFilters
	}
	n, err := del(netlink.ConntrackTable, netlink.FAMILY_V4, filter{tunnel: tunnel, p: p, killed: k.Killed})
	if err != nil {
		return int(n), fmt.Errorf("delete conntrack entries: %w", err)
	}
	return int(n), nil
}

type filter struct {
	tunnel netip.Prefix
	p      *policy.Policy
	killed func(proto uint8, src, dst netip.Addr, sport, dport uint16)
}

func (f filter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	src, ok1 := netip.AddrFromSlice(flow.Forward.SrcIP)
	dst, ok2 := netip.AddrFromSlice(flow.Forward.DstIP)
	if !ok1 || !ok2 {
		return false
	}
	doomed := Doomed(f.tunnel, f.p, src.Unmap(), dst.Unmap(), flow.Forward.Protocol, flow.Forward.DstPort)
	if doomed && f.killed != nil {
		f.killed(flow.Forward.Protocol, src.Unmap(), dst.Unmap(), flow.Forward.SrcPort, flow.Forward.DstPort)
	}
	return doomed
}

// Doomed decides a flow by its original direction: a flow toward a partner
// address is never allowed (partners only open flows, never accept them),
// and a flow from a partner lives only while the policy would still admit
// it as new. Flows that do not touch the tunnel network are not ours.
func Doomed(tunnel netip.Prefix, p *policy.Policy, src, dst netip.Addr, proto uint8, dport uint16) bool {
	if tunnel.Contains(dst) {
		return true
	}
	if tunnel.Contains(src) {
		return !p.Allows(src, dst, proto, dport)
	}
	return false
}

// Forget deletes every IPv4 entry of the tunnel network's flows, and of
// UDP port port (WireGuard's; 0: none) to or from local (the shared
// address), and returns how many it deleted. A
// cluster gateway that becomes the active forgets what it tracked in an
// earlier turn: another gateway carried those flows since, and entries
// whose sequence numbers fell behind would mark the flows' packets invalid
// instead of picking them up where they are.
func (k Kernel) Forget(tunnel netip.Prefix, port uint16, local netip.Addr) (int, error) {
	del := netlink.ConntrackDeleteFilters
	if k.NL != nil {
		del = k.NL.ConntrackDeleteFilters
	}
	n, err := del(netlink.ConntrackTable, netlink.FAMILY_V4, ours{tunnel: tunnel, port: port, local: local})
	if err != nil {
		return int(n), fmt.Errorf("delete conntrack entries: %w", err)
	}
	return int(n), nil
}

type ours struct {
	tunnel netip.Prefix
	port   uint16
	local  netip.Addr
}

func (o ours) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	f := flow.Forward
	src, ok1 := netip.AddrFromSlice(f.SrcIP)
	dst, ok2 := netip.AddrFromSlice(f.DstIP)
	if !ok1 || !ok2 {
		return false
	}
	if o.tunnel.Contains(src.Unmap()) || o.tunnel.Contains(dst.Unmap()) {
		return true
	}
	return o.port != 0 && f.Protocol == 17 && (f.SrcPort == o.port && src.Unmap() == o.local || f.DstPort == o.port && dst.Unmap() == o.local)
}
