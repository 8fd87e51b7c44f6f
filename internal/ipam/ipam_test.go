package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	p, err := NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 24)
	if err != nil {
		t.Fatal(err)
	}
	if p.Gateway().String() != "100.64.0.1/16" {
		t.Errorf("gateway = %s", p.Gateway())
	}
	if p.NumBlocks() != 256 || p.Block(0).String() != "100.64.0.0/24" || p.Block(255).String() != "100.64.255.0/24" {
		t.Errorf("blocks: %d %s %s", p.NumBlocks(), p.Block(0), p.Block(255))
	}
	b, err := p.NextBlock(nil)
	if err != nil || b.String() != "100.64.1.0/24" {
		t.Errorf("first org block = %s, %v; block 0 is the gateway's", b, err)
	}
	b, _ = p.NextBlock([]netip.Prefix{netip.MustParsePrefix("100.64.1.0/24"), netip.MustParsePrefix("100.64.3.0/24")})
	if b.String() != "100.64.2.0/24" {
		t.Errorf("gap not reused: %s", b)
	}
	first, last := Hosts(netip.MustParsePrefix("100.64.1.0/24"))
	if first.String() != "100.64.1.1" || last.String() != "100.64.1.254" {
		t.Errorf("hosts = %s..%s", first, last)
	}
}

func TestExhausted(t *testing.T) {
	p, err := NewPlan(netip.MustParsePrefix("10.0.0.0/28"), 30)
	if err != nil {
		t.Fatal(err)
	}
	var used []netip.Prefix
	for i := 1; i < 4; i++ {
		b, err := p.NextBlock(used)
		if err != nil {
			t.Fatal(err)
		}
		used = append(used, b)
	}
	_, err = p.NextBlock(used)
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "--tunnel-network") {
		t.Errorf("full plan: %v", err)
	}
}

func TestNewPlanRejects(t *testing.T) {
	for _, tc := range []struct {
		net  string
		bits int
	}{{"100.64.0.1/16", 24}, {"100.64.0.0/16", 16}, {"100.64.0.0/16", 31}, {"fd00::/64", 80}} {
		if _, err := NewPlan(netip.MustParsePrefix(tc.net), tc.bits); err == nil {
			t.Errorf("NewPlan(%s, %d) accepted", tc.net, tc.bits)
		}
	}
}

// TestNextBlockNeverOverlaps: blocks cut under another block size (a state
// made before the plan was stored) are never overlapped by a new block.
func TestNextBlockNeverOverlaps(t *testing.T) {
	p, err := NewPlan(netip.MustParsePrefix("100.64.0.0/16"), 23)
	if err != nil {
		t.Fatal(err)
	}
	used := []netip.Prefix{
		netip.MustParsePrefix("100.64.1.0/24"),
		netip.MustParsePrefix("100.64.2.0/24"),
		netip.MustParsePrefix("100.64.3.0/24"),
	}
	b, err := p.NextBlock(used)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range used {
		if b.Overlaps(u) {
			t.Fatalf("new block %s overlaps %s", b, u)
		}
	}
	if b.String() != "100.64.4.0/23" {
		t.Errorf("new block = %s, want the first free /23, 100.64.4.0/23", b)
	}
}
