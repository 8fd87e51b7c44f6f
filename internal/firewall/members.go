package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// The per-peer part of the firewall: PeerSet holds the address of every
// peer in force, each with its group's ID as its mark. It changes by
// single entries as peers come, go and move between groups, without
// touching a rule; a move is one entry's new mark, so there is no moment
// in which a peer has two groups.

// setMembers are the members of PeerSet as `ipset save` printed them:
// each address, with its mark.
type setMembers map[string]string

// inTunnel is the part of peers that PeerSet holds: an address outside the
// tunnel network can never be a source on the interface, and one without
// a group would reach nothing.
func inTunnel(tunnel netip.Prefix, peers map[netip.Addr]uint32) map[netip.Addr]uint32 {
	out := make(map[netip.Addr]uint32, len(peers))
	for a, g := range peers {
		if g != 0 && a.Is4() && tunnel.Contains(a) {
			out[a] = g
		}
	}
	return out
}

// UpdatePeerSet takes the addresses in remove out of PeerSet, then puts
// those in add in it with the mark of the group each maps to (an address
// there already takes the new mark): one `ipset restore` of a few lines,
// so issuing, moving or revoking a peer stays cheap. Removals go first,
// so an address that changes hands in one call ends up where add says.
// After an error the set is unknown until SetPeerSet or Apply.
func (f *Firewall) UpdatePeerSet(add map[netip.Addr]uint32, remove []netip.Addr) error {
	if len(add)+len(remove) == 0 {
		return nil
	}
	if f.peers == nil {
		return errors.New("update the peer set: its members are unknown since a failed update (SetPeerSet refills it)")
	}
	for a, g := range add {
		if !f.groups[g] {
			return fmt.Errorf("update the peer set: %s is in group %d, which the rules in force do not have", a, g)
		}
	}
	var script strings.Builder
	removed := map[netip.Addr]bool{}
	for _, a := range remove {
		if _, ok := f.peers[a]; ok && !removed[a] {
			// -exist: one the kernel lost already (drift not yet repaired)
			// must not stop the lines after it.
			fmt.Fprintf(&script, "del %s %s -exist\n", PeerSet, a)
			removed[a] = true
		}
	}
	adds := make([]netip.Addr, 0, len(add))
	for a := range add {
		adds = append(adds, a)
	}
	sort.Slice(adds, func(i, j int) bool { return adds[i].Less(adds[j]) })
	for _, a := range adds {
		// -exist re-marks an address the set holds (a move).
		fmt.Fprintf(&script, "add %s %s -exist\n", PeerSet, peerMember(a, add[a]))
	}
	if script.Len() == 0 {
		return nil
	}
	if _, err := f.ns.run(script.String(), "ipset", "restore"); err != nil {
		f.peers = nil
		return fmt.Errorf("update the peer set: %w", err)
	}
	for a := range removed {
		delete(f.peers, a)
	}
	for a, g := range add {
		f.peers[a] = g
	}
	return nil
}

// SetPeerSet makes PeerSet hold exactly the addresses of peers (those in
// the tunnel network) with their groups' marks: the difference to what it
// holds, or, when that is unknown, a refill against what the kernel shows.
// An address of a group the rules in force do not have is left out, so it
// opens nothing.
func (f *Firewall) SetPeerSet(peers map[netip.Addr]uint32) error {
	if !f.tunnel.IsValid() {
		return errors.New("set the peer set: the firewall was never applied")
	}
	want := inTunnel(f.tunnel, peers)
	for a, g := range want {
		if !f.groups[g] {
			delete(want, a)
		}
	}
	if f.peers == nil {
		saved, err := f.ns.run("", "ipset", "save", PeerSet)
		if err != nil {
			return fmt.Errorf("read the peer set: %w", err)
		}
		if script := setScript([]Set{peerSet(f.tunnel, want)}, parseSave(saved)); script != "" {
			if _, err := f.ns.run(script, "ipset", "restore"); err != nil {
				return fmt.Errorf("refill the peer set: %w", err)
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
	for a := range f.peers {
		if _, ok := want[a]; !ok {
			remove = append(remove, a)
		}
	}
	return f.UpdatePeerSet(add, remove)
}

// peerDrift lists the differences between what PeerSet should hold and
// what `ipset save` printed.
func peerDrift(want map[netip.Addr]uint32, got setMembers) []string {
	if want == nil {
		return []string{"peer set unknown after a failed update"}
	}
	var out []string
	for a, g := range want {
		switch mark, ok := got[a.String()]; {
		case !ok:
			out = append(out, "missing: peer "+a.String())
		case mark != fmt.Sprintf("0x%x", g):
			out = append(out, fmt.Sprintf("wrong group: peer %s marked %s, its group is %d", a, mark, g))
		}
	}
	for m := range got {
		if a, err := netip.ParseAddr(m); err != nil || want[a] == 0 {
			out = append(out, "unexpected: peer "+m)
		}
	}
	sort.Strings(out)
	return out
}
