package grant

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func TestParseCanonical(t *testing.T) {
	for _, s := range []string{"10.20.0.0/24", "10.20.5.10/32:tcp/443", "10.30.0.0/16:udp/5000-5010", "10.9.0.0/16:icmp", "10.9.0.0/16:tcp", "0.0.0.0/1:udp/1-65535"} {
		g, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%q): %v", s, err)
			continue
		}
		if g.String() != s {
			t.Errorf("Parse(%q).String() = %q", s, g.String())
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ in, mention string }{
		{"10.20.0.1/24", "write 10.20.0.0/24"},
		{"10.20.0.1", "10.20.0.1/32"},
		{"10.0.0.0/8:sctp", "unknown protocol"},
		{"10.0.0.0/8:tcp/0", "1 to 65535"},
		{"10.0.0.0/8:tcp/65536", "1 to 65535"},
		{"10.0.0.0/8:tcp/080", "1 to 65535"},
		{"10.0.0.0/8:udp/10-9", "write 9-10"},
		{"10.0.0.0/8:icmp/8", "icmp has no ports"},
		{"::1/128", "not an IPv4 prefix"},
		{"", "empty"},
		{"10.0.0.0/8 ", "space"},
		{"10.0.0.0/8\n", "control"},
		{"10.0.0.0/8:tcp/1\x00", "control"},
		{"10.0.0.0/8:tcp/ä", "non-ASCII"},
		{"10.0.0.0/33", "not an IPv4 prefix"},
	} {
		_, err := Parse(tc.in)
		if err == nil {
			t.Errorf("Parse(%q) accepted", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("Parse(%q) = %v; want it to mention %q", tc.in, err, tc.mention)
		}
	}
}

func TestNormalizeAndMerge(t *testing.T) {
	gs, err := ParseAll([]string{"10.2.0.0/16", "10.1.0.0/16:tcp/22", "10.2.0.0/16", "10.1.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range gs {
		got = append(got, g.String())
	}
	if strings.Join(got, " ") != "10.1.0.0/16 10.1.0.0/16:tcp/22 10.2.0.0/16" {
		t.Errorf("ParseAll = %v", got)
	}
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"10.0.0.0/25", "10.0.0.128/25"}, "[10.0.0.0/24]"},
		{[]string{"10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26", "10.0.0.192/26"}, "[10.0.0.0/24]"},
		{[]string{"10.0.0.0/24", "10.0.0.7/32"}, "[10.0.0.0/24]"},
		{[]string{"10.0.0.128/25", "10.0.1.0/25"}, "[10.0.0.128/25 10.0.1.0/25]"},
		{[]string{"10.0.2.0/24", "10.0.0.0/24"}, "[10.0.0.0/24 10.0.2.0/24]"},
	} {
		var ps []netip.Prefix
		for _, s := range tc.in {
			ps = append(ps, p(s))
		}
		if got := fmtPrefixes(MergePrefixes(ps)); got != tc.want {
			t.Errorf("MergePrefixes(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func fmtPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestAllows(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		grant string
		dst   string
		proto uint8
		port  uint16
		want  bool
	}{
		{"10.0.0.0/24", "10.0.0.9", 17, 53, true},
		{"10.0.0.0/24", "10.0.1.9", 6, 22, false},
		{"10.0.0.5/32:tcp/443", "10.0.0.5", 6, 443, true},
		{"10.0.0.5/32:tcp/443", "10.0.0.5", 6, 444, false},
		{"10.0.0.5/32:tcp/443", "10.0.0.5", 17, 443, false},
		{"10.0.0.0/24:udp/5000-5010", "10.0.0.1", 17, 5010, true},
		{"10.0.0.0/24:udp/5000-5010", "10.0.0.1", 17, 5011, false},
		{"10.0.0.0/24:icmp", "10.0.0.1", 1, 0, true},
		{"10.0.0.0/24:icmp", "10.0.0.1", 6, 80, false},
		{"10.0.0.0/24:tcp", "10.0.0.1", 6, 1, true},
	} {
		g, _ := Parse(tc.grant)
		if got := g.Allows(a(tc.dst), tc.proto, tc.port); got != tc.want {
			t.Errorf("%s allows %s/%d/%d = %v", tc.grant, tc.dst, tc.proto, tc.port, got)
		}
	}
}

func TestJSON(t *testing.T) {
	g, _ := Parse("10.0.0.0/24:udp/1-9")
	raw, err := json.Marshal(g)
	if err != nil || string(raw) != `"10.0.0.0/24:udp/1-9"` {
		t.Fatalf("marshal = %s, %v", raw, err)
	}
	var back Grant
	if err := json.Unmarshal(raw, &back); err != nil || back != g {
		t.Fatalf("unmarshal = %v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`"10.0.0.1/24"`), &back); err == nil {
		t.Error("unmarshal accepted host bits")
	}
}

func TestIntersectAndWithin(t *testing.T) {
	p := func(s string) Grant {
		t.Helper()
		g, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	for _, tc := range []struct {
		a, b   string
		want   string // "" for nothing in common
		within bool   // a within b
	}{
		{"10.0.0.0/24", "10.0.0.0/16", "10.0.0.0/24", true},
		{"10.0.0.0/16", "10.0.0.0/24", "10.0.0.0/24", false},
		{"10.0.0.0/24", "10.0.1.0/24", "", false},
		{"10.0.0.5/32:tcp/22", "10.0.0.0/24", "10.0.0.5/32:tcp/22", true},
		{"10.0.0.0/24", "10.0.0.5/32:tcp/22", "10.0.0.5/32:tcp/22", false},
		{"10.0.0.5/32:tcp", "10.0.0.0/24:tcp/20-30", "10.0.0.5/32:tcp/20-30", false},
		{"10.0.0.5/32:tcp/25-40", "10.0.0.0/24:tcp/20-30", "10.0.0.5/32:tcp/25-30", false},
		{"10.0.0.5/32:tcp/22", "10.0.0.0/24:udp", "", false},
		{"10.0.0.5/32:tcp/31-40", "10.0.0.0/24:tcp/20-30", "", false},
		{"10.0.0.0/24:icmp", "10.0.0.0/16", "10.0.0.0/24:icmp", true},
		{"10.0.0.0/24:icmp", "10.0.0.0/16:tcp", "", false},
		{"10.0.0.0/24:tcp/1-65535", "10.0.0.0/24:tcp", "10.0.0.0/24:tcp/1-65535", true},
		{"10.0.0.0/24:tcp", "10.0.0.0/24:tcp/1-65535", "10.0.0.0/24:tcp/1-65535", true},
	} {
		got, ok := Intersect(p(tc.a), p(tc.b))
		if s := got.String(); !ok && tc.want != "" || ok && s != tc.want {
			t.Errorf("%s ∩ %s = %s (%v), want %q", tc.a, tc.b, s, ok, tc.want)
		}
		if rev, ok2 := Intersect(p(tc.b), p(tc.a)); ok2 != ok || rev != got {
			t.Errorf("%s ∩ %s is not %s ∩ %s", tc.b, tc.a, tc.a, tc.b)
		}
		if w := Within(p(tc.a), p(tc.b)); w != tc.within {
			t.Errorf("Within(%s, %s) = %v, want %v", tc.a, tc.b, w, tc.within)
		}
	}
}

// TestNarrow: what a group keeps when its organisation's grants shrink is
// exactly the part of it that still lies within them, and nothing outside.
func TestNarrow(t *testing.T) {
	gs, err := ParseAll([]string{"10.0.0.0/24", "10.0.5.5/32:tcp/22", "10.9.0.0/16:udp/5000-6000"})
	if err != nil {
		t.Fatal(err)
	}
	ceiling, err := ParseAll([]string{"10.0.0.0/25:tcp", "10.0.0.128/25:icmp", "10.0.5.0/24", "10.9.0.0/16:udp/5500-7000"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range Narrow(gs, ceiling) {
		got = append(got, g.String())
		if !WithinAny(g, ceiling) {
			t.Errorf("%s is outside the ceiling", g)
		}
	}
	want := "10.0.0.0/25:tcp 10.0.0.128/25:icmp 10.0.5.5/32:tcp/22 10.9.0.0/16:udp/5500-6000"
	if strings.Join(got, " ") != want {
		t.Errorf("Narrow = %q, want %q", strings.Join(got, " "), want)
	}
	if n := Narrow(gs, nil); len(n) != 0 {
		t.Errorf("nothing in the ceiling kept %v", n)
	}
}
