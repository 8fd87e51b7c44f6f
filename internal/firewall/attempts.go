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

// Attempts names a count of the attempts sets: a partner address's
// refused packets for one reason.
type Attempts struct {
	Reason string
	Src    netip.Addr
}

// ReadAttempts returns the attempts sets' counts: per address and reason,
// the packets refused since the address's entry was made (by its first
// such packet), logged or not. It must run in the gateway namespace
// (inside its Do). A set not made yet counts nothing.
func ReadAttempts() (map[Attempts]uint64, error) {
	counts := map[Attempts]uint64{}
	for _, reason := range api.DenyReasons {
		name := AttemptsSet(reason)
		out, err := run("", "ipset", "save", name)
		var exit *exec.ExitError
		if errors.As(err, &exit) && strings.Contains(err.Error(), "does not exist") {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the counts of %s: %w", name, err)
		}
		parseAttempts(out, reason, counts)
	}
	return counts, nil
}

// parseAttempts adds the members of `ipset save` output, "add SET ADDR
// packets N bytes N", to counts.
func parseAttempts(out, reason string, counts map[Attempts]uint64) {
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
					counts[Attempts{Reason: reason, Src: a.Unmap()}] = n
				}
			}
		}
	}
}
