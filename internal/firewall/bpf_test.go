package firewall

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
)

// icmpError is an IPv4 ICMP error from src to dst quoting a packet from qsrc
// to qdst (header only, no options, as the kernel quotes it).
func icmpError(src, dst, qsrc, qdst string) []byte {
	ip := func(b []byte, s, d string) {
		b[0] = 0x45
		a, c := netip.MustParseAddr(s).As4(), netip.MustParseAddr(d).As4()
		copy(b[12:16], a[:])
		copy(b[16:20], c[:])
	}
	p := make([]byte, 20+8+20+8)
	ip(p, src, dst)
	p[9] = 1 // ICMP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[20] = 3 // destination unreachable
	p[21] = 3 // port unreachable
	ip(p[28:], qsrc, qdst)
	p[28+9] = 17
	return p
}

// vmOf turns iptables bytecode back into a program that x/net/bpf's VM runs.
func vmOf(t *testing.T, code string) *bpf.VM {
	t.Helper()
	parts := strings.Split(code, ",")
	n, err := strconv.Atoi(parts[0])
	if err != nil || n != len(parts)-1 {
		t.Fatalf("bytecode %q: count %q does not match %d instructions", code, parts[0], len(parts)-1)
	}
	var raw []bpf.RawInstruction
	for _, p := range parts[1:] {
		f := strings.Fields(p)
		if len(f) != 4 {
			t.Fatalf("instruction %q", p)
		}
		v := make([]uint64, 4)
		for i := range f {
			if v[i], err = strconv.ParseUint(f[i], 10, 32); err != nil {
				t.Fatal(err)
			}
		}
		raw = append(raw, bpf.RawInstruction{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])})
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("bytecode %q does not disassemble", code)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// TestICMPQuoteMatches: a partner's error about its own flow matches, one
// about another partner's does not, nor one too short to quote anything.
func TestICMPQuoteMatches(t *testing.T) {
	fromItsFlow, toItsSender, err := icmpMatches()
	if err != nil {
		t.Fatal(err)
	}
	const a, b, host = "100.64.1.2", "100.64.2.3", "10.10.1.2"
	for _, tc := range []struct {
		name  string
		code  string
		pkt   []byte
		match bool
	}{
		// B tells the internal host its reply could not be delivered.
		{"own flow", fromItsFlow, icmpError(b, host, host, b), true},
		// A forges that error about B's flow.
		{"another partner's flow", fromItsFlow, icmpError(a, host, host, b), false},
		// B sends its own flow's error to someone else than the flow's
		// other end (older kernels' conntrack does not check that).
		{"own flow, elsewhere", fromItsFlow, icmpError(b, "10.10.2.2", host, b), false},
		{"truncated", fromItsFlow, icmpError(b, host, host, b)[:40], false},
		// An error toward B about what B sent.
		{"to its sender", toItsSender, icmpError(host, b, b, host), true},
		{"to another partner", toItsSender, icmpError(host, a, b, host), false},
		// What the LAN forged with B's source and made the namespace
		// answer: an error to B about a packet B never sent.
		{"answer to a forged source", toItsSender, icmpError("100.64.0.1", b, "100.64.9.9", a), false},
	} {
		n, err := vmOf(t, tc.code).Run(tc.pkt)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := n > 0; got != tc.match {
			t.Errorf("%s: match %v, want %v", tc.name, got, tc.match)
		}
	}
}
