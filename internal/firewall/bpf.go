package firewall

import (
	"fmt"
	"strings"

	"golang.org/x/net/bpf"
)

// Where an IPv4 header holds its addresses, in the packet and in the copy
// of the offending packet that an ICMP error quotes after its 8 bytes.
const (
	ipSrc = 12
	ipDst = 16
	// icmpHeader is what an ICMP error carries before the quoted header.
	icmpHeader = 8
)

// quoteMatches is the bytecode of an `-m bpf` match for an ICMP error whose
// quoted packet has at quoted the address the error itself has at outer.
// iptables alone compares fields only with constants; conntrack calls an
// error RELATED when its quoted packet names a live flow, whoever sent it.
// With quoteMatches(ipSrc, ipDst) an error from a partner passes only when
// the packet it quotes was sent to that partner: it is about the partner's
// own flow, since the gateway namespace translates no tunnel address. A
// packet too short to hold the quote matches nothing, so a rule that
// accepts on this match fails closed.
func quoteMatches(outer, quoted uint32) (string, error) {
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadMemShift{Off: 0}, // X = the outer header's length
		bpf.LoadIndirect{Off: icmpHeader + quoted, Size: 4},
		bpf.StoreScratch{Src: bpf.RegA, N: 0},
		bpf.LoadAbsolute{Off: outer, Size: 4},
		bpf.LoadScratch{Dst: bpf.RegX, N: 0},
		bpf.JumpIfX{Cond: bpf.JumpEqual, SkipFalse: 1},
		bpf.RetConstant{Val: 1},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return "", fmt.Errorf("assemble the ICMP quote match: %w", err)
	}
	parts := []string{fmt.Sprint(len(prog))}
	for _, ins := range prog {
		parts = append(parts, fmt.Sprintf("%d %d %d %d", ins.Op, ins.Jt, ins.Jf, ins.K))
	}
	return strings.Join(parts, ","), nil
}

// icmpMatches are the two quote matches the rules use: fromItsFlow, an
// error sent by the host its quoted packet was addressed to (a partner's
// error about its own flow), and toItsSender, an error addressed to the
// sender of the packet it quotes (an error sent into the tunnel about what
// that partner sent).
func icmpMatches() (fromItsFlow, toItsSender string, err error) {
	if fromItsFlow, err = quoteMatches(ipSrc, ipDst); err != nil {
		return "", "", err
	}
	toItsSender, err = quoteMatches(ipDst, ipSrc)
	return fromItsFlow, toItsSender, err
}
