package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"

	"github.com/extranetgw/extranet/pkg/api"
)

// Unlogged names a count of the unlogged sets: a partner address's
// refused packets for one reason that the log's rate left out.
type Unlogged struct {
	Reason string
	Src    netip.Addr
}

// ReadUnlogged returns the unlogged sets' counts: per address and reason,
// the packets refused but not logged since the address's entry was made
// (by its first such packet). It must run in the gateway
// namespace (inside its Do). A set not made yet counts nothing.
func ReadUnlogged() (map[Unlogged]uint64, error) {
	counts := map[Unlogged]uint64{}
	for _, reason := range api.DenyReasons {
		name := UnloggedSet(reason)
		out, err := run("", "ipset", "save", name)
		var exit *exec.ExitError
		if errors.As(err, &exit) && strings.Contains(err.Error(), "does not exist") {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the counts of %s: %w", name, err)
		}
		parseUnlogged(out, reason, counts)
	}
	return counts, nil
}

// parseUnlogged adds the members of `ipset save` output, "add SET ADDR
// packets N bytes N", to counts.
func parseUnlogged(out, reason string, counts map[Unlogged]uint64) {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "add" {
			continue
		}
		a, err := netip.ParseAddr(f[2])
		if err != nil {
			continue
		}
		for i := 3; i+1 < len(f); i++ {
			if f[i] == "packets" {
				if n, err := strconv.ParseUint(f[i+1], 10, 64); err == nil {
					counts[Unlogged{Reason: reason, Src: a.Unmap()}] = n
				}
			}
		}
	}
}
