package grant

import (
	"fmt"
	"net/netip"
)

// special is address space that no partner should reach through the
// gateway: the gateway's own, or nobody's in particular.
var special = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network" addresses (0.0.0.0/8)`},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback addresses (127.0.0.0/8), which are the gateway itself"},
	{netip.MustParsePrefix("169.254.169.254/32"), "the cloud metadata service (169.254.169.254), which hands out the host's credentials"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local addresses (169.254.0.0/16)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast addresses (224.0.0.0/4)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved and broadcast addresses (240.0.0.0/4)"},
}

// broadBits: a prefix shorter than this covers more than a sixteenth of
// all IPv4 addresses, far more than any internal network needs.
const broadBits = 8

// Covers says what in p no partner should get: special address space, or
// a large part of the internet. Empty means nothing of the kind.
func Covers(p netip.Prefix) []string {
	var out []string
	if p.Bits() < broadBits {
		n := uint64(1) << (32 - p.Bits())
		out = append(out, fmt.Sprintf("%d addresses (%.0f%% of all IPv4 addresses, most of them on the internet)", n, float64(n)/float64(uint64(1)<<32)*100))
	}
	for _, s := range special {
		if p.Overlaps(s.prefix) {
			out = append(out, s.what)
		}
	}
	return out
}
