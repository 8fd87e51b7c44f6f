// Package firewall enforces the access policy with iptables and ipsets in
// the gateway's own network namespace (see gwns), which it owns whole: the
// default policy of every chain there is DROP, for IPv4 and IPv6, so rules
// flushed by hand close every door until the next reconcile restores them.
// In the host namespace it adds only what routing needs: an accept for the
// traffic of its veth, where the host's FORWARD policy would drop it, and
// the masquerade. Neither can widen what a partner reaches.
//
// Rule count grows with organisations and grants, never with peers:
// WireGuard guarantees a packet's source is its peer's own address, and each
// organisation's peers share its address blocks, so a tree of source-prefix
// jumps (see jumpTree) selects the organisation's chain, where its grants
// are ipset lookups.
//
// The one per-peer thing is a set, PeerSet, of the addresses of the peers in
// force, each with its access group's ID as a mark (ipset skbinfo). A new
// flow from any other address is refused before the tree: the second line
// behind WireGuard's own check, so a peer that WireGuard still holds
// against the store (added by hand, or one whose removal failed) gets no
// new flow. In the mangle table a new flow's packet takes the mark of its
// source (and any other mark is cleared first), by which an organisation's
// chain hands it to its group's chain. The set changes by single entries as
// peers come, go and move (UpdatePeerSet), without touching a rule. Another set,
// LocalSet, holds everything the host receives itself (its addresses, local
// routes, broadcasts), which no partner reaches whatever its grants cover.
//
// In the gateway namespace:
//
//	mangle PREROUTING -i <wg> -j EXTRANET-MARK      a new flow's packet: mark = its peer's group
//	FORWARD -i <wg> -j EXTRANET-FWD                 partners' packets
//	FORWARD -s <tunnel> ! -i <wg> -j EXTRANET-SPOOF  forged tunnel sources
//	FORWARD -o <wg> -j EXTRANET-TOPEER              packets toward partners
//	INPUT   -i <wg> -j EXTRANET-IN                  partners to the namespace itself
//	OUTPUT  only ICMP (the rejects) and loopback
//
// In the host namespace:
//
//	filter FORWARD  -j EXTRANET-ACCEPT     -i/-o <host veth> -j ACCEPT
//	nat POSTROUTING -j EXTRANET-POST       masquerade of the tunnel network
//	raw PREROUTING  -j EXTRANET-GUARD-RAW  (first) from the veth to the host itself: DROP
//	mangle INPUT    -j EXTRANET-GUARD-IN   new connections from the veth to the host: DROP
//	mangle FORWARD  -j EXTRANET-GUARD-FWD  (first) partner packets a host DNAT redirected,
//	                                       or leaving by no egress interface: DROP
//
// The namespace's filter table is replaced whole with one iptables-restore
// (atomic), and a set whose members change is refilled by swapping in a
// freshly filled copy (see setScript), so a policy change is never half
// applied.
package firewall

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/policy"
	"github.com/extranetgw/extranet/pkg/api"
)

// Names of our chains and sets. Everything we own starts with these, which
// is how cleanup finds it without any state.
const (
	ChainPrefix = "EXTRANET-"
	SetPrefix   = "extranet-"

	// PeerSet holds the tunnel address of every peer in force.
	PeerSet = "extranet-peers"
	// LocalSet holds what the gateway host receives itself. (Until
	// 2026-12 a hash:ip of its addresses alone, named extranet-host.)
	LocalSet = "extranet-local"

	chainFwd      = "EXTRANET-FWD"
	chainIn       = "EXTRANET-IN"
	chainToPeer   = "EXTRANET-TOPEER"
	chainPost     = "EXTRANET-POST"
	chainSpoof    = "EXTRANET-SPOOF"
	chainOut      = "EXTRANET-OUT"
	chainMark     = "EXTRANET-MARK"
	chainAccept   = "EXTRANET-ACCEPT"
	chainGuardIn  = "EXTRANET-GUARD-IN"
	chainGuardFwd = "EXTRANET-GUARD-FWD"
	chainGuardRaw = "EXTRANET-GUARD-RAW"

	reject = "REJECT --reject-with icmp-admin-prohibited"

	// DenyPrefix starts the chains that log a partner's refused packet and
	// refuse it, one per reason (DenyChain); logPrefix the chains they hand
	// the packets to log to.
	DenyPrefix = "EXTRANET-DENY-"
	logPrefix  = "EXTRANET-LOG-"
	// AttemptsPrefix starts the sets that count, per partner address and
	// reason (AttemptsSet), every refused packet, logged or not: the log's
	// reader learns those past its rate as the difference.
	AttemptsPrefix = SetPrefix + "refused-"
	// NFLOGGroup is the netlink log group the refusals are sent to; the
	// namespace is the gateway's own, so no other listener shares it.
	NFLOGGroup = 1
	// NFLOGSize is how much of a refused packet reaches the log's reader:
	// the IPv4 header (60 bytes at most) and the TCP header's first 20
	// bytes (ports and flags), no payload to speak of. The reader keeps
	// only addresses, protocol, port and whether it opens a connection.
	NFLOGSize = 80
	// Refusals are logged at most denyRate a second per partner address
	// (bursts of denyBurst), so that a flood costs the disk and the reader
	// little; the rules' counters still count every refused packet. Before
	// that, each destination (address and port) of a partner has a budget
	// of its own, targetRate a second (bursts of targetBurst), which a
	// flood toward one destination exhausts without touching the others':
	// a partner cannot hide a sweep behind junk to one place, as it could
	// behind one budget per address.
	denyRate    = 100
	denyBurst   = 200
	targetRate  = 2
	targetBurst = 5
	// The per-destination limit's table is shared by every partner, and
	// a packet that finds it full is dropped before it can be logged: a
	// partner that filled it would hide every partner's new destinations
	// from the log and the scan watch. It holds 262,144 (about 30 MB at
	// most) where the kernel's default is 65,536, each forgotten 1 s
	// after its last packet (iptables' default for a rate a second, said
	// here so that it stays so) and swept every second: filling it takes
	// 131,000 to 262,000 new destinations a second, kept up, where it took
	// 33,000 to 65,000. The name is new with this size: the kernel keeps
	// a table's sizes for as long as a rule of that name exists.
	targetTable   = "extranet-dest"
	targetBuckets = 32768
	targetEntries = 262144
	targetExpire  = time.Second

	// maxSetRange is the widest port range stored as set entries; ipset
	// stores one entry per port, so wider ranges become a rule instead.
	maxSetRange = 64
)

// groupFanoutBits sets the jump tree's fan-out: each level splits its
// prefix 2^4 = 16 ways.
const groupFanoutBits = 4

// jump leads from a source block to its organisation's chain.
type jump struct {
	block netip.Prefix
	chain string
}

// jumpTree writes into w the rules that lead a new flow from chain, which
// sees the sources within parent, toward the chain of its organisation's
// block, and into deeper the group chains below, whose names it appends to
// groups. Each level splits its prefix 16 ways, so a chain holds at most 16
// jumps and a flow from any of the 4,096 blocks of a /12 walks at most 48,
// where one chain of jumps would make the last organisation's flows walk
// them all. A group that would hold a single block is skipped: its block is
// jumped to directly. Blocks never overlap (the address plan sees to it),
// so the order of jumps in a chain does not decide anything; they are
// written in address order.
func jumpTree(w, deeper *strings.Builder, chain string, parent netip.Prefix, blocks []jump, groups *[]string) {
	bits := parent.Bits() + groupFanoutBits
	var order []netip.Prefix
	members := map[netip.Prefix][]jump{}
	for _, j := range blocks {
		key := j.block
		if j.block.Bits() > bits {
			key = netip.PrefixFrom(j.block.Addr(), bits).Masked()
		}
		if _, ok := members[key]; !ok {
			order = append(order, key)
		}
		members[key] = append(members[key], j)
	}
	sort.Slice(order, func(i, j int) bool { return order[i].Addr().Less(order[j].Addr()) })
	for _, key := range order {
		m := members[key]
		if len(m) == 1 {
			fmt.Fprintf(w, "-A %s -s %s -j %s\n", chain, m[0].block, m[0].chain)
			continue
		}
		g := GroupChain(key)
		*groups = append(*groups, g)
		fmt.Fprintf(w, "-A %s -s %s -j %s\n", chain, key, g)
		jumpTree(deeper, deeper, g, key, m, groups)
	}
}

// noOverlap refuses blocks that overlap: a peer would match two orgs'
// chains, and the first jump taken would decide its access. The address
// plan never cuts such blocks; this is the last line behind it.
func noOverlap(blocks []jump) error {
	sorted := append([]jump(nil), blocks...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].block.Addr().Less(sorted[j].block.Addr()) })
	for i := 1; i < len(sorted); i++ {
		if a, b := sorted[i-1], sorted[i]; a.block.Overlaps(b.block) {
			return fmt.Errorf("address blocks %s (%s) and %s (%s) overlap; refusing rules that would give one org's peers another's access", a.block, a.chain, b.block, b.chain)
		}
	}
	return nil
}

// GroupChain is the chain of the organisation blocks inside group g.
func GroupChain(g netip.Prefix) string {
	a := g.Addr().As4()
	return fmt.Sprintf("EXTRANET-G-%02x%02x%02x%02x-%d", a[0], a[1], a[2], a[3], g.Bits())
}

// OrgChain is the chain of an organisation: it sends each of its peers to
// its group's chain.
func OrgChain(id uint32) string { return fmt.Sprintf("EXTRANET-O-%d", id) }

// GroupChainOf is the chain of an access group, which holds its grants.
func GroupChainOf(id uint32) string { return fmt.Sprintf("EXTRANET-GRP-%d", id) }

// NetSet holds an access group's grants of whole prefixes.
func NetSet(group uint32) string { return fmt.Sprintf("extranet-g%d-net", group) }

// PortSet holds an access group's grants of prefix, protocol and port.
func PortSet(group uint32) string { return fmt.Sprintf("extranet-g%d-port", group) }

var ifaceRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)

// Rendered is the text the kernel tools read.
type Rendered struct {
	// Filter is the gateway namespace's whole filter table, input for
	// iptables-restore, Mangle its whole mangle table, which marks a new
	// flow's packets with their peer's group, and Raw its raw table, which
	// drops forged tunnel sources before routing.
	Filter, Mangle, Raw string
	// Sets are every set the rules use, with their members.
	Sets []Set
}

// Filter6 is the gateway namespace's IPv6 filter table: nothing passes.
// Partners are given IPv4 only, and IPv6 is off in the namespace too.
const Filter6 = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\nCOMMIT\n"

// Jump is a rule in a built-in chain.
type Jump struct {
	Table, Chain string
	Rule         []string
	// First puts the jump at the head of the chain, where nothing of the
	// host's can accept a packet before it; otherwise it is appended.
	First bool
}

// Render turns a policy into the gateway namespace's filter table, whose
// uplink (to the host) is the interface named.
func Render(p *policy.Policy, uplink string) (*Rendered, error) {
	if !ifaceRE.MatchString(p.Interface) {
		return nil, fmt.Errorf("interface name %q is not a valid Linux interface name", p.Interface)
	}
	if !ifaceRE.MatchString(uplink) {
		return nil, fmt.Errorf("interface name %q is not a valid Linux interface name", uplink)
	}
	if !p.TunnelNet.IsValid() || !p.TunnelNet.Addr().Is4() {
		return nil, fmt.Errorf("tunnel network %v is not an IPv4 prefix", p.TunnelNet)
	}
	orgs := append([]policy.Org(nil), p.Orgs...)
	sort.Slice(orgs, func(i, j int) bool { return orgs[i].ID < orgs[j].ID })

	var blocks []jump
	for _, o := range orgs {
		for _, b := range o.Blocks {
			if !b.Addr().Is4() || !p.TunnelNet.Contains(b.Addr()) || b.Bits() < p.TunnelNet.Bits() {
				return nil, fmt.Errorf("org %d block %s is outside the tunnel network %s", o.ID, b, p.TunnelNet)
			}
			blocks = append(blocks, jump{b.Masked(), OrgChain(o.ID)})
		}
	}
	if err := noOverlap(blocks); err != nil {
		return nil, err
	}
	var fwdJumps, groupJumps strings.Builder
	var groups []string
	jumpTree(&fwdJumps, &groupJumps, chainFwd, p.TunnelNet.Masked(), blocks, &groups)

	iface, tunnel := p.Interface, p.TunnelNet.Masked()
	fromItsFlow, toItsSender, err := icmpMatches()
	if err != nil {
		return nil, err
	}
	var f strings.Builder
	r := &Rendered{}
	f.WriteString("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n")
	for _, c := range []string{chainFwd, chainIn, chainToPeer, chainSpoof, chainOut} {
		fmt.Fprintf(&f, ":%s - [0:0]\n", c)
	}
	for _, reason := range api.DenyReasons {
		fmt.Fprintf(&f, ":%s - [0:0]\n:%s - [0:0]\n", DenyChain(reason), logChain(reason))
	}
	for _, g := range groups {
		fmt.Fprintf(&f, ":%s - [0:0]\n", g)
	}
	for _, o := range orgs {
		fmt.Fprintf(&f, ":%s - [0:0]\n", OrgChain(o.ID))
		for _, g := range o.Groups {
			fmt.Fprintf(&f, ":%s - [0:0]\n", GroupChainOf(g.ID))
		}
	}
	fmt.Fprintf(&f, "-A INPUT -i lo -j ACCEPT\n")
	fmt.Fprintf(&f, "-A INPUT -i %s -j %s\n", iface, chainIn)
	// Nothing that came out of the tunnel goes back into it, whatever
	// conntrack makes of it: partners never reach each other, not by an
	// ICMP error about another partner's flow either.
	fmt.Fprintf(&f, "-A FORWARD -i %s -o %s -j %s\n", iface, iface, DenyChain(api.DenyTunnel))
	fmt.Fprintf(&f, "-A FORWARD -i %s -j %s\n", iface, chainFwd)
	fmt.Fprintf(&f, "-A FORWARD -s %s ! -i %s -j %s\n", tunnel, iface, chainSpoof)
	fmt.Fprintf(&f, "-A FORWARD -o %s -j %s\n", iface, chainToPeer)
	fmt.Fprintf(&f, "-A OUTPUT -j %s\n", chainOut)
	fmt.Fprintf(&f, "-A %s -m conntrack --ctstate ESTABLISHED -j ACCEPT\n", chainFwd)
	// RELATED is all that conntrack says of an ICMP error that quotes a
	// live flow, whoever sent it: a partner's error passes only when it is
	// about that partner's own flow, and nothing else is related to a
	// partner's flow (no conntrack helper runs here).
	fmt.Fprintf(&f, "-A %s -p icmp -m conntrack --ctstate RELATED -m bpf --bytecode \"%s\" -j ACCEPT\n", chainFwd, fromItsFlow)
	fmt.Fprintf(&f, "-A %s -m conntrack --ctstate RELATED,INVALID -j DROP\n", chainFwd)
	fmt.Fprintf(&f, "-A %s -m set ! --match-set %s src -j %s\n", chainFwd, PeerSet, DenyChain(api.DenyNotAPeer))
	// What the host receives itself is not an internal subnet, whatever a
	// grant covers; and a partner's packet leaves only toward the host,
	// never back into the tunnel.
	fmt.Fprintf(&f, "-A %s -m set --match-set %s dst -j %s\n", chainFwd, LocalSet, DenyChain(api.DenyHost))
	fmt.Fprintf(&f, "-A %s ! -o %s -j %s\n", chainFwd, uplink, DenyChain(api.DenyHost))
	f.WriteString(fwdJumps.String())
	fmt.Fprintf(&f, "-A %s -j %s\n", chainFwd, DenyChain(api.DenyNoOrg))
	f.WriteString(groupJumps.String())
	r.Sets = append(r.Sets, peerSet(p.TunnelNet, p.Peers, p.At), localSet(p.Host.Local))
	seen := map[uint32]bool{}
	for _, o := range orgs {
		sets, err := renderOrg(&f, o, seen)
		if err != nil {
			return nil, err
		}
		r.Sets = append(r.Sets, sets...)
	}
	// Partners never reach the gateway's own services, not even replies to
	// flows they could not have opened.
	fmt.Fprintf(&f, "-A %s -j %s\n", chainIn, DenyChain(api.DenyGateway))
	fmt.Fprintf(&f, "-A %s -m conntrack --ctstate ESTABLISHED -j ACCEPT\n", chainToPeer)
	// An error reaches a partner only about a packet that partner sent.
	fmt.Fprintf(&f, "-A %s -p icmp -m conntrack --ctstate RELATED -m bpf --bytecode \"%s\" -j ACCEPT\n", chainToPeer, toItsSender)
	fmt.Fprintf(&f, "-A %s -j %s\n", chainToPeer, reject)
	// A tunnel address as the source of a packet that did not come out of
	// the tunnel is forged, by a host on the internal network, say. Were it
	// forwarded, the answer would come back as part of a flow the gateway
	// knows and be carried to the partner that owns the address.
	fmt.Fprintf(&f, "-A %s -j DROP\n", chainSpoof)
	// The namespace itself sends only ICMP errors (its rejects, expired
	// TTLs, too big) and talks to itself; it serves nothing. Into the
	// tunnel it sends only errors about what that partner sent, so that no
	// packet from the internal side makes it carry data to a partner.
	fmt.Fprintf(&f, "-A %s -o lo -j ACCEPT\n", chainOut)
	fmt.Fprintf(&f, "-A %s -o %s -p icmp -m bpf --bytecode \"%s\" -j ACCEPT\n", chainOut, iface, toItsSender)
	fmt.Fprintf(&f, "-A %s ! -o %s -p icmp -j ACCEPT\n", chainOut, iface)
	for _, reason := range api.DenyReasons {
		denyChain(&f, reason)
		r.Sets = append(r.Sets, attemptsSet(reason, p.TunnelNet))
	}
	f.WriteString("COMMIT\n")
	r.Filter = f.String()
	// A tunnel address as the source of a packet from the uplink is forged
	// (by a host on the internal network, say): dropped before routing, it
	// can neither be forwarded nor make the namespace answer it with an
	// error, which would go into the tunnel to the address's partner.
	r.Raw = fmt.Sprintf("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -i %s -s %s -j DROP\nCOMMIT\n", uplink, tunnel)
	// A mark that came with the packet (from the host, through kernel
	// WireGuard) must not choose a group: it is cleared, then set from the
	// peer set. A source not in it keeps no mark and meets no group.
	r.Mangle = fmt.Sprintf("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:%s - [0:0]\n"+
		"-A PREROUTING -i %s -j %s\n-A %s -j MARK --set-xmark 0x0/0xffffffff\n-A %s -m conntrack --ctstate NEW -j SET --map-set %s src --map-mark\nCOMMIT\n",
		chainMark, iface, chainMark, chainMark, chainMark, PeerSet)
	return r, nil
}

// Host is the host namespace's part: input for `iptables-restore
// --noflush`, one table each, and the jumps into it.
type Host struct {
	Filter, NAT, Mangle, Raw string
	Jumps                    []Jump
}

// DenyChain is the chain that logs and refuses a partner's packet for
// reason (one of api.DenyReasons).
func DenyChain(reason string) string { return DenyPrefix + strings.ToUpper(reason) }

func logChain(reason string) string { return logPrefix + strings.ToUpper(reason) }

// AttemptsSet is the set that counts a reason's refused packets per
// source address.
func AttemptsSet(reason string) string { return AttemptsPrefix + reason }

// attemptsSet is AttemptsSet(reason) as the rules fill it: its members
// are the kernel's to add, each with its counters. Its sources are
// partner addresses, all in tunnel, so its buckets are sized for half of
// those: with ipset's 1,024 a set the kernel fills held 5,994 of 6,000
// sources and 12,241 of 20,000, the rest counted nowhere.
func attemptsSet(reason string, tunnel netip.Prefix) Set {
	return Set{Name: AttemptsSet(reason), Type: "hash:ip", Counters: true, Dynamic: true, HashSize: attemptsBuckets(tunnel)}
}

// attemptsBuckets is the buckets of an attempts set for tunnel: half its
// addresses, rounded up to a power of two, from 1,024 (ipset's default) to
// 262,144 (2 MiB of the kernel's memory a set, for a /13 and wider).
func attemptsBuckets(tunnel netip.Prefix) int {
	bits := 32 - tunnel.Bits() - 1
	return 1 << min(max(bits, 10), 18)
}

// denyChain writes the chains of a reason. Every packet is counted
// first, in its source's entry in the reason's attempts set; then, within
// the per-source rate, it goes to the log chain, which hands it to the
// log's reader (NFLOG, with the reason as prefix) and refuses it, and past
// the rate it is refused. Counting before the rate limits, not after, is
// what keeps the count whole: the kernel drops a packet outright when a
// limit's table of destinations is full (a sweep of more than 65,536 in
// a few seconds), and no rule after the limit sees it. Only what a partner
// sent ends here, and only what is refused, so the accepted path meets
// none of it.
func denyChain(f *strings.Builder, reason string) {
	chain, logged, attempts := DenyChain(reason), logChain(reason), AttemptsSet(reason)
	// A packet from one partner toward another is dropped, not answered:
	// no error about one partner goes into the tunnel to another.
	verdict := reject
	if reason == api.DenyTunnel {
		verdict = "DROP"
	}
	// A source's first packet makes its member, which the adding counts
	// 1; the test that finds no member counts nothing. Members stay
	// (--exist would set their counts back to 0): sources are partner
	// addresses, a few bytes each, and counts only grow.
	fmt.Fprintf(f, "-A %s -m set --match-set %s src\n", chain, attempts)
	fmt.Fprintf(f, "-A %s -m set ! --match-set %s src ! --update-counters -j SET --add-set %s src\n", chain, attempts, attempts)
	fmt.Fprintf(f, "-A %s -m hashlimit --hashlimit-upto %d/sec --hashlimit-burst %d --hashlimit-mode srcip,dstip,dstport --hashlimit-name %s "+
		"--hashlimit-htable-size %d --hashlimit-htable-max %d --hashlimit-htable-expire %d "+
		"-m hashlimit --hashlimit-upto %d/sec --hashlimit-burst %d --hashlimit-mode srcip --hashlimit-name extranet-deny -j %s\n",
		chain, targetRate, targetBurst, targetTable, targetBuckets, targetEntries, targetExpire.Milliseconds(), denyRate, denyBurst, logged)
	fmt.Fprintf(f, "-A %s -j %s\n", chain, verdict)
	fmt.Fprintf(f, "-A %s -j NFLOG --nflog-group %d --nflog-prefix %s --nflog-size %d\n", logged, NFLOGGroup, reason, NFLOGSize)
	fmt.Fprintf(f, "-A %s -j %s\n", logged, verdict)
}

// RenderHost returns the host rules for a gateway namespace joined to the
// host by veth. They decide nothing: forwarding to and from the veth is
// accepted because the namespace behind it has decided already, and where
// the host's own FORWARD policy is ACCEPT they change nothing at all.
func RenderHost(p *policy.Policy, veth string) Host {
	var h Host
	h.Filter = fmt.Sprintf("*filter\n:%s - [0:0]\n-A %s -i %s -j ACCEPT\n-A %s -o %s -j ACCEPT\nCOMMIT\n",
		chainAccept, chainAccept, veth, chainAccept, veth)
	var n strings.Builder
	fmt.Fprintf(&n, "*nat\n:%s - [0:0]\n", chainPost)
	if sh := p.Host.Shared; sh != nil && p.Masquerade && ifaceRE.MatchString(sh.Interface) {
		// The active's own address would change with every failover:
		// internal hosts would see the other end of an open connection
		// move.
		fmt.Fprintf(&n, "-A %s -s %s -o %s -j SNAT --to-source %s\n", chainPost, p.TunnelNet.Masked(), sh.Interface, sh.Addr)
	}
	if p.Masquerade {
		fmt.Fprintf(&n, "-A %s -s %s ! -o %s -j MASQUERADE\n", chainPost, p.TunnelNet.Masked(), veth)
	}
	n.WriteString("COMMIT\n")
	h.NAT = n.String()
	// A second line behind the namespace, which decides alone: nothing
	// from the namespace opens a connection to the host itself (the host
	// set keeps partners from its addresses, but is only as current as the
	// last reconcile), and a partner's packet is never sent elsewhere by a
	// DNAT of the host's, after the namespace checked where it was going.
	var m strings.Builder
	fmt.Fprintf(&m, "*mangle\n:%s - [0:0]\n:%s - [0:0]\n-A %s -i %s -m conntrack --ctstate NEW -j DROP\n-A %s -i %s -m conntrack --ctstate DNAT -j DROP\n",
		chainGuardIn, chainGuardFwd, chainGuardIn, veth, chainGuardFwd, veth)
	if sh := p.Host.Shared; sh != nil && p.Masquerade {
		// An internal host's packet of a partner connection that another
		// gateway carried (a keepalive, a retransmission) can reach a new
		// active before the partner's next packet gave it the
		// translation: dropped, not answered with a reset that would end
		// the connection, and not tracked, so that the partner's packet
		// translates as before.
		fmt.Fprintf(&m, "-A %s -d %s -p tcp ! --syn -m conntrack --ctstate NEW -j DROP\n", chainGuardIn, sh.Addr)
	}
	// Partner traffic leaves the host only by its egress interfaces: a
	// grant that covers a container or VM bridge's range reaches nothing
	// behind the bridge unless the bridge is named.
	for _, e := range p.Host.Egress {
		if ifaceRE.MatchString(e) {
			fmt.Fprintf(&m, "-A %s -i %s -o %s -j RETURN\n", chainGuardFwd, veth, e)
		}
	}
	fmt.Fprintf(&m, "-A %s -i %s -j DROP\n", chainGuardFwd, veth)
	// A host that did not forward before the gateway switched forwarding
	// on forwards nothing else now.
	if !p.Host.Forwarded {
		fmt.Fprintf(&m, "-A %s ! -o %s -j DROP\n", chainGuardFwd, veth)
	}
	m.WriteString("COMMIT\n")
	h.Mangle = m.String()
	// Whatever the namespace's sets hold and whatever the host's own rules
	// are, nothing from the veth is for the host itself: anything it would
	// receive (its addresses, ranges routed to it as local, broadcasts,
	// multicast) is dropped before the host's own tables see it, and
	// first in raw, where no earlier rule of the host's can accept it.
	var raw strings.Builder
	fmt.Fprintf(&raw, "*raw\n:%s - [0:0]\n", chainGuardRaw)
	for _, t := range []string{"LOCAL", "BROADCAST", "MULTICAST"} {
		fmt.Fprintf(&raw, "-A %s -i %s -m addrtype --dst-type %s -j DROP\n", chainGuardRaw, veth, t)
	}
	raw.WriteString("COMMIT\n")
	h.Raw = raw.String()
	h.Jumps = []Jump{
		{Table: "filter", Chain: "FORWARD", Rule: []string{"-j", chainAccept}},
		{Table: "nat", Chain: "POSTROUTING", Rule: []string{"-j", chainPost}},
		{Table: "mangle", Chain: "INPUT", Rule: []string{"-j", chainGuardIn}},
		{Table: "mangle", Chain: "FORWARD", Rule: []string{"-j", chainGuardFwd}, First: true},
		{Table: "raw", Chain: "PREROUTING", Rule: []string{"-j", chainGuardRaw}, First: true},
	}
	return h
}

// localSet is the set of what the host receives itself.
func localSet(local []netip.Prefix) Set {
	var members []string
	seen := map[netip.Prefix]bool{}
	sorted := append([]netip.Prefix(nil), local...)
	sort.Slice(sorted, func(i, j int) bool {
		if a, b := sorted[i].Addr(), sorted[j].Addr(); a != b {
			return a.Less(b)
		}
		return sorted[i].Bits() < sorted[j].Bits()
	})
	for _, p := range sorted {
		// hash:net holds no /0: a host that receives everything is
		// refused to partners by the rules' ! -o uplink and the host's
		// guards, not by this set.
		if p = p.Masked(); p.Addr().Is4() && p.Bits() > 0 && !seen[p] {
			seen[p] = true
			members = append(members, p.String())
		}
	}
	return Set{Name: LocalSet, Type: "hash:net", Members: members}
}

// peerSet is the set of the addresses of the peers in force, in address
// order, each with its entry as of now. An address outside the tunnel
// network can never be a source on the interface, so it is left out
// rather than trusted.
func peerSet(tunnel netip.Prefix, peers map[netip.Addr]policy.Peer, now time.Time) Set {
	in := inTunnel(tunnel, peers)
	addrs := make([]netip.Addr, 0, len(in))
	for a := range in {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	members := make([]string, len(addrs))
	for i, a := range addrs {
		members[i] = peerMember(a, entryAt(in[a], now), now)
	}
	return Set{Name: PeerSet, Type: "hash:ip", Timeout: true, Comment: true, SkbInfo: true, Members: members}
}

// renderOrg writes an organisation's chain, which hands each new flow to
// its group's chain by the mark of its source's group, and the group
// chains, which hold the grants. Both end in a reject: a flow that reached
// its organisation's chain is decided there. It returns the sets the
// groups' grants use.
func renderOrg(f *strings.Builder, o policy.Org, seen map[uint32]bool) ([]Set, error) {
	chain := OrgChain(o.ID)
	groups := append([]policy.Group(nil), o.Groups...)
	sort.Slice(groups, func(i, j int) bool { return groups[i].ID < groups[j].ID })
	for _, g := range groups {
		// A group in two organisations would give one org's peers, by
		// their mark, the other's access.
		if g.ID == 0 || seen[g.ID] {
			return nil, fmt.Errorf("org %d: group id %d is zero or not unique; refusing rules that could mix groups", o.ID, g.ID)
		}
		seen[g.ID] = true
		fmt.Fprintf(f, "-A %s -m mark --mark 0x%x -j %s\n", chain, g.ID, GroupChainOf(g.ID))
	}
	fmt.Fprintf(f, "-A %s -j %s\n", chain, DenyChain(api.DenyNoGroup))
	var sets []Set
	for _, g := range groups {
		gs, err := renderGroup(f, o.ID, g)
		if err != nil {
			return nil, err
		}
		sets = append(sets, gs...)
	}
	return sets, nil
}

// renderGroup writes a group's chain and returns the sets its grants use.
func renderGroup(f *strings.Builder, org uint32, grp policy.Group) ([]Set, error) {
	chain := GroupChainOf(grp.ID)
	var nets, ports, rules []string
	for _, g := range grant.Normalize(grp.Grants) {
		if !g.Prefix.Addr().Is4() || g.Prefix.Bits() == 0 {
			return nil, fmt.Errorf("org %d group %d: grant %s cannot be enforced", org, grp.ID, g)
		}
		pfx := g.Prefix.Masked().String()
		switch {
		case g.Proto == grant.Any:
			nets = append(nets, pfx)
		case g.HasPorts() && int(g.PortHi-g.PortLo) < maxSetRange:
			ports = append(ports, fmt.Sprintf("%s,%s:%s", pfx, g.Proto, portSpec(g, "-")))
		case g.HasPorts():
			rules = append(rules, fmt.Sprintf("-A %s -d %s -p %s -m %s --dport %s -j ACCEPT", chain, pfx, g.Proto, g.Proto, portSpec(g, ":")))
		default:
			rules = append(rules, fmt.Sprintf("-A %s -d %s -p %s -j ACCEPT", chain, pfx, g.Proto))
		}
	}
	var sets []Set
	if len(nets) > 0 {
		fmt.Fprintf(f, "-A %s -m set --match-set %s dst -j ACCEPT\n", chain, NetSet(grp.ID))
		sets = append(sets, Set{Name: NetSet(grp.ID), Type: "hash:net", Members: nets})
	}
	if len(ports) > 0 {
		fmt.Fprintf(f, "-A %s -m set --match-set %s dst,dst -j ACCEPT\n", chain, PortSet(grp.ID))
		sets = append(sets, Set{Name: PortSet(grp.ID), Type: "hash:net,port", Members: ports})
	}
	for _, r := range rules {
		f.WriteString(r + "\n")
	}
	fmt.Fprintf(f, "-A %s -j %s\n", chain, DenyChain(api.DenyNotGranted))
	return sets, nil
}

func portSpec(g grant.Grant, sep string) string {
	if g.PortLo == g.PortHi {
		return fmt.Sprint(g.PortLo)
	}
	return fmt.Sprintf("%d%s%d", g.PortLo, sep, g.PortHi)
}
