package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"

	"github.com/extranetgw/extranet/internal/gwns"
	"github.com/extranetgw/extranet/internal/policy"
)

// Interface is what the reconciler needs of a firewall.
type Interface interface {
	Apply(*policy.Policy) error
	SetPeerSet(map[netip.Addr]policy.Peer) error
	UpdatePeerSet(add map[netip.Addr]policy.Peer, remove []netip.Addr) error
	PeerHolders() (map[netip.Addr]string, error)
	Check() ([]string, error)
}

var _ Interface = (*Firewall)(nil)

// Options configure a Firewall.
type Options struct {
	// Interface is the WireGuard interface, inside NS.
	Interface string
	// Uplink is the namespace's end of the veth pair to the host, and
	// HostVeth the host's.
	Uplink, HostVeth string
	// NS is the gateway's namespace, where every rule that decides partner
	// access goes. The host's part (forwarding to and from HostVeth, the
	// masquerade) goes into the namespace the caller runs in.
	NS     *gwns.NS
	Logger *slog.Logger
	// Mode is the iptables flavour: "auto" (the one in use already), "nft"
	// or "legacy".
	Mode string
	// Now tells the time, from which the peer set's entries count down to
	// their peers' dates; time.Now when nil.
	Now func() time.Time
}

// Firewall programs the gateway namespace's iptables, ip6tables and ipsets,
// which it owns whole, and the few host rules that let its traffic through.
type Firewall struct {
	opts Options
	log  *slog.Logger
	// ns runs the tools in the gateway namespace, host in the caller's.
	ns, host tools
	// hostIPT edits single rules of the host's built-in chains.
	hostIPT *iptables.IPTables
	// snapshot is the kernel state right after the last successful Apply,
	// without the members of PeerSet, which change between applies.
	snapshot []string
	// tunnel is the tunnel network of the last Apply.
	tunnel netip.Prefix
	// legacyChecked is set once the host holds no rules of an earlier
	// layout.
	legacyChecked bool
	// peers are the members PeerSet holds, as of the last Apply with
	// every update since, when peersKnown: not before the first Apply,
	// nor after an update that failed part way, until a refill.
	peers      map[netip.Addr]entry
	peersKnown bool
	// groups are the groups of the last Apply, which have rules.
	groups map[uint32]bool
}

// tools are one namespace's iptables flavour and where to run it.
type tools struct {
	do func(func() error) error
	// bin is iptables, iptables-nft or iptables-legacy.
	bin                            string
	save, restore, save6, restore6 string
}

func (t tools) run(stdin, name string, args ...string) (string, error) {
	var out string
	err := t.do(func() error {
		var err error
		out, err = run(stdin, name, args...)
		return err
	})
	return out, err
}

// New probes the iptables flavours and the ipset types it needs.
func New(opts Options) (*Firewall, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.NS == nil {
		return nil, errors.New("firewall: no gateway namespace")
	}
	for _, name := range []string{opts.Interface, opts.Uplink, opts.HostVeth} {
		if !ifaceRE.MatchString(name) {
			return nil, fmt.Errorf("interface name %q is not a valid Linux interface name", name)
		}
	}
	if _, err := exec.LookPath("ipset"); err != nil {
		return nil, fmt.Errorf("ipset is not installed (apt-get install ipset): %w", err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	f := &Firewall{opts: opts, log: opts.Logger}
	var err error
	if f.ns, err = newTools(opts.Mode, opts.NS.Do); err != nil {
		return nil, err
	}
	if f.host, err = newTools(opts.Mode, func(fn func() error) error { return fn() }); err != nil {
		return nil, err
	}
	if f.hostIPT, err = iptables.New(iptables.Path(f.host.bin), iptables.Timeout(5)); err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	if err := f.probeSets(); err != nil {
		return nil, err
	}
	return f, nil
}

func newTools(mode string, do func(func() error) error) (tools, error) {
	var flavour string
	err := do(func() error {
		var err error
		flavour, err = pickFlavour(mode)
		return err
	})
	if err != nil {
		return tools{}, err
	}
	t := tools{do: do}
	suffix := ""
	if flavour != "" {
		suffix = "-" + flavour
	}
	t.bin = "iptables" + suffix
	t.save, t.restore = "iptables"+suffix+"-save", "iptables"+suffix+"-restore"
	bins := []string{t.bin, t.save, t.restore}
	// A kernel without IPv6 has nothing to close there.
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		t.save6, t.restore6 = "ip6tables"+suffix+"-save", "ip6tables"+suffix+"-restore"
		bins = append(bins, t.save6, t.restore6)
	}
	for _, bin := range bins {
		if _, err := exec.LookPath(bin); err != nil {
			return tools{}, fmt.Errorf("%s is not installed (apt-get install iptables): %w", bin, err)
		}
	}
	return t, nil
}

// pickFlavour returns "nft", "legacy" or "" (whatever `iptables` is), for
// the namespace it runs in. In auto mode the flavour that already holds
// rules wins, as kube-proxy does: rules written with the other flavour
// would be invisible to the admin's tools and evaluated in another order.
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
	// The peer set carries each peer's group as a mark (skbinfo), its
	// key's fingerprint (comment) and a timeout for its date; the attempts
	// sets count.
	for _, typ := range [][]string{{"hash:ip", "timeout", "0", "comment", "skbinfo"}, {"hash:ip", "counters"}, {"hash:net"}, {"hash:net,port"}} {
		name := SetPrefix + "probe"
		if _, err := f.ns.run("", "ipset", append(append([]string{"create", name}, typ...), "-exist")...); err != nil {
			return fmt.Errorf("this kernel lacks ipset type %s: %w", strings.Join(typ, " "), err)
		}
		if _, err := f.ns.run("", "ipset", "destroy", name); err != nil {
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
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// cmdTimeout bounds one iptables-save, iptables-restore or ipset run. One
// that hangs (on the xtables lock, say) would hold up the reconcile, and
// every request waiting for it; failing instead lets the run fail closed
// and the next one retry. Loading 10,000 peers' rules takes about a second.
var cmdTimeout = time.Minute

// Apply makes the kernel enforce p. Order matters for failing closed: the
// namespace's sets first (rules reference them), then its whole filter
// table and its whole mangle table (each one transaction; the filter
// first, which without the mangle table's marks lets no new flow into a
// group), IPv6's filter with them; only then the host rules that let
// traffic into and out of the namespace. Stale sets go last, when
// nothing references them.
func (f *Firewall) Apply(p *policy.Policy) error {
	r, err := Render(p, f.opts.Uplink)
	if err != nil {
		return err
	}
	saved, err := f.ns.run("", "ipset", "save")
	if err != nil {
		return err
	}
	have := parseSave(saved)
	if script := setScript(r.Sets, have); script != "" {
		// From here the per-peer sets may hold the new members, or some
		// of them, until the apply completes.
		f.peersKnown = false
		if _, err := f.ns.run(script, "ipset", "restore"); err != nil {
			return fmt.Errorf("load sets: %w", err)
		}
	}
	// Without --noflush: the namespace is ours, so its tables are replaced
	// whole, rules someone added there and our stale chains included. The
	// filter table first: without the mangle table's marks it lets no new
	// flow into any group.
	if _, err := f.ns.run(r.Filter+r.Mangle+r.Raw, f.ns.restore, "--wait"); err != nil {
		return fmt.Errorf("load rules: %w", err)
	}
	if f.ns.restore6 != "" {
		if _, err := f.ns.run(Filter6, f.ns.restore6, "--wait"); err != nil {
			return fmt.Errorf("load IPv6 rules: %w", err)
		}
	}
	if !f.legacyChecked {
		// A release that enforced on the host left its chains there, and
		// its anti-spoofing rule would drop every partner packet that now
		// comes out of the veth with a tunnel source.
		keep := map[string]bool{chainAccept: true, chainPost: true, chainGuardIn: true, chainGuardFwd: true, chainGuardRaw: true}
		if err := f.legacyInterfacesGone(keep); err != nil {
			return err
		}
		removed, err := removeOurs(f.hostIPT, keep)
		if err != nil {
			return fmt.Errorf("remove the host rules of an earlier release: %w", err)
		}
		if len(removed) > 0 {
			f.log.Info("removed the host rules of a release that enforced on the host", "removed", removed)
		}
		f.legacyChecked = true
	}
	h := RenderHost(p, f.opts.HostVeth)
	for _, table := range []string{h.Filter, h.NAT, h.Mangle, h.Raw} {
		if _, err := f.host.run(table, f.host.restore, "--noflush", "--wait"); err != nil {
			return fmt.Errorf("load host rules: %w", err)
		}
	}
	for _, j := range h.Jumps {
		if err := f.ensureHostJump(j); err != nil {
			return err
		}
	}
	// Sets nothing of ours uses any more are only clutter: a set that will
	// not go must not fail the apply, or every later run would stop here
	// and no revoke would reach WireGuard. The next apply tries again.
	if err := f.destroyStaleSets(have, r.Sets); err != nil {
		f.log.Warn("sets no longer used were left in place; the next apply retries", "err", err)
	}
	snap, _, err := f.capture()
	if err != nil {
		return err
	}
	f.snapshot, f.tunnel = snap, p.TunnelNet
	f.peers, f.peersKnown = entries(inTunnel(p.TunnelNet, p.Peers), p.At), true
	f.groups = map[uint32]bool{}
	for _, o := range p.Orgs {
		for _, g := range o.Groups {
			f.groups[g.ID] = true
		}
	}
	return nil
}

// legacyInterfacesGone refuses to remove an earlier release's host rules
// while an interface they guard is still in the host namespace (an
// interface renamed since, say): removed, they would leave it forwarding
// under the host's policy.
func (f *Firewall) legacyInterfacesGone(keep map[string]bool) error {
	for _, chain := range []string{"FORWARD", "INPUT"} {
		rules, err := f.hostIPT.List("filter", chain)
		if err != nil {
			return fmt.Errorf("list host %s: %w", chain, err)
		}
		for _, r := range rules {
			fields := strings.Fields(r)
			if len(fields) < 3 || !strings.HasPrefix(fields[len(fields)-1], ChainPrefix) || keep[fields[len(fields)-1]] {
				continue
			}
			for i := 0; i+1 < len(fields); i++ {
				if fields[i] != "-i" && fields[i] != "-o" {
					continue
				}
				if _, err := netlink.LinkByName(fields[i+1]); err == nil {
					return fmt.Errorf("interface %s is still in the host namespace, guarded by the rules of an earlier release (%s); delete it (`ip link del %s`) or run with --interface %s so that it is moved into the gateway namespace", fields[i+1], r, fields[i+1], fields[i+1])
				}
			}
		}
	}
	return nil
}

// ensureHostJump appends a jump to a host chain of ours where it is
// missing. Its place does not matter for most: what they let through meets
// the namespace's rules, and a rule of the admin's above them can only stop
// partner traffic, never widen it. A jump that must come first is put back
// at the head of its chain whenever something stands before it.
func (f *Firewall) ensureHostJump(j Jump) error {
	if j.First {
		return f.ensureFirst(j)
	}
	args := append([]string{"--wait", "-t", j.Table, "-C", j.Chain}, j.Rule...)
	_, err := f.host.run("", f.host.bin, args...)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &exit) || exit.ExitCode() != 1:
		// Not "no such rule": appending now might make a second copy.
		return fmt.Errorf("check host jump: %w", err)
	}
	args[3] = "-A"
	if _, err := f.host.run("", f.host.bin, args...); err != nil {
		return fmt.Errorf("add host jump: %w", err)
	}
	return nil
}

// ensureFirst sees to j being the first rule of its chain, and its only copy.
func (f *Firewall) ensureFirst(j Jump) error {
	want := strings.Join(append([]string{"-A", j.Chain}, j.Rule...), " ")
	out, err := f.host.run("", f.host.bin, "--wait", "-t", j.Table, "-S", j.Chain)
	if err != nil {
		return fmt.Errorf("list host %s %s: %w", j.Table, j.Chain, err)
	}
	var rules []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, l)
		}
	}
	if len(rules) > 0 && rules[0] == want && !slices.Contains(rules[1:], want) {
		return nil
	}
	for _, r := range rules {
		if r != want {
			continue
		}
		args := append([]string{"--wait", "-t", j.Table, "-D", j.Chain}, j.Rule...)
		if _, err := f.host.run("", f.host.bin, args...); err != nil {
			return fmt.Errorf("remove misplaced host jump: %w", err)
		}
	}
	args := append([]string{"--wait", "-t", j.Table, "-I", j.Chain, "1"}, j.Rule...)
	if _, err := f.host.run("", f.host.bin, args...); err != nil {
		return fmt.Errorf("add host jump: %w", err)
	}
	return nil
}

// destroyStaleSets removes the sets of ours the rules no longer use; the
// rules that used them are gone by now.
func (f *Firewall) destroyStaleSets(have map[string]kernelSet, want []Set) error {
	keep := map[string]bool{}
	for _, s := range want {
		keep[s.Name] = true
	}
	var errs []error
	for name := range have {
		if !keep[name] {
			if _, err := f.ns.run("", "ipset", "destroy", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// saveTables runs save (iptables-save or ip6tables-save) once and returns
// the lines of each of tables, comments and blank lines left out: what
// `save -t TABLE` prints for each. A table the kernel does not have yet
// has no lines.
func saveTables(t tools, save string, tables []string) (map[string][]string, error) {
	out, err := t.run("", save)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, table := range tables {
		want[table] = true
	}
	got := map[string][]string{}
	table := ""
	for _, l := range strings.Split(out, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "*") {
			table = l[1:]
		}
		if want[table] {
			got[table] = append(got[table], l)
		}
	}
	return got, nil
}

// firstIn are the host chains ("table chain") whose first rule must be a
// jump of ours.
var firstIn = func() map[string]bool {
	m := map[string]bool{}
	for _, j := range RenderHost(&policy.Policy{}, "veth").Jumps {
		if j.First {
			m[j.Table+" "+j.Chain] = true
		}
	}
	return m
}()

var counters = regexp.MustCompile(` \[\d+:\d+\]$`)

// capture reads the kernel state that Apply sets as normalised lines: the
// namespace's whole filter tables (IPv4 and IPv6, chain policies included)
// and its mangle table, its sets with sorted members except the members
// of PeerSet, which it returns apart, and the host's chains and jumps of
// ours.
func (f *Firewall) capture() (lines []string, peers setMembers, err error) {
	// One save per family and namespace: a periodic check runs this every
	// interval, and each run of a tool is a process.
	for _, st := range []struct {
		save   string
		tables []string
	}{{f.ns.save, []string{"filter", "mangle", "raw"}}, {f.ns.save6, []string{"filter"}}} {
		if st.save == "" {
			continue
		}
		tables, err := saveTables(f.ns, st.save, st.tables)
		if err != nil {
			return nil, nil, err
		}
		for _, table := range st.tables {
			for _, l := range tables[table] {
				lines = append(lines, st.save+" "+counters.ReplaceAllString(l, ""))
			}
		}
	}
	hostTables, err := saveTables(f.host, f.host.save, []string{"filter", "nat", "mangle", "raw"})
	if err != nil {
		return nil, nil, err
	}
	for _, table := range []string{"filter", "nat", "mangle", "raw"} {
		heads := map[string]bool{}
		for _, l := range hostTables[table] {
			// A guard that must come first: what stands at the head of
			// its chain is state.
			if f := strings.Fields(l); len(f) > 2 && f[0] == "-A" && firstIn[table+" "+f[1]] && !heads[f[1]] {
				lines = append(lines, "host "+table+" head "+l)
				heads[f[1]] = true
			}
			switch {
			case strings.HasPrefix(l, ":"+ChainPrefix):
				lines = append(lines, "host "+table+" "+strings.Fields(l)[0])
			case strings.HasPrefix(l, "-A ") && strings.Contains(l, ChainPrefix):
				lines = append(lines, "host "+table+" "+l)
			}
		}
	}
	out, err := f.ns.run("", "ipset", "save")
	if err != nil {
		return nil, nil, err
	}
	var sets []string
	peers = setMembers{}
	for _, l := range strings.Split(out, "\n") {
		fields := strings.Fields(l)
		switch {
		case len(fields) >= 3 && fields[0] == "add" && fields[1] == PeerSet:
			peers[fields[2]] = normMember(strings.Join(fields[3:], " "))
		case len(fields) >= 3 && fields[0] == "add" && strings.HasPrefix(fields[1], AttemptsPrefix):
			// Its members come and go with the partners' packets.
		case len(fields) >= 3 && (fields[0] == "create" || fields[0] == "add"):
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
	drift := diff(f.snapshot, now)
	if f.peersKnown {
		drift = append(drift, peerDrift(f.peers, peers, f.opts.Now())...)
	} else {
		drift = append(drift, "peer set unknown after a failed update")
	}
	return summarise(drift), nil
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

// CleanupHost removes every jump, chain and set of ours from the host
// namespace, found by name so that it works without state: the host rules
// of this layout, and the whole firewall of releases that enforced in the
// host itself. Running it again does nothing. The gateway namespace's own
// rules go with the namespace.
func CleanupHost(mode string) error {
	t, err := newTools(mode, func(fn func() error) error { return fn() })
	if err != nil {
		return err
	}
	ipt, err := iptables.New(iptables.Path(t.bin), iptables.Timeout(5))
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	_, err = removeOurs(ipt, nil)
	return err
}

// removeOurs removes from the caller's namespace every jump to a chain of
// ours, every such chain and every set of ours, except the chains in keep,
// and returns what it removed.
func removeOurs(ipt *iptables.IPTables, keep map[string]bool) ([]string, error) {
	var removed []string
	var errs []error
	for _, tc := range [][2]string{{"filter", "FORWARD"}, {"filter", "INPUT"}, {"nat", "POSTROUTING"}, {"mangle", "INPUT"}, {"mangle", "FORWARD"}, {"raw", "PREROUTING"}} {
		rules, err := ipt.List(tc[0], tc[1])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range rules {
			fields := strings.Fields(r)
			if len(fields) < 3 || fields[0] != "-A" {
				continue
			}
			if target := fields[len(fields)-1]; !strings.HasPrefix(target, ChainPrefix) || keep[target] {
				continue
			}
			if err := ipt.Delete(tc[0], tc[1], fields[2:]...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, table := range []string{"filter", "nat", "mangle", "raw"} {
		chains, err := ipt.ListChains(table)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Empty all our chains before deleting any: they reference each other.
		var ours []string
		for _, c := range chains {
			if strings.HasPrefix(c, ChainPrefix) && !keep[c] {
				ours = append(ours, c)
				if err := ipt.ClearChain(table, c); err != nil {
					errs = append(errs, err)
				}
			}
		}
		for _, c := range ours {
			if err := ipt.DeleteChain(table, c); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, table+" "+c)
			}
		}
	}
	out, err := run("", "ipset", "list", "-n")
	if err != nil {
		errs = append(errs, err)
	}
	for _, s := range strings.Fields(out) {
		if strings.HasPrefix(s, SetPrefix) {
			if _, err := run("", "ipset", "destroy", s); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, "set "+s)
			}
		}
	}
	return removed, errors.Join(errs...)
}
