// Package policy is the access policy the kernel must enforce, derived from
// the store and handed to the firewall and the conntrack sweeper. It decides
// nothing about how rules look; it only says who may reach what.
package policy

import (
	"net/netip"

	"github.com/extranetgw/extranet/internal/grant"
)

// Org is one active organisation: the address blocks its peers live in and
// the resources they may reach.
type Org struct {
	// ID is small, stable and never reused, so that chain and set names
	// derived from it survive renames and restarts.
	ID     uint32
	Name   string
	Blocks []netip.Prefix
	Grants []grant.Grant
}

// Policy is everything the data plane enforces. Suspended and expired orgs
// are simply absent: absence means deny.
type Policy struct {
	// Interface is the WireGuard interface partners arrive on.
	Interface string
	// TunnelNet is the whole tunnel network; every partner address is in it.
	TunnelNet netip.Prefix
	// Masquerade rewrites partner sources to the gateway's address toward
	// the internal side, so internal hosts need no route back.
	Masquerade bool
	Orgs       []Org
	// Peers holds the tunnel address of every peer that may send. A flow
	// from any other tunnel address is dead, whatever its org was granted.
	Peers map[netip.Addr]bool
	// HostAddrs are the gateway host's own addresses. They are not
	// internal subnets: no partner reaches them, whatever a grant covers.
	HostAddrs []netip.Addr
}

// Allows reports whether a new flow from src to dst (IANA protocol number,
// destination port) is permitted. It is the same decision the firewall rules
// make, used to find established flows that the rules would no longer admit.
func (p *Policy) Allows(src, dst netip.Addr, proto uint8, dport uint16) bool {
	if !p.Peers[src] {
		return false
	}
	for _, h := range p.HostAddrs {
		if h == dst {
			return false
		}
	}
	for _, o := range p.Orgs {
		if !containsAny(o.Blocks, src) {
			continue
		}
		for _, g := range o.Grants {
			if g.Allows(dst, proto, dport) {
				return true
			}
		}
		return false
	}
	return false
}

func containsAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
