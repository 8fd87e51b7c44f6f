package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"

	"github.com/extranetgw/extranet/internal/policy"
)

// Interface is what the reconciler needs of a firewall.
type Interface interface {
	Apply(*policy.Policy) error
	SetPeerSet(map[netip.Addr]bool) error
	UpdatePeerSet(add, remove []netip.Addr) error
	Check() ([]string, error)
	Cleanup() error
}

var _ Interface = (*Firewall)(nil)

// Options configure a Firewall.
type Options struct {
	Interface string
	Logger    *slog.Logger
	// Mode is the iptables flavour: "auto" (the one the host already
	// uses), "nft" or "legacy".
	Mode string
}

// Firewall programs iptables and ipset in the current network namespace.
type Firewall struct {
	opts Options
	log  *slog.Logger
	ipt  *iptables.IPTables
	// save and restore are the flavour's iptables-save and iptables-restore.
	save, restore string
	// snapshot is the kernel state right after the last successful Apply,
	// without the members of PeerSet, which change between applies.
	snapshot []string
	// tunnel is the tunnel network of the last Apply.
	tunnel netip.Prefix
	// peers are the members PeerSet holds: as of the last Apply, with
	// every update since; nil when unknown (never applied, or an update
	// failed part way).
	peers map[netip.Addr]bool
}

// New probes the iptables flavour and the ipset types it needs.
func New(opts Options) (*Firewall, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if !ifaceRE.MatchString(opts.Interface) {
		return nil, fmt.Errorf("interface name %q is not a valid Linux interface name", opts.Interface)
	}
	flavour, err := pickFlavour(opts.Mode)
	if err != nil {
		return nil, err
	}
	bin := "iptables"
	if flavour != "" {
		bin = "iptables-" + flavour
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%s is not installed (apt-get install iptables): %w", bin, err)
	}
	ipt, err := iptables.New(iptables.Path(path), iptables.Timeout(5))
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	if _, err := exec.LookPath("ipset"); err != nil {
		return nil, fmt.Errorf("ipset is not installed (apt-get install ipset): %w", err)
	}
	f := &Firewall{opts: opts, log: opts.Logger, ipt: ipt, save: bin + "-save", restore: bin + "-restore"}
	if err := f.probeSets(); err != nil {
		return nil, err
	}
	opts.Logger.Debug("firewall ready", "iptables", bin)
	return f, nil
}

// pickFlavour returns "nft", "legacy" or "" (whatever `iptables` is). In
// auto mode the flavour that already holds rules wins, as kube-proxy does:
// rules written with the other flavour would be invisible to the admin's
// tools and would be evaluated in another order.
func pickFlavour(mode string) (string, error) {
	switch mode {
	case "nft", "legacy":
		return mode, nil
	case "", "auto":
	default:
		return "", fmt.Errorf("iptables mode %q: use auto, nft or legacy", mode)
	}
	count := func(bin string) int {
		if _, err := exec.LookPath(bin); err != nil {
			return -1
		}
		out, err := run("", bin)
		if err != nil {
			return -1
		}
		return strings.Count(out, "\n-A ")
	}
	nft, legacy := count("iptables-nft-save"), count("iptables-legacy-save")
	switch {
	case nft < 0 && legacy < 0:
		return "", nil
	case legacy > nft:
		return "legacy", nil
	case nft > legacy:
		return "nft", nil
	}
	out, _ := run("", "iptables", "--version")
	if strings.Contains(out, "legacy") && legacy >= 0 {
		return "legacy", nil
	}
	if nft >= 0 {
		return "nft", nil
	}
	return "", nil
}

// probeSets checks that the kernel has the set types the rules use.
func (f *Firewall) probeSets() error {
	for _, typ := range []string{"hash:ip", "hash:net", "hash:net,port"} {
		name := SetPrefix + "probe"
		if _, err := run("", "ipset", "create", name, typ, "-exist"); err != nil {
			return fmt.Errorf("this kernel lacks ipset type %s: %w", typ, err)
		}
		if _, err := run("", "ipset", "destroy", name); err != nil {
			return err
		}
	}
	return nil
}

func run(stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	// A child that keeps the output pipes open must not outlast the limit.
	cmd.WaitDelay = time.Second
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("no answer within %s (killed)", cmdTimeout)
		}
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// cmdTimeout bounds one iptables-save, iptables-restore or ipset run. One
// that hangs (on the xtables lock, say) would hold up the reconcile, and
// every request waiting for it; failing instead lets the run fail closed
// and the next one retry. Loading 10,000 peers' rules takes about a second.
var cmdTimeout = time.Minute

// Apply makes the kernel enforce p. Order matters for failing closed: sets
// first (rules reference them), then our chains in one transaction per
// table, then the jumps into chains that are complete by then; stale sets
// go last, when nothing references them.
func (f *Firewall) Apply(p *policy.Policy) error {
	filter, err := run("", f.save, "-t", "filter")
	if err != nil {
		return err
	}
	r, err := Render(p, ourChains(filter))
	if err != nil {
		return err
	}
	saved, err := run("", "ipset", "save")
	if err != nil {
		return err
	}
	have := parseSave(saved)
	if script := setScript(r.Sets, have); script != "" {
		if _, err := run(script, "ipset", "restore"); err != nil {
			return fmt.Errorf("load sets: %w", err)
		}
	}
	for _, table := range []string{r.Filter, r.NAT} {
		if _, err := run(table, f.restore, "--noflush", "--wait"); err != nil {
			return fmt.Errorf("load rules: %w", err)
		}
	}
	for i, j := range r.Jumps {
		if err := f.ensureJump(j, r.Jumps[:i]); err != nil {
			return err
		}
	}
	// Sets nothing of ours uses any more are only clutter: a set that will
	// not go (an admin's rule references it, or iptables-nft still holds
	// it) must not fail the apply, or every later run would stop here and
	// no revoke would reach WireGuard. The next apply tries again.
	if err := destroyStaleSets(have, r.Sets); err != nil {
		f.log.Warn("sets no longer used were left in place; the next apply retries", "err", err)
	}
	snap, _, err := f.capture()
	if err != nil {
		return err
	}
	f.snapshot, f.tunnel = snap, p.TunnelNet
	f.peers = inTunnel(p.TunnelNet, p.Peers)
	return nil
}

// inTunnel is the part of peers that PeerSet holds (see peerSet).
func inTunnel(tunnel netip.Prefix, peers map[netip.Addr]bool) map[netip.Addr]bool {
	out := make(map[netip.Addr]bool, len(peers))
	for a, ok := range peers {
		if ok && a.Is4() && tunnel.Contains(a) {
			out[a] = true
		}
	}
	return out
}

// UpdatePeerSet adds and removes single addresses of PeerSet, the per-peer
// part of the firewall, without touching rules or other sets: one `ipset
// restore` of a few lines, so issuing or revoking a peer stays cheap.
// Removals go first, so an address that changes hands in one call ends up
// present. After an error the set is unknown until SetPeerSet or Apply.
func (f *Firewall) UpdatePeerSet(add, remove []netip.Addr) error {
	if len(add)+len(remove) == 0 {
		return nil
	}
	if f.peers == nil {
		return errors.New("update the peer set: its members are unknown since a failed update (SetPeerSet refills it)")
	}
	var script strings.Builder
	for _, a := range remove {
		fmt.Fprintf(&script, "del %s %s -exist\n", PeerSet, a)
	}
	for _, a := range add {
		fmt.Fprintf(&script, "add %s %s -exist\n", PeerSet, a)
	}
	if _, err := run(script.String(), "ipset", "restore"); err != nil {
		f.peers = nil
		return fmt.Errorf("update the peer set: %w", err)
	}
	for _, a := range remove {
		delete(f.peers, a)
	}
	for _, a := range add {
		f.peers[a] = true
	}
	return nil
}

// SetPeerSet makes PeerSet hold exactly the addresses of peers that are true
// (and in the tunnel network): the difference to what it holds, or, when
// that is unknown, a refill against what the kernel shows.
func (f *Firewall) SetPeerSet(peers map[netip.Addr]bool) error {
	if !f.tunnel.IsValid() {
		return errors.New("set the peer set: the firewall was never applied")
	}
	want := inTunnel(f.tunnel, peers)
	if f.peers == nil {
		saved, err := run("", "ipset", "save", PeerSet)
		if err != nil {
			return fmt.Errorf("read the peer set: %w", err)
		}
		if script := setScript([]Set{peerSet(f.tunnel, want)}, parseSave(saved)); script != "" {
			if _, err := run(script, "ipset", "restore"); err != nil {
				return fmt.Errorf("refill the peer set: %w", err)
			}
		}
		f.peers = want
		return nil
	}
	var add, remove []netip.Addr
	for a := range want {
		if !f.peers[a] {
			add = append(add, a)
		}
	}
	for a := range f.peers {
		if !want[a] {
			remove = append(remove, a)
		}
	}
	return f.UpdatePeerSet(add, remove)
}

func (f *Firewall) ensureJump(j Jump, before []Jump) error {
	// At the top of the chain, after those of our jumps that come before
	// it there (ensured already): a rule above ours, say an ACCEPT that
	// Docker or an admin inserted, would decide partner traffic first.
	pos := 1
	for _, b := range before {
		if b.Table == j.Table && b.Chain == j.Chain {
			pos++
		}
	}
	rules, err := f.ipt.List(j.Table, j.Chain)
	if err != nil {
		return fmt.Errorf("list %s %s: %w", j.Table, j.Chain, err)
	}
	// rules[0] is the chain's policy; rule n is rules[n].
	at := 0
	spec := "-A " + j.Chain + " " + strings.Join(j.Rule, " ")
	for n := 1; n < len(rules); n++ {
		if rules[n] == spec {
			at = n
			break
		}
	}
	switch {
	case at == pos:
		return nil
	case at == 0:
		// iptables may print a rule otherwise than we write it; then only
		// whether it exists can be known.
		if ok, err := f.ipt.Exists(j.Table, j.Chain, j.Rule...); err != nil {
			return fmt.Errorf("check jump %s %v: %w", j.Chain, j.Rule, err)
		} else if ok {
			return nil
		}
	}
	if err := f.ipt.Insert(j.Table, j.Chain, pos, j.Rule...); err != nil {
		return fmt.Errorf("insert jump %s %v: %w", j.Chain, j.Rule, err)
	}
	if at == 0 {
		return nil
	}
	// The old copy goes only once the new one is in place, so the jump is
	// never missing; the insert moved it down by one if it was below.
	if at >= pos {
		at++
	}
	if err := f.ipt.DeleteById(j.Table, j.Chain, at); err != nil {
		return fmt.Errorf("move jump %s %v to the top: %w", j.Chain, j.Rule, err)
	}
	return nil
}

// foreignAbove names the rules of others that stand above one of our jumps
// in the given built-in chains of iptables-save output: Docker, ufw and
// hand-made rules insert at the top, and such a rule decides partner
// traffic before our chains do.
func foreignAbove(save string, chains ...string) []string {
	var out []string
	for _, chain := range chains {
		var foreign []string
		for _, l := range strings.Split(save, "\n") {
			if !strings.HasPrefix(l, "-A "+chain+" ") {
				continue
			}
			if strings.Contains(l, ChainPrefix) {
				for _, r := range foreign {
					out = append(out, "a rule above ours in "+chain+": "+r)
				}
				foreign = nil
				continue
			}
			foreign = append(foreign, l)
		}
	}
	return out
}

// ourChains lists the chains of ours declared in iptables-save output.
func ourChains(save string) []string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, ":"+ChainPrefix) {
			out = append(out, strings.Fields(l[1:])[0])
		}
	}
	return out
}

func (f *Firewall) ourSets() ([]string, error) {
	out, err := run("", "ipset", "list", "-n")
	if err != nil {
		return nil, err
	}
	var sets []string
	for _, n := range strings.Fields(out) {
		if strings.HasPrefix(n, SetPrefix) {
			sets = append(sets, n)
		}
	}
	return sets, nil
}

// destroyStaleSets removes the sets of ours the rules no longer use; the
// rules that used them are gone by now.
func destroyStaleSets(have map[string]kernelSet, want []Set) error {
	keep := map[string]bool{}
	for _, s := range want {
		keep[s.Name] = true
	}
	var errs []error
	for name := range have {
		if !keep[name] {
			if _, err := run("", "ipset", "destroy", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// capture reads our part of the kernel state as normalised lines: our
// chains and the jumps to them, and our sets with sorted members, except
// the members of PeerSet, which it returns apart.
func (f *Firewall) capture() (lines []string, peers map[string]bool, err error) {
	for _, table := range []string{"filter", "nat"} {
		out, err := run("", f.save, "-t", table)
		if err != nil {
			return nil, nil, err
		}
		for _, l := range strings.Split(out, "\n") {
			switch {
			case strings.HasPrefix(l, ":"+ChainPrefix):
				lines = append(lines, table+" "+strings.Fields(l)[0])
			case strings.HasPrefix(l, "-A ") && strings.Contains(l, ChainPrefix):
				lines = append(lines, table+" "+l)
			}
		}
		if table == "filter" {
			lines = append(lines, foreignAbove(out, "FORWARD", "INPUT")...)
		}
	}
	out, err := run("", "ipset", "save")
	if err != nil {
		return nil, nil, err
	}
	var sets []string
	peers = map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		fields := strings.Fields(l)
		switch {
		case len(fields) >= 3 && fields[0] == "add" && fields[1] == PeerSet:
			peers[fields[2]] = true
		case strings.HasPrefix(l, "create "+SetPrefix) || strings.HasPrefix(l, "add "+SetPrefix):
			sets = append(sets, strings.Join(fields[:3], " "))
		}
	}
	sort.Strings(sets)
	return append(lines, sets...), peers, nil
}

// Check compares the kernel with the snapshot of the last Apply and
// describes each difference; none means in sync.
func (f *Firewall) Check() ([]string, error) {
	if f.snapshot == nil {
		return []string{"never applied"}, nil
	}
	now, peers, err := f.capture()
	if err != nil {
		return nil, err
	}
	return summarise(append(diff(f.snapshot, now), peerDrift(f.peers, peers)...)), nil
}

// peerDrift lists the differences between the peer addresses PeerSet
// should hold and those `ipset save` printed.
func peerDrift(want map[netip.Addr]bool, got map[string]bool) []string {
	if want == nil {
		return []string{"peer set unknown after a failed update"}
	}
	var out []string
	for a := range want {
		if !got[a.String()] {
			out = append(out, "missing: peer "+a.String())
		}
	}
	for m := range got {
		if a, err := netip.ParseAddr(m); err != nil || !want[a] {
			out = append(out, "unexpected: peer "+m)
		}
	}
	sort.Strings(out)
	return out
}

// summarise keeps a handful of differences, for a log line a person can
// read.
func summarise(out []string) []string {
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("and %d more differences", len(out)-5))
	}
	return out
}

// diff lists lines missing from got and lines that should not be there.
func diff(want, got []string) []string {
	count := func(ls []string) map[string]int {
		m := map[string]int{}
		for _, l := range ls {
			m[l]++
		}
		return m
	}
	w, g := count(want), count(got)
	var out []string
	for _, l := range want {
		if g[l] < w[l] {
			out = append(out, "missing: "+l)
			g[l] = w[l]
		}
	}
	for _, l := range got {
		if w[l] < g[l] {
			out = append(out, "unexpected: "+l)
			w[l] = g[l]
		}
	}
	// Rules in the wrong order inside a chain are drift too.
	if len(out) == 0 && strings.Join(want, "\n") != strings.Join(got, "\n") {
		out = append(out, "rules reordered")
	}
	return out
}

// Cleanup removes every jump, chain and set of ours, found by name so that
// it works without state; running it again does nothing.
func (f *Firewall) Cleanup() error {
	var errs []error
	for _, tc := range [][2]string{{"filter", "FORWARD"}, {"filter", "INPUT"}, {"nat", "POSTROUTING"}} {
		rules, err := f.ipt.List(tc[0], tc[1])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range rules {
			fields := strings.Fields(r)
			if len(fields) < 3 || fields[0] != "-A" || !strings.HasPrefix(fields[len(fields)-1], ChainPrefix) {
				continue
			}
			if err := f.ipt.Delete(tc[0], tc[1], fields[2:]...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, table := range []string{"filter", "nat"} {
		chains, err := f.ipt.ListChains(table)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Empty all our chains before deleting any: they reference each other.
		var ours []string
		for _, c := range chains {
			if strings.HasPrefix(c, ChainPrefix) {
				ours = append(ours, c)
				if err := f.ipt.ClearChain(table, c); err != nil {
					errs = append(errs, err)
				}
			}
		}
		for _, c := range ours {
			if err := f.ipt.DeleteChain(table, c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	sets, err := f.ourSets()
	if err != nil {
		errs = append(errs, err)
	}
	for _, s := range sets {
		if _, err := run("", "ipset", "destroy", s); err != nil {
			errs = append(errs, err)
		}
	}
	f.snapshot, f.peers, f.tunnel = nil, nil, netip.Prefix{}
	return errors.Join(errs...)
}
