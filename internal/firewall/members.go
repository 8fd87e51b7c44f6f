package firewall

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/policy"
)

// The per-peer part of the firewall: PeerSet holds the address of every
// peer in force, each with its group's ID as its mark. It changes by
// single entries as peers come, go and move between groups, without
// touching a rule; a move is one entry's new mark, so there is no moment
// in which a peer has two groups.
//
// Each entry also carries what must outlive the daemon, in the kernel,
// where it lives exactly as long as the flows it is about:
//   - a timeout that ends it on its peer's date (or its organisation's),
//     so that a date that passes while the daemon is down or dead still
//     ends the peer's new flows;
//   - the fingerprint of the key that holds the address (a comment), so
//     that a start can tell which addresses changed hands while the daemon
//     was away (a restore) and kill their flows.

// maxTimeout is the longest timeout, in seconds, that ipset keeps for an
// entry (2^31-1 ms). A date further away is written without one, and with
// one by the first full run within reach of it.
const maxTimeout = 2147483

// entry is a peer as PeerSet holds it: whether its entry counts down is
// decided when it is written.
type entry struct {
	policy.Peer
	timed bool
}

func entryAt(p policy.Peer, now time.Time) entry {
	return entry{p, !p.Ends.IsZero() && p.Ends.Sub(now) <= maxTimeout*time.Second}
}

func (e entry) same(o entry) bool { return e.timed == o.timed && e.Peer.Same(o.Peer) }

func entries(peers map[netip.Addr]policy.Peer, now time.Time) map[netip.Addr]entry {
	out := make(map[netip.Addr]entry, len(peers))
	for a, p := range peers {
		out[a] = entryAt(p, now)
	}
	return out
}

// peerMember is an entry of PeerSet as `ipset restore` takes it and, but
// for the value of the timeout, as `ipset save` prints it.
func peerMember(a netip.Addr, e entry, now time.Time) string {
	timeout := 0
	if e.timed {
		timeout = max(1, int(math.Ceil(e.Ends.Sub(now).Seconds())))
	}
	return fmt.Sprintf("%s timeout %d comment \"%s\" skbmark 0x%x", a, timeout, e.Holder(), e.Group)
}

// normMember is a member as `ipset save` prints it, without what changes
// by itself: a running timeout is only "timed", none is left out.
func normMember(m string) string {
	f := strings.Fields(m)
	for i := 0; i+1 < len(f); i++ {
		if f[i] != "timeout" {
			continue
		}
		if f[i+1] == "0" {
			return strings.Join(append(f[:i:i], f[i+2:]...), " ")
		}
		return strings.Join(append(append(f[:i:i], "timed"), f[i+2:]...), " ")
	}
	return m
}

// setMembers are the members of PeerSet as `ipset save` printed them, by
// address, normalised (normMember).
type setMembers map[string]string

// inTunnel is the part of peers that PeerSet holds: an address outside the
// tunnel network can never be a source on the interface, and one without
// a group would reach nothing.
func inTunnel(tunnel netip.Prefix, peers map[netip.Addr]policy.Peer) map[netip.Addr]policy.Peer {
	out := make(map[netip.Addr]policy.Peer, len(peers))
	for a, p := range peers {
		if p.Group != 0 && a.Is4() && tunnel.Contains(a) {
			out[a] = p
		}
	}
	return out
}

// UpdatePeerSet takes the addresses in remove out of PeerSet, then puts
// those in add in it with the mark of the group each is in (an address
// there already takes the new entry): one `ipset restore` of a few lines,
// so issuing, moving or revoking a peer stays cheap. Removals go first,
// so an address that changes hands in one call ends up where add says.
// After an error the set is unknown until SetPeerSet or Apply.
func (f *Firewall) UpdatePeerSet(add map[netip.Addr]policy.Peer, remove []netip.Addr) error {
	if len(add)+len(remove) == 0 {
		return nil
	}
	if !f.peersKnown {
		return errors.New("update the peer set: its members are unknown since a failed update (SetPeerSet refills it)")
	}
	for a, p := range add {
		if !f.groups[p.Group] {
			return fmt.Errorf("update the peer set: %s is in group %d, which the rules in force do not have", a, p.Group)
		}
	}
	now := f.opts.Now()
	var script strings.Builder
	removed := map[netip.Addr]bool{}
	for _, a := range remove {
		if _, ok := f.peers[a]; ok && !removed[a] {
			// -exist: one the kernel lost already (drift not yet repaired,
			// or its timeout ran out) must not stop the lines after it.
			fmt.Fprintf(&script, "del %s %s -exist\n", PeerSet, a)
			removed[a] = true
		}
	}
	adds := make([]netip.Addr, 0, len(add))
	for a := range add {
		adds = append(adds, a)
	}
	sort.Slice(adds, func(i, j int) bool { return adds[i].Less(adds[j]) })
	written := make(map[netip.Addr]entry, len(add))
	for _, a := range adds {
		e := entryAt(add[a], now)
		written[a] = e
		// -exist rewrites an address the set holds (a move, a new key,
		// a new date).
		fmt.Fprintf(&script, "add %s %s -exist\n", PeerSet, peerMember(a, e, now))
	}
	if script.Len() == 0 {
		return nil
	}
	if _, err := f.ns.run(script.String(), "ipset", "restore"); err != nil {
		f.peersKnown = false
		return fmt.Errorf("update the peer set: %w", err)
	}
	for a := range removed {
		delete(f.peers, a)
	}
	for a, e := range written {
		f.peers[a] = e
	}
	return nil
}

// SetPeerSet makes PeerSet hold exactly the addresses of peers (those in
// the tunnel network) with their entries: the difference to what it holds,
// or, when that is unknown, a refill against what the kernel shows. An
// address of a group the rules in force do not have is left out, so it
// opens nothing.
func (f *Firewall) SetPeerSet(peers map[netip.Addr]policy.Peer) error {
	if !f.tunnel.IsValid() {
		return errors.New("set the peer set: the firewall was never applied")
	}
	want := inTunnel(f.tunnel, peers)
	for a, p := range want {
		if !f.groups[p.Group] {
			delete(want, a)
		}
	}
	now := f.opts.Now()
	if !f.peersKnown {
		saved, err := f.ns.run("", "ipset", "save", PeerSet)
		if err != nil {
			return fmt.Errorf("read the peer set: %w", err)
		}
		if script := setScript([]Set{peerSet(f.tunnel, want, now)}, parseSave(saved)); script != "" {
			if _, err := f.ns.run(script, "ipset", "restore"); err != nil {
				return fmt.Errorf("refill the peer set: %w", err)
			}
		}
		f.peers, f.peersKnown = entries(want, now), true
		return nil
	}
	add := map[netip.Addr]policy.Peer{}
	var remove []netip.Addr
	for a, p := range want {
		// Also an entry that was written without a timeout and whose
		// date is now within reach of one.
		if old, ok := f.peers[a]; !ok || !old.same(entryAt(p, now)) {
			add[a] = p
		}
	}
	for a := range f.peers {
		if _, ok := want[a]; !ok {
			remove = append(remove, a)
		}
	}
	return f.UpdatePeerSet(add, remove)
}

// PeerHolders reads which key holds each address in PeerSet as the kernel
// keeps it (policy.Peer.Holder): at a start, what the last run left,
// which may differ from the state the daemon starts on.
func (f *Firewall) PeerHolders() (map[netip.Addr]string, error) {
	out, err := f.ns.run("", "ipset", "save", PeerSet)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil, nil
		}
		return nil, fmt.Errorf("read the peer set: %w", err)
	}
	held := map[netip.Addr]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "add" || f[1] != PeerSet {
			continue
		}
		a, err := netip.ParseAddr(f[2])
		if err != nil {
			continue
		}
		held[a] = ""
		for i := 3; i+1 < len(f); i++ {
			if f[i] == "comment" {
				held[a], _ = strconv.Unquote(f[i+1])
			}
		}
	}
	return held, nil
}

// peerDrift lists the differences between what PeerSet should hold and
// what `ipset save` printed. An entry whose timeout ran out on its date is
// not missing: the kernel ended it as it was told to.
func peerDrift(want map[netip.Addr]entry, got setMembers, now time.Time) []string {
	var out []string
	for a, e := range want {
		m, ok := got[a.String()]
		switch {
		case !ok && e.timed && !e.Ends.After(now):
		case !ok:
			out = append(out, "missing: peer "+a.String())
		case m != strings.TrimPrefix(normMember(peerMember(a, e, now)), a.String()+" "):
			out = append(out, fmt.Sprintf("wrong entry: peer %s holds %q, want group %d, key %s", a, m, e.Group, e.Holder()))
		}
	}
	for m := range got {
		if a, err := netip.ParseAddr(m); err != nil {
			out = append(out, "unexpected: peer "+m)
		} else if _, ok := want[a]; !ok {
			out = append(out, "unexpected: peer "+m)
		}
	}
	sort.Strings(out)
	return out
}
