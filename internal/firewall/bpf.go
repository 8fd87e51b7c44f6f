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

// quoteMatches is the bytecode of an `-m bpf` match for an ICMP error in
// which, for each pair, the quoted packet has at quoted the address the
// error itself has at outer. iptables alone compares fields only with
// constants; conntrack calls an error RELATED when its quoted packet names
// a live flow, whoever sent it. A packet too short to hold the quote
// matches nothing, so a rule that accepts on this match fails closed.
func quoteMatches(pairs ...[2]uint32) (string, error) {
	var prog []bpf.Instruction
	for i, p := range pairs {
		outer, quoted := p[0], p[1]
		prog = append(prog,
			bpf.LoadMemShift{Off: 0}, // X = the outer header's length
			bpf.LoadIndirect{Off: icmpHeader + quoted, Size: 4},
			bpf.StoreScratch{Src: bpf.RegA, N: 0},
			bpf.LoadAbsolute{Off: outer, Size: 4},
			bpf.LoadScratch{Dst: bpf.RegX, N: 0},
		)
		// Equal: on to the next pair (or the match); else no match, the
		// last instruction. Every skip is counted to it from here.
		prog = append(prog, bpf.JumpIfX{Cond: bpf.JumpEqual, SkipFalse: uint8(6*(len(pairs)-1-i) + 1)})
	}
	prog = append(prog, bpf.RetConstant{Val: 1}, bpf.RetConstant{Val: 0})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return "", fmt.Errorf("assemble the ICMP quote match: %w", err)
	}
	parts := []string{fmt.Sprint(len(raw))}
	for _, ins := range raw {
		parts = append(parts, fmt.Sprintf("%d %d %d %d", ins.Op, ins.Jt, ins.Jf, ins.K))
	}
	return strings.Join(parts, ","), nil
}

// icmpMatches are the two quote matches the rules use. fromItsFlow: an
// error sent by the host its quoted packet was addressed to, to the host
// that sent it: a partner's error about its own flow, to the other end of
// that flow (the second half is conntrack's own check on newer kernels,
// and costs nothing to make here). toItsSender: an error addressed to the
// sender of the packet it quotes (an error sent into the tunnel about what
// that partner sent; routers on the way answer from their own addresses).
// The namespace translates no tunnel address, so the quoted addresses are
// the partners' own.
func icmpMatches() (fromItsFlow, toItsSender string, err error) {
	if fromItsFlow, err = quoteMatches([2]uint32{ipSrc, ipDst}, [2]uint32{ipDst, ipSrc}); err != nil {
		return "", "", err
	}
	toItsSender, err = quoteMatches([2]uint32{ipDst, ipSrc})
	return fromItsFlow, toItsSender, err
}
