// Package grant parses, validates and prints the resources an organisation may
// reach: an IPv4 prefix, optionally narrowed to a protocol and a port range.
//
// The canonical text form is the one admins type and the one we print:
//
//	10.20.0.0/24                 any protocol, any port
//	10.20.5.10/32:tcp/443        one TCP port
//	10.30.0.0/16:udp/5000-5010   a UDP port range
//	10.9.0.0/16:icmp             ICMP only
//	10.9.0.0/16:tcp              every TCP port
package grant

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Proto is the transport protocol a grant is narrowed to; the zero value
// means any protocol.
type Proto string

// The protocols a grant may name.
const (
	Any  Proto = ""
	TCP  Proto = "tcp"
	UDP  Proto = "udp"
	ICMP Proto = "icmp"
)

// Number is the IANA protocol number, 0 for Any.
func (p Proto) Number() uint8 {
	switch p {
	case TCP:
		return 6
	case UDP:
		return 17
	case ICMP:
		return 1
	}
	return 0
}

// Grant is one resource. A zero PortLo means every port of Proto.
type Grant struct {
	Prefix netip.Prefix
	Proto  Proto
	PortLo uint16
	PortHi uint16
}

// HasPorts reports whether the grant is narrowed to a port range.
func (g Grant) HasPorts() bool { return g.PortLo != 0 }

// String returns the canonical form.
func (g Grant) String() string {
	var b strings.Builder
	b.WriteString(g.Prefix.String())
	if g.Proto != Any {
		b.WriteByte(':')
		b.WriteString(string(g.Proto))
	}
	if g.HasPorts() {
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(int(g.PortLo)))
		if g.PortHi != g.PortLo {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(g.PortHi)))
		}
	}
	return b.String()
}

// MarshalText makes grants travel as their canonical string in JSON.
func (g Grant) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

// UnmarshalText parses the canonical form.
func (g *Grant) UnmarshalText(b []byte) error {
	p, err := Parse(string(b))
	if err != nil {
		return err
	}
	*g = p
	return nil
}

// Error explains why a grant was refused and what the admin should type instead.
type Error struct {
	Input string
	Why   string
	Fix   string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("invalid grant %q: %s", e.Input, e.Why)
	if e.Fix != "" {
		msg += "; " + e.Fix
	}
	return msg
}

const formHint = "use PREFIX[:PROTO[/PORT[-PORT]]], e.g. 10.20.0.0/24 or 10.20.5.10/32:tcp/443"

// Parse reads one grant in canonical form. It never accepts a prefix with host
// bits set: the error names the canonical prefix instead, so that what the
// admin granted is exactly what they read back.
func Parse(s string) (Grant, error) {
	bad := func(why, fix string) (Grant, error) {
		return Grant{}, &Error{Input: s, Why: why, Fix: fix}
	}
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return bad("it contains a space, control or non-ASCII character", formHint)
		}
	}
	if s == "" {
		return bad("it is empty", formHint)
	}
	prefixPart, rest, hasProto := strings.Cut(s, ":")
	if !strings.Contains(prefixPart, "/") {
		// A bare address is a common slip; say exactly what to type.
		if a, err := netip.ParseAddr(prefixPart); err == nil && a.Is4() {
			return bad("the address has no prefix length", "for one host write "+a.String()+"/32")
		}
	}
	pfx, err := netip.ParsePrefix(prefixPart)
	if err != nil || !pfx.Addr().Is4() {
		return bad(fmt.Sprintf("%q is not an IPv4 prefix", prefixPart), formHint)
	}
	if pfx.Masked() != pfx {
		return bad("the prefix has host bits set", "write "+pfx.Masked().String()+" (or "+pfx.Addr().String()+"/32 for one host)")
	}
	g := Grant{Prefix: pfx}
	if !hasProto {
		return g, nil
	}
	protoPart, portPart, hasPort := strings.Cut(rest, "/")
	switch Proto(protoPart) {
	case TCP, UDP, ICMP:
		g.Proto = Proto(protoPart)
	default:
		return bad(fmt.Sprintf("unknown protocol %q", protoPart), "use tcp, udp or icmp")
	}
	if !hasPort {
		return g, nil
	}
	if g.Proto == ICMP {
		return bad("icmp has no ports", "write "+pfx.String()+":icmp")
	}
	loS, hiS, isRange := strings.Cut(portPart, "-")
	lo, err := parsePort(loS)
	if err != nil {
		return bad(err.Error(), "ports are 1-65535")
	}
	hi := lo
	if isRange {
		if hi, err = parsePort(hiS); err != nil {
			return bad(err.Error(), "ports are 1-65535")
		}
		if hi < lo {
			return bad(fmt.Sprintf("port range %d-%d is reversed", lo, hi), fmt.Sprintf("write %d-%d", hi, lo))
		}
	}
	g.PortLo, g.PortHi = lo, hi
	return g, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < 1 || n > 65535 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// ParseAll parses a list of grants, sorts them and drops exact duplicates.
func ParseAll(in []string) ([]Grant, error) {
	out := make([]Grant, 0, len(in))
	for _, s := range in {
		g, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return Normalize(out), nil
}

// Normalize sorts grants canonically and removes exact duplicates.
func Normalize(gs []Grant) []Grant {
	out := append([]Grant(nil), gs...)
	sort.Slice(out, func(i, j int) bool { return Less(out[i], out[j]) })
	w := 0
	for i, g := range out {
		if i > 0 && g == out[w-1] {
			continue
		}
		out[w] = g
		w++
	}
	return out[:w]
}

// Less orders grants by address, then prefix length, protocol and ports.
func Less(a, b Grant) bool {
	if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
		return c < 0
	}
	if a.Prefix.Bits() != b.Prefix.Bits() {
		return a.Prefix.Bits() < b.Prefix.Bits()
	}
	if a.Proto != b.Proto {
		return a.Proto < b.Proto
	}
	if a.PortLo != b.PortLo {
		return a.PortLo < b.PortLo
	}
	return a.PortHi < b.PortHi
}

// Allows reports whether a packet to dst with the given IANA protocol number
// and destination port falls under the grant. Port is ignored for protocols
// without ports.
func (g Grant) Allows(dst netip.Addr, proto uint8, port uint16) bool {
	if !g.Prefix.Contains(dst) {
		return false
	}
	if g.Proto == Any {
		return true
	}
	if g.Proto.Number() != proto {
		return false
	}
	if !g.HasPorts() {
		return true
	}
	return port >= g.PortLo && port <= g.PortHi
}

// Prefixes returns the smallest set of prefixes that covers every grant,
// which is what a partner routes into the tunnel (AllowedIPs).
func Prefixes(gs []Grant) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(gs))
	for _, g := range gs {
		ps = append(ps, g.Prefix)
	}
	return MergePrefixes(ps)
}

// MergePrefixes drops prefixes contained in others and joins sibling pairs
// into their parent, repeatedly, so the result is minimal and sorted.
func MergePrefixes(in []netip.Prefix) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		ps = append(ps, p.Masked())
	}
	for {
		sort.Slice(ps, func(i, j int) bool {
			if c := ps[i].Addr().Compare(ps[j].Addr()); c != 0 {
				return c < 0
			}
			return ps[i].Bits() < ps[j].Bits()
		})
		out := ps[:0:0]
		for _, p := range ps {
			if n := len(out); n > 0 && out[n-1].Contains(p.Addr()) && out[n-1].Bits() <= p.Bits() {
				continue
			}
			out = append(out, p)
		}
		merged := false
		for i := 0; i+1 < len(out); i++ {
			a, b := out[i], out[i+1]
			if a.Bits() == b.Bits() && a.Bits() > 0 {
				parent := netip.PrefixFrom(a.Addr(), a.Bits()-1).Masked()
				if parent.Addr() == a.Addr() && parent.Contains(b.Addr()) {
					out[i] = parent
					out = append(out[:i+1], out[i+2:]...)
					merged = true
				}
			}
		}
		ps = out
		if !merged {
			return ps
		}
	}
}

// portRange is the ports a grant covers: every port when it names none.
func (g Grant) portRange() (lo, hi uint16) {
	if g.HasPorts() {
		return g.PortLo, g.PortHi
	}
	return 1, 65535
}

// Intersect returns what both a and b allow, and false when that is
// nothing. Two prefixes either nest or are disjoint, so the result is
// always one grant.
func Intersect(a, b Grant) (Grant, bool) {
	var out Grant
	switch {
	case a.Prefix.Bits() >= b.Prefix.Bits() && b.Prefix.Contains(a.Prefix.Addr()):
		out.Prefix = a.Prefix
	case b.Prefix.Bits() >= a.Prefix.Bits() && a.Prefix.Contains(b.Prefix.Addr()):
		out.Prefix = b.Prefix
	default:
		return Grant{}, false
	}
	switch {
	case a.Proto == Any:
		out.Proto = b.Proto
	case b.Proto == Any || b.Proto == a.Proto:
		out.Proto = a.Proto
	default:
		return Grant{}, false
	}
	if !a.HasPorts() && !b.HasPorts() {
		return out, true
	}
	alo, ahi := a.portRange()
	blo, bhi := b.portRange()
	out.PortLo, out.PortHi = max(alo, blo), min(ahi, bhi)
	if out.PortLo > out.PortHi {
		return Grant{}, false
	}
	return out, true
}

// Within reports whether everything g allows, c allows too.
func Within(g, c Grant) bool {
	in, ok := Intersect(g, c)
	if !ok {
		return false
	}
	// An intersection narrower than g in any way means g reaches past c.
	lo, hi := in.portRange()
	glo, ghi := g.portRange()
	return in.Prefix == g.Prefix && in.Proto == g.Proto && lo == glo && hi == ghi
}

// WithinAny reports whether one grant of ceiling holds all of g.
func WithinAny(g Grant, ceiling []Grant) bool {
	for _, c := range ceiling {
		if Within(g, c) {
			return true
		}
	}
	return false
}

// Narrow returns the part of gs that lies within ceiling: each grant kept
// whole where one grant of ceiling holds it, else cut to its intersections
// with the grants of ceiling.
func Narrow(gs, ceiling []Grant) []Grant {
	var out []Grant
	for _, g := range gs {
		if WithinAny(g, ceiling) {
			out = append(out, g)
			continue
		}
		for _, c := range ceiling {
			if in, ok := Intersect(g, c); ok {
				out = append(out, in)
			}
		}
	}
	return Normalize(out)
}
