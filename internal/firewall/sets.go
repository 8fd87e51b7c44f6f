package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// maxElem bounds every set of ours. The peer set holds an address per
// peer, and ipset's default of 65,536 would cap the gateway's peers; hash
// sets we fill allocate as they fill, so a high bound costs nothing. (A
// set the kernel fills cannot grow: see Set.HashSize.)
const maxElem = 1 << 20

// Set is one ipset the rules use, with the members as they are added.
type Set struct {
	Name, Type string
	// SkbInfo sets are made with the skbinfo extension: each member
	// carries a mark the rules hand to the packets of its address.
	SkbInfo bool
	// Timeout and Comment sets are made with those extensions: a member
	// may end by itself, and carries a text.
	Timeout, Comment bool
	// Counters sets count the packets and bytes each member matched.
	Counters bool
	// Dynamic sets are filled by the rules (SET --add-set), not by us:
	// Members is empty, and what the kernel holds is left alone.
	Dynamic bool
	// HashSize, when not 0, is the set's number of buckets. A member the
	// kernel adds from a rule finds room in the buckets the set has, or
	// is silently not added: only an add from userspace makes a hash set
	// grow. So a Dynamic set is made with the buckets its most members
	// need.
	HashSize int
	Members  []string
}

// create is the set's create line, with extra ("-exist") when given.
func (s Set) create(name, extra string) string {
	opts := ""
	if s.Timeout {
		opts += " timeout 0"
	}
	if s.Counters {
		opts += " counters"
	}
	if s.Comment {
		opts += " comment"
	}
	if s.SkbInfo {
		opts += " skbinfo"
	}
	if s.HashSize > 0 {
		opts += " hashsize " + strconv.Itoa(s.HashSize)
	}
	return fmt.Sprintf("create %s %s family inet%s maxelem %d%s\n", name, s.Type, opts, maxElem, extra)
}

// kernelSet is a set as `ipset save` shows it.
type kernelSet struct {
	typ                                 string
	skbinfo, timeout, comment, counters bool
	hashSize                            int
	members                             map[string]bool
}

// sameKind says whether the kernel's set k was made as s would be. A set
// we fill may have grown past the buckets it was made with, so only a
// HashSize asked for is compared, as a floor.
func (s Set) sameKind(k kernelSet) bool {
	return k.typ == s.Type && k.skbinfo == s.SkbInfo && k.timeout == s.Timeout && k.comment == s.Comment && k.counters == s.Counters &&
		k.hashSize >= s.HashSize
}

// parseSave reads the sets of ours out of `ipset save` output.
func parseSave(out string) map[string]kernelSet {
	sets := map[string]kernelSet{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || !strings.HasPrefix(f[1], SetPrefix) {
			continue
		}
		switch f[0] {
		case "create":
			k := kernelSet{typ: f[2], skbinfo: slices.Contains(f[3:], "skbinfo"), timeout: slices.Contains(f[3:], "timeout"),
				comment: slices.Contains(f[3:], "comment"), counters: slices.Contains(f[3:], "counters"), members: map[string]bool{}}
			if i := slices.Index(f, "hashsize"); i > 0 && i+1 < len(f) {
				k.hashSize, _ = strconv.Atoi(f[i+1])
			}
			sets[f[1]] = k
		case "add":
			// The member with its extensions (skbmark), as printed, but
			// for a running timeout.
			if s, ok := sets[f[1]]; ok {
				s.members[normMember(strings.Join(f[2:], " "))] = true
			}
		}
	}
	return sets
}

// setScript is `ipset restore` input that makes the kernel hold want,
// touching only what differs: a missing set is created and filled, a set
// that already holds exactly its members is left alone, and any other is
// filled as a temporary set swapped in, so lookups never see it half
// filled. At 1,000 organisations a restart then rewrites nothing, where
// refilling every set cost about a second of ipset work.
func setScript(want []Set, have map[string]kernelSet) string {
	var s strings.Builder
	for _, set := range want {
		k, ok := have[set.Name]
		switch {
		case !ok:
			s.WriteString(set.create(set.Name, ""))
			for _, m := range set.Members {
				fmt.Fprintf(&s, "add %s %s\n", set.Name, m)
			}
		case set.sameKind(k) && (set.Dynamic || sameMembers(kernelMembers(set.Members), k.members)):
		default:
			tmp := set.Name + "-t"
			// One left by a run that died part way may have other
			// options, which create -exist refuses; rules never use it.
			if _, left := have[tmp]; left {
				fmt.Fprintf(&s, "destroy %s\n", tmp)
			}
			s.WriteString(set.create(tmp, " -exist"))
			fmt.Fprintf(&s, "flush %s\n", tmp)
			for _, m := range set.Members {
				fmt.Fprintf(&s, "add %s %s\n", tmp, m)
			}
			fmt.Fprintf(&s, "swap %s %s\n", tmp, set.Name)
			fmt.Fprintf(&s, "destroy %s\n", tmp)
		}
	}
	return s.String()
}

func sameMembers(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for m := range a {
		if !b[m] {
			return false
		}
	}
	return true
}

// kernelMembers is how `ipset save` prints members added as ms: a host
// prefix without its /32, and a port range as one entry per port. A member
// it cannot read is kept as written, which at worst makes the set look
// changed and refilled: slower, never wrong.
func kernelMembers(ms []string) map[string]bool {
	out := make(map[string]bool, len(ms))
	for _, m := range ms {
		if strings.Contains(m, " ") {
			// A member with extensions: a peer's entry.
			out[normMember(m)] = true
			continue
		}
		pfx, proto, hasPort := strings.Cut(m, ",")
		if p, err := netip.ParsePrefix(pfx); err == nil && p.IsSingleIP() {
			pfx = p.Addr().String()
		}
		if !hasPort {
			out[pfx] = true
			continue
		}
		name, ports, _ := strings.Cut(proto, ":")
		lo, hi, isRange := strings.Cut(ports, "-")
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if !isRange || err1 != nil || err2 != nil || h < l || h-l >= maxSetRange {
			out[pfx+","+proto] = true
			continue
		}
		for p := l; p <= h; p++ {
			out[fmt.Sprintf("%s,%s:%d", pfx, name, p)] = true
		}
	}
	return out
}
