package activity

import (
	"slices"
	"testing"

	"github.com/extranetgw/extranet/pkg/api"
)

func TestTally(t *testing.T) {
	ta := NewTally()
	erp := func(peer string, out, in uint64, end string) api.Flow {
		return api.Flow{Peer: peer, Address: "100.64.1.1", Proto: "tcp", Dest: "10.20.0.10", Port: 22, BytesOut: out, BytesIn: in, End: end}
	}
	// One long session: two interim records, then its end; they add up
	// to one flow with all its bytes.
	ta.Add(erp("acme/laptop", 100, 1000, api.FlowOpen))
	ta.Add(erp("acme/laptop", 100, 1000, api.FlowOpen))
	ta.Add(erp("acme/laptop", 100, 1000, api.FlowClosed))
	ta.Add(erp("acme/phone", 50, 50, api.FlowKilled))
	ta.Add(api.Flow{Peer: "acme/phone", Proto: "udp", Dest: "10.20.0.53", Port: 53, BytesOut: 10, BytesIn: 10, Flows: 400, End: api.FlowSummarised})
	ta.Add(api.Flow{Address: "100.64.9.9", Proto: "tcp", Dest: "10.20.0.10", Port: 3389, Flows: 7, End: api.FlowRefused, Reason: api.DenyNotAPeer})
	ta.Add(api.Flow{Peer: "acme/phone", Proto: "tcp", Dest: "10.20.0.10", Port: 3389, Flows: 3, End: api.FlowRefused, Reason: api.DenyNotGranted})
	ta.Add(api.Flow{Peer: "acme/phone", Proto: "tcp", Dest: "10.20.0.11", Port: 445, Flows: 9, End: api.FlowRefused, Reason: api.DenyNotGranted})
	// Past the log's rate: the peer's count, no destination's.
	ta.Add(api.Flow{Peer: "acme/phone", Flows: 1000, End: api.FlowRefused, Reason: api.DenyNotGranted, RateLimited: true})

	top := ta.Top(10)
	if top.Records != 9 {
		t.Errorf("records %d, want 9", top.Records)
	}
	want := []api.TopEntry{
		{Proto: "tcp", Dest: "10.20.0.10", Port: 22, BytesOut: 350, BytesIn: 3050, Flows: 2, Peers: 2},
		{Proto: "udp", Dest: "10.20.0.53", Port: 53, BytesOut: 10, BytesIn: 10, Flows: 400, Peers: 1},
	}
	if !slices.Equal(top.Destinations, want) {
		t.Errorf("destinations by bytes:\n%+v\nwant\n%+v", top.Destinations, want)
	}
	wantPeers := []api.TopEntry{{Peer: "acme/laptop", BytesOut: 300, BytesIn: 3000, Flows: 1}, {Peer: "acme/phone", BytesOut: 60, BytesIn: 60, Flows: 401}}
	if !slices.Equal(top.Peers, wantPeers) {
		t.Errorf("peers by bytes:\n%+v\nwant\n%+v", top.Peers, wantPeers)
	}
	wantRef := []api.TopEntry{{Proto: "tcp", Dest: "10.20.0.10", Port: 3389, Flows: 10, Peers: 2}, {Proto: "tcp", Dest: "10.20.0.11", Port: 445, Flows: 9, Peers: 1}}
	if !slices.Equal(top.RefusedDestinations, wantRef) {
		t.Errorf("refused destinations:\n%+v\nwant\n%+v", top.RefusedDestinations, wantRef)
	}
	wantRefPeers := []api.TopEntry{{Peer: "acme/phone", Flows: 1012}, {Address: "100.64.9.9", Flows: 7}}
	if !slices.Equal(top.RefusedPeers, wantRefPeers) {
		t.Errorf("refused peers:\n%+v\nwant\n%+v", top.RefusedPeers, wantRefPeers)
	}
	if one := ta.Top(1); len(one.Destinations) != 1 || len(one.RefusedPeers) != 1 || one.Destinations[0].Port != 22 {
		t.Errorf("top 1: %+v", one)
	}
	if empty := NewTally().Top(10); empty.Destinations == nil || len(empty.Peers) != 0 {
		t.Errorf("an empty tally: %+v; want empty lists, not null", empty)
	}
}

// TestTallyIsBounded: past maxKeys destinations the rest are added up in
// one entry, and the answer says so.
func TestTallyIsBounded(t *testing.T) {
	ta := NewTally()
	for i := 0; i < maxKeys+5; i++ {
		ta.Add(api.Flow{Peer: "acme/laptop", Proto: "udp", Dest: "10.20.0.10", Port: uint16(i + 1), BytesOut: 1, End: api.FlowTimedOut})
	}
	top := ta.Top(maxKeys + 10)
	if !top.Truncated || len(top.Destinations) != maxKeys+1 {
		t.Fatalf("%d destinations, truncated %v; want %d and the rest in one", len(top.Destinations), top.Truncated, maxKeys+1)
	}
	if rest := top.Destinations[0]; rest.Dest != "" || rest.Flows != 5 || rest.BytesOut != 5 {
		t.Errorf("the rest of the destinations: %+v", rest)
	}
}
