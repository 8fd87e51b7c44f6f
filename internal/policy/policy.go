// Package policy is the access policy the kernel must enforce, derived from
// the store and handed to the firewall and the conntrack sweeper. It decides
// nothing about how rules look; it only says who may reach what.
package policy

import (
	"encoding/hex"
	"net/netip"
	"slices"
	"time"

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
	// Peers maps the tunnel address of every peer that may send to what
	// the data plane holds of it. A flow from any other tunnel address is
	// dead, whatever its org was granted, and so is one from a peer whose
	// group is not among its organisation's.
	Peers map[netip.Addr]Peer
	// Host is what the gateway host is, as far as partner traffic goes.
	Host Host
	// At is when the policy was derived: the peers' dates count from it.
	At time.Time
}

// Host is the gateway host as the data plane must know it.
type Host struct {
	// Local is everything the host receives itself: its addresses, the
	// ranges routed to it as local, broadcast addresses. They are not
	// internal subnets: no partner reaches them, whatever a grant covers.
	Local []netip.Prefix
	// Egress are the host's interfaces partner traffic may leave by, in
	// name order; none means it leaves by none.
	Egress []string
	// Forwarded tells whether the host forwarded IPv4 between its
	// networks before the gateway switched forwarding on. If it did not,
	// it still forwards nothing but partner traffic.
	Forwarded bool
	// Shared, when set, is the address partners dial where gateways take
	// turns answering them (docs/cluster.md): the active holds it.
	Shared *SharedAddress
}

// SharedAddress is an address that moves with a cluster's active role.
// Partner traffic leaves by Interface from it, so that what an internal
// host sees stays the same when another gateway takes over.
type SharedAddress struct {
	Addr      netip.Addr
	Interface string
}

// Granted lists the prefixes of every grant of p's groups, each once, in
// address order: where partner traffic may go.
func (p *Policy) Granted() []netip.Prefix {
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	for _, o := range p.Orgs {
		for _, g := range o.Groups {
			for _, gr := range g.Grants {
				if pfx := gr.Prefix.Masked(); !seen[pfx] {
					seen[pfx] = true
					out = append(out, pfx)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// Peer is a peer in force as the data plane holds it.
type Peer struct {
	// Group is the ID of its access group.
	Group uint32
	// Key is its public key: flows at its address opened under another
	// key were another peer's.
	Key [32]byte
	// Ends is when its access ends, by its own date or its
	// organisation's, whichever comes first; zero for never.
	Ends time.Time
}

// Holder is the fingerprint of the key that holds the peer's address, as
// the kernel keeps it beside the address.
func (a Peer) Holder() string { return hex.EncodeToString(a.Key[:8]) }

// Same reports whether a and b need the same entry in the data plane.
func (a Peer) Same(b Peer) bool {
	return a.Group == b.Group && a.Key == b.Key && a.Ends.Equal(b.Ends)
}

// Allows reports whether a new flow from src to dst (IANA protocol number,
// destination port) is permitted. It is the same decision the firewall rules
// make, used to find established flows that the rules would no longer admit.
func (p *Policy) Allows(src, dst netip.Addr, proto uint8, dport uint16) bool {
	gid := p.Peers[src].Group
	if gid == 0 {
		return false
	}
	if containsAny(p.Host.Local, dst) {
		return false
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
