// Package ipam is the address plan of the tunnel network: it cuts the network
// into per-organisation blocks and picks peer addresses inside them. It is
// pure arithmetic; which addresses are taken is the caller's to say.
//
// Block 0 belongs to the gateway, whose address is the first host of the
// network, so that no organisation's block (and so no firewall match on an
// organisation's source prefix) ever contains the gateway. In every block the
// first and last addresses are left unused: some clients refuse to take an
// address that looks like a network or broadcast address.
package ipam

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrExhausted is returned when no block or address is free.
var ErrExhausted = errors.New("address pool exhausted")

// Plan describes how the tunnel network is cut.
type Plan struct {
	Network   netip.Prefix
	BlockBits int // prefix length of one organisation block, e.g. 24
}

// NewPlan checks a network and block size.
func NewPlan(network netip.Prefix, blockBits int) (Plan, error) {
	if !network.Addr().Is4() {
		return Plan{}, fmt.Errorf("tunnel network %s is not IPv4", network)
	}
	if network.Masked() != network {
		return Plan{}, fmt.Errorf("tunnel network %s has host bits set; use %s", network, network.Masked())
	}
	if blockBits <= network.Bits() || blockBits > 30 {
		return Plan{}, fmt.Errorf("org block size /%d must be longer than the tunnel network /%d and at most /30", blockBits, network.Bits())
	}
	return Plan{Network: network, BlockBits: blockBits}, nil
}

// Gateway is the gateway's own tunnel address, with the network's length.
func (p Plan) Gateway() netip.Prefix {
	return netip.PrefixFrom(p.Network.Addr().Next(), p.Network.Bits())
}

// NumBlocks is how many blocks the network holds, the gateway's included.
func (p Plan) NumBlocks() int {
	return 1 << (p.BlockBits - p.Network.Bits())
}

// Block returns block i (0 is the gateway's).
func (p Plan) Block(i int) netip.Prefix {
	base := u32(p.Network.Addr())
	return netip.PrefixFrom(addr(base+uint32(i)<<(32-p.BlockBits)), p.BlockBits)
}

// NextBlock returns the lowest block that is not the gateway's and
// overlaps no block in use. Blocks of another size (cut before the plan
// was stored with the state) are checked for overlap one by one; blocks of
// the plan's size can only overlap by being equal.
func (p Plan) NextBlock(used []netip.Prefix) (netip.Prefix, error) {
	taken := make(map[netip.Prefix]bool, len(used))
	var odd []netip.Prefix
	for _, b := range used {
		if b.Bits() == p.BlockBits {
			taken[b.Masked()] = true
		} else {
			odd = append(odd, b)
		}
	}
next:
	for i := 1; i < p.NumBlocks(); i++ {
		b := p.Block(i)
		if taken[b] {
			continue
		}
		for _, o := range odd {
			if b.Overlaps(o) {
				continue next
			}
		}
		return b, nil
	}
	return netip.Prefix{}, fmt.Errorf("%w: all %d blocks of /%d in %s are taken; widen --tunnel-network or use smaller --org-block-bits", ErrExhausted, p.NumBlocks()-1, p.BlockBits, p.Network)
}

// Hosts returns the first and last usable peer address of a block.
func Hosts(block netip.Prefix) (first, last netip.Addr) {
	base := u32(block.Masked().Addr())
	size := uint32(1) << (32 - block.Bits())
	return addr(base + 1), addr(base + size - 2)
}

// Contains reports whether a falls in any of blocks.
func Contains(blocks []netip.Prefix, a netip.Addr) bool {
	for _, b := range blocks {
		if b.Contains(a) {
			return true
		}
	}
	return false
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
