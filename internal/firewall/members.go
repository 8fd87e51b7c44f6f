package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// The per-peer part of the firewall: PeerSet holds the address of every
// peer in force, and each group's member set the addresses of its own. Both
// change by single entries as peers come, go and move between groups,
// without touching a rule.

// memberSetRE matches the names MemberSet makes.
var memberSetRE = regexp.MustCompile(`^extranet-g[0-9]+-members$`)

// perPeer reports whether a set's members are per peer, and so tracked in
// Firewall.peers rather than in the snapshot.
func perPeer(set string) bool { return set == PeerSet || memberSetRE.MatchString(set) }

// setMembers are the members of the per-peer sets, by set, as `ipset save`
// printed them.
type setMembers map[string]map[string]bool

func (m setMembers) add(set, member string) {
	if m[set] == nil {
		m[set] = map[string]bool{}
	}
	m[set][member] = true
}

// inTunnel is the part of peers that the per-peer sets hold: an address
// outside the tunnel network can never be a source on the interface, and
// one without a group belongs to no member set.
func inTunnel(tunnel netip.Prefix, peers map[netip.Addr]uint32) map[netip.Addr]uint32 {
	out := make(map[netip.Addr]uint32, len(peers))
	for a, g := range peers {
		if g != 0 && a.Is4() && tunnel.Contains(a) {
			out[a] = g
		}
	}
	return out
}

// UpdatePeerSet takes the addresses in remove out of PeerSet and out of
// their groups' member sets, then puts those in add into PeerSet and into
// the member set of the group each maps to: one `ipset restore` of a few
// lines, so issuing, moving or revoking a peer stays cheap. Removals go
// first, so an address that changes hands or groups in one call ends up
// where add says. After an error the sets are unknown until SetPeerSet or
// Apply.
func (f *Firewall) UpdatePeerSet(add map[netip.Addr]uint32, remove []netip.Addr) error {
	if len(add)+len(remove) == 0 {
		return nil
	}
	if f.peers == nil {
		return errors.New("update the peer sets: their members are unknown since a failed update (SetPeerSet refills them)")
	}
	for a, g := range add {
		if !f.groups[g] {
			return fmt.Errorf("update the peer sets: %s is in group %d, which the rules in force do not have", a, g)
		}
	}
	var script strings.Builder
	for _, a := range remove {
		fmt.Fprintf(&script, "del %s %s -exist\n", PeerSet, a)
		if g, ok := f.peers[a]; ok {
			fmt.Fprintf(&script, "del %s %s -exist\n", MemberSet(g), a)
		}
	}
	adds := make([]netip.Addr, 0, len(add))
	for a := range add {
		adds = append(adds, a)
	}
	sort.Slice(adds, func(i, j int) bool { return adds[i].Less(adds[j]) })
	for _, a := range adds {
		// A peer that moved leaves its old group's set.
		if old, ok := f.peers[a]; ok && old != add[a] {
			fmt.Fprintf(&script, "del %s %s -exist\n", MemberSet(old), a)
		}
		fmt.Fprintf(&script, "add %s %s -exist\n", PeerSet, a)
		fmt.Fprintf(&script, "add %s %s -exist\n", MemberSet(add[a]), a)
	}
	if _, err := f.ns.run(script.String(), "ipset", "restore"); err != nil {
		f.peers = nil
		return fmt.Errorf("update the peer sets: %w", err)
	}
	for _, a := range remove {
		delete(f.peers, a)
	}
	for a, g := range add {
		f.peers[a] = g
	}
	return nil
}

// SetPeerSet makes PeerSet hold exactly the addresses of peers (those in
// the tunnel network), and each group's member set those that map to it:
// the difference to what they hold, or, when that is unknown, a refill
// against what the kernel shows. An address of a group the rules in force
// do not have is left out of both, so it opens nothing.
func (f *Firewall) SetPeerSet(peers map[netip.Addr]uint32) error {
	if !f.tunnel.IsValid() {
		return errors.New("set the peer sets: the firewall was never applied")
	}
	want := inTunnel(f.tunnel, peers)
	for a, g := range want {
		if !f.groups[g] {
			delete(want, a)
		}
	}
	if f.peers == nil {
		saved, err := f.ns.run("", "ipset", "save")
		if err != nil {
			return fmt.Errorf("read the peer sets: %w", err)
		}
		members := memberSets(f.tunnel, want)
		// In group order, as Apply swaps them: a peer that moved to a
		// lower group joins it before it leaves the higher one, which the
		// organisation's chain tests later, and one that moved up leaves
		// first; so it never has its old group's access.
		groups := make([]uint32, 0, len(f.groups))
		for g := range f.groups {
			groups = append(groups, g)
		}
		slices.Sort(groups)
		sets := []Set{peerSet(f.tunnel, want)}
		for _, g := range groups {
			sets = append(sets, Set{MemberSet(g), "hash:ip", addrStrings(members[g])})
		}
		if script := setScript(sets, parseSave(saved)); script != "" {
			if _, err := f.ns.run(script, "ipset", "restore"); err != nil {
				return fmt.Errorf("refill the peer sets: %w", err)
			}
		}
		f.peers = want
		return nil
	}
	add := map[netip.Addr]uint32{}
	var remove []netip.Addr
	for a, g := range want {
		if old, ok := f.peers[a]; !ok || old != g {
			add[a] = g
		}
	}
	for a, g := range f.peers {
		if want[a] != g {
			remove = append(remove, a)
		}
	}
	return f.UpdatePeerSet(add, remove)
}

// peerDrift lists the differences between what the per-peer sets should
// hold and what `ipset save` printed.
func peerDrift(want map[netip.Addr]uint32, got setMembers) []string {
	if want == nil {
		return []string{"peer sets unknown after a failed update"}
	}
	var out []string
	for a, g := range want {
		if !got[PeerSet][a.String()] {
			out = append(out, "missing: peer "+a.String())
		}
		if !got[MemberSet(g)][a.String()] {
			out = append(out, fmt.Sprintf("missing: peer %s in %s", a, MemberSet(g)))
		}
	}
	for set, ms := range got {
		for m := range ms {
			a, err := netip.ParseAddr(m)
			g, ok := want[a]
			switch {
			case err != nil || !ok:
				out = append(out, fmt.Sprintf("unexpected: peer %s in %s", m, set))
			case set != PeerSet && set != MemberSet(g):
				out = append(out, fmt.Sprintf("unexpected: peer %s in %s (its group's set is %s)", m, set, MemberSet(g)))
			}
		}
	}
	sort.Strings(out)
	return out
}
