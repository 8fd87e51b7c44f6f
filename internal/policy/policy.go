// Package policy is the access policy the kernel must enforce, derived from
// the store and handed to the firewall and the conntrack sweeper. It decides
// nothing about how rules look; it only says who may reach what.
package policy

import (
	"net/netip"

	"github.com/extranetgw/extranet/internal/grant"
)

// Org is one active organisation: the address blocks its peers live in and
// its access groups.
type Org struct {
	// ID is small, stable and never reused, so that chain and set names
	// derived from it survive renames and restarts.
	ID     uint32
	Name   string
	Blocks []netip.Prefix
	Groups []Group
}

// Group is an access group: what its peers may reach. Its grants lie
// within the organisation's (the store keeps them so); the rules and the
// sweep need only the group's.
type Group struct {
	// ID is unique across organisations and never reused, like an
	// organisation's.
	ID     uint32
	Name   string
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
	// Peers maps the tunnel address of every peer that may send to the ID
	// of its group. A flow from any other tunnel address is dead, whatever
	// its org was granted, and so is one from a peer whose group is not
	// among its organisation's.
	Peers map[netip.Addr]uint32
	// HostAddrs are the gateway host's own addresses. They are not
	// internal subnets: no partner reaches them, whatever a grant covers.
	HostAddrs []netip.Addr
}

// Allows reports whether a new flow from src to dst (IANA protocol number,
// destination port) is permitted. It is the same decision the firewall rules
// make, used to find established flows that the rules would no longer admit.
func (p *Policy) Allows(src, dst netip.Addr, proto uint8, dport uint16) bool {
	gid := p.Peers[src]
	if gid == 0 {
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
		for _, g := range o.Groups {
			if g.ID == gid {
				return allows(g.Grants, dst, proto, dport)
			}
		}
		return false
	}
	return false
}

func allows(gs []grant.Grant, dst netip.Addr, proto uint8, dport uint16) bool {
	for _, g := range gs {
		if g.Allows(dst, proto, dport) {
			return true
		}
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
