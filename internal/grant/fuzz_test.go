package grant

import (
	"testing"
)

// FuzzGrantRoundTrip: whatever an admin types, Parse never panics, and
// what it accepts prints back canonically as plain ASCII and parses to the
// same grant.
func FuzzGrantRoundTrip(f *testing.F) {
	for _, s := range []string{"10.20.0.0/24", "10.20.5.10/32:tcp/443", "10.30.0.0/16:udp/5000-5010", "10.9.0.0/16:icmp",
		"10.0.0.1/8", "10.0.0.0/8:tcp/0", "::1/128", "10.0.0.0/8:tcp/65536", "1.2.3.4/32:udp/9-1", "\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := Parse(s)
		if err != nil {
			return
		}
		out := g.String()
		for i := 0; i < len(out); i++ {
			if out[i] < 0x21 || out[i] > 0x7e {
				t.Fatalf("canonical form %q has byte %#x", out, out[i])
			}
		}
		back, err := Parse(out)
		if err != nil || back != g {
			t.Fatalf("%q -> %q -> %v, %v", s, out, back, err)
		}
		if g.Prefix.Masked() != g.Prefix || !g.Prefix.Addr().Is4() {
			t.Fatalf("accepted non-canonical prefix %v", g.Prefix)
		}
		if g.HasPorts() && (g.PortLo > g.PortHi || g.Proto == ICMP || g.Proto == Any) {
			t.Fatalf("accepted bad ports %+v", g)
		}
	})
}
