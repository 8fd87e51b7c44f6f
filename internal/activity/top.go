package activity

import (
	"cmp"
	"slices"

	"github.com/extranetgw/extranet/pkg/api"
)

// Tally adds up records into an api.ActivityTop: pure, so that what top
// says is tested without a log. Its memory grows with the distinct
// destinations and peers, not with the records, and is bounded: past
// maxKeys of either, the rest are added up in one entry without a name,
// and past maxPeersPerDest a destination's peers are no longer told
// apart. A partner with a wide grant cannot make a read of a full log
// take the daemon's memory.
type Tally struct {
	records        uint64
	truncated      bool
	marks          int // entries of the destinations' peer sets
	dests, refDest map[destKey]*destTally
	peers, refPeer map[peerKey]*api.TopEntry
}

const (
	maxKeys         = 10000
	maxPeersPerDest = 100
	// maxPeerMarks bounds the peers told apart across all destinations:
	// past it, a destination's count of peers is a lower bound.
	maxPeerMarks = 100000
)

type destKey struct {
	proto, dest string
	port        uint16
}

type peerKey struct{ peer, address string }

type destTally struct {
	api.TopEntry
	from map[peerKey]struct{}
}

// NewTally returns an empty Tally.
func NewTally() *Tally {
	return &Tally{dests: map[destKey]*destTally{}, refDest: map[destKey]*destTally{}, peers: map[peerKey]*api.TopEntry{}, refPeer: map[peerKey]*api.TopEntry{}}
}

// Add counts one record.
func (t *Tally) Add(f api.Flow) {
	t.records++
	var flows uint64
	switch f.End {
	case api.FlowSummarised, api.FlowRefused:
		flows = f.Flows
	case api.FlowOpen:
		// Counted when it ends; its bytes now, since each record has
		// only what came after the one before.
	default:
		flows = 1
	}
	dests, peers := t.dests, t.peers
	if f.End == api.FlowRefused {
		dests, peers = t.refDest, t.refPeer
	}
	pk := peerKey{peer: f.Peer}
	if f.Peer == "" {
		pk.address = f.Address
	}
	p := peers[pk]
	if p == nil {
		if len(peers) >= maxKeys {
			pk, t.truncated = peerKey{}, true
			p = peers[pk]
		}
		if p == nil {
			p = &api.TopEntry{Peer: pk.peer, Address: pk.address}
			peers[pk] = p
		}
	}
	add(p, f, flows)
	if f.RateLimited {
		// Counted by the firewall without their destinations.
		return
	}
	dk := destKey{proto: f.Proto, dest: f.Dest, port: f.Port}
	d := dests[dk]
	if d == nil {
		if len(dests) >= maxKeys {
			dk, t.truncated = destKey{}, true
			d = dests[dk]
		}
		if d == nil {
			d = &destTally{TopEntry: api.TopEntry{Proto: dk.proto, Dest: dk.dest, Port: dk.port}, from: map[peerKey]struct{}{}}
			dests[dk] = d
		}
	}
	if _, ok := d.from[pk]; !ok && len(d.from) < maxPeersPerDest && t.marks < maxPeerMarks {
		d.from[pk] = struct{}{}
		t.marks++
	}
	add(&d.TopEntry, f, flows)
}

func add(e *api.TopEntry, f api.Flow, flows uint64) {
	e.BytesOut += f.BytesOut
	e.BytesIn += f.BytesIn
	e.Flows += flows
}

// Top returns the n longest of each list: by bytes both ways, and for
// refusals by attempts; ties in the order of their names, so the same log
// gives the same answer.
func (t *Tally) Top(n int) api.ActivityTop {
	byBytes := func(a, b api.TopEntry) int {
		return cmp.Or(cmp.Compare(b.BytesOut+b.BytesIn, a.BytesOut+a.BytesIn), cmp.Compare(b.Flows, a.Flows), byName(a, b))
	}
	byAttempts := func(a, b api.TopEntry) int {
		return cmp.Or(cmp.Compare(b.Flows, a.Flows), byName(a, b))
	}
	return api.ActivityTop{
		Records:             t.records,
		Truncated:           t.truncated,
		Destinations:        topDests(t.dests, n, byBytes),
		Peers:               topPeers(t.peers, n, byBytes),
		RefusedDestinations: topDests(t.refDest, n, byAttempts),
		RefusedPeers:        topPeers(t.refPeer, n, byAttempts),
	}
}

func byName(a, b api.TopEntry) int {
	return cmp.Or(cmp.Compare(a.Peer, b.Peer), cmp.Compare(a.Address, b.Address), cmp.Compare(a.Dest, b.Dest), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
}

func topDests(m map[destKey]*destTally, n int, order func(a, b api.TopEntry) int) []api.TopEntry {
	out := make([]api.TopEntry, 0, len(m))
	for _, d := range m {
		e := d.TopEntry
		e.Peers = len(d.from)
		out = append(out, e)
	}
	return first(out, n, order)
}

func topPeers(m map[peerKey]*api.TopEntry, n int, order func(a, b api.TopEntry) int) []api.TopEntry {
	out := make([]api.TopEntry, 0, len(m))
	for _, p := range m {
		out = append(out, *p)
	}
	return first(out, n, order)
}

func first(es []api.TopEntry, n int, order func(a, b api.TopEntry) int) []api.TopEntry {
	slices.SortFunc(es, order)
	return es[:min(n, len(es))]
}
