// Package gwns is the gateway's network namespace: the one place partner
// packets exist in clear. It creates or adopts the named namespace (as `ip
// netns add` would, under /run/netns), runs code inside it, and plumbs the
// veth pair that joins it to the host.
//
// Nothing else on the host touches that namespace, so the rules there are
// the only rules partner traffic meets, and a host firewall tool that
// inserts, flushes or reloads rules in the host namespace cannot widen what
// a partner reaches.
package gwns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir holds the named namespaces, as iproute2 keeps them.
const Dir = "/run/netns"

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,64}$`)

// NS is a network namespace other than the caller's, or the caller's own
// (Current), which tests and tools use to run the same code in place.
type NS struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle
}

// Current is the caller's namespace: Do runs in place.
func Current() *NS { return &NS{h: netns.None(), nl: &netlink.Handle{}} }

// Name is the namespace's name, empty for Current.
func (n *NS) Name() string { return n.name }

// Open adopts the named namespace, creating it when absent, and reports
// whether it made it.
func Open(name string) (*NS, bool, error) {
	return open(name, true)
}

// OpenExisting adopts the named namespace; nil when there is none.
func OpenExisting(name string) (*NS, error) {
	n, _, err := open(name, false)
	return n, err
}

func open(name string, mayCreate bool) (*NS, bool, error) {
	if err := ValidName(name); err != nil {
		return nil, false, err
	}
	path := filepath.Join(Dir, name)
	created := false
	h, err := netns.GetFromPath(path)
	if err == nil && !isNS(h) {
		// An empty pin: a crash between creating the file and mounting
		// the namespace on it, or a pin made in a mount namespace of its
		// own that is gone. Nothing lives there; start over.
		h.Close()
		if !mayCreate {
			return nil, false, fmt.Errorf("%s is not a network namespace (left by an interrupted start?); remove it", path)
		}
		if err := pinsReachHost(); err != nil {
			return nil, false, fmt.Errorf("network namespace %s: %s is not a network namespace here, and a new one cannot be made: %w", name, path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, false, fmt.Errorf("remove %s, which is not a network namespace: %w", path, err)
		}
		err = os.ErrNotExist
	}
	switch {
	case errors.Is(err, os.ErrNotExist) && !mayCreate:
		return nil, false, nil
	case errors.Is(err, os.ErrNotExist):
		if err := pinsReachHost(); err != nil {
			return nil, false, fmt.Errorf("network namespace %s: %s does not exist here, and a new one cannot be made: %w", name, path, err)
		}
		h, err = create(name)
		created = true
	}
	if err != nil {
		return nil, false, fmt.Errorf("network namespace %s: %w", name, err)
	}
	host, err := netns.Get()
	if err != nil {
		h.Close()
		return nil, false, fmt.Errorf("open the host network namespace: %w", err)
	}
	same := h.Equal(host)
	host.Close()
	if same {
		h.Close()
		return nil, false, fmt.Errorf("network namespace %s is the one extranetd runs in; it must be a namespace of its own", name)
	}
	n := &NS{name: name, h: h}
	// The handle's sockets are opened inside, on a thread of their own:
	// netlink.NewHandleAt would switch the caller's thread in and back.
	if err := n.Do(func() error {
		var err error
		n.nl, err = netlink.NewHandle()
		return err
	}); err != nil {
		h.Close()
		return nil, false, fmt.Errorf("netlink in network namespace %s: %w", name, err)
	}
	return n, created, nil
}

// isNS tells whether h is a network namespace rather than a plain file.
func isNS(h netns.NsHandle) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(int(h), &st) == nil && st.Type == unix.NSFS_MAGIC
}

// pinsReachHost fails when a pin made in Dir would stay in the caller's
// mount namespace, away from the host's: PID 1's, where `ip netns exec`,
// `extranetd cleanup` and the next start look. systemd's sandbox of a unit
// (also of a "+" command of one that has PrivateTmp= or ProtectSystem=) and
// `ip netns exec` are such namespaces: a pin there would be seen by the
// caller alone and vanish with it, leaving the host an empty file and the
// next start a new namespace. Where PID 1's mount namespace cannot be read,
// a slave mount holding Dir (it takes mounts from its master and gives none
// back, as in both of those) tells the same; in a container PID 1 is the
// container's own, whose mounts may well be slaves of the real host's.
func pinsReachHost() error {
	self, err := os.Readlink("/proc/thread-self/ns/mnt")
	if err != nil {
		// No /proc: nothing tells, and the caller goes on as iproute2 would.
		return nil
	}
	var why string
	if host, err := os.Readlink("/proc/1/ns/mnt"); err == nil {
		if self == host {
			return nil
		}
		why = "this process runs in a mount namespace other than PID 1's (" + self + ", not " + host + ")"
	} else if info, err := os.ReadFile("/proc/thread-self/mountinfo"); err != nil {
		return nil
	} else if at, slave := slaveMount(string(info), Dir); slave {
		why = "it would be pinned under " + at + ", a slave mount: this process runs in a mount namespace of its own"
	} else {
		return nil
	}
	return errors.New(why + " (a systemd sandbox, or ip netns exec), whose mounts the host never sees. " +
		"Pin the namespace in the host's mount namespace first, as the systemd unit's ExecStartPre does (nsenter --mount=/proc/1/ns/mnt extranetd netns), then start again")
}

// slaveMount finds, in a mountinfo table, the mount that holds dir (the
// last one mounted on the longest mount point that is dir or above it) and
// tells whether it is a slave (a "master:N" field).
func slaveMount(mountinfo, dir string) (string, bool) {
	best, slave := "", false
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, _, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 6 {
			continue
		}
		at := f[4]
		if at != dir && at != "/" && !strings.HasPrefix(dir, at+"/") {
			continue
		}
		if len(at) < len(best) {
			continue
		}
		best, slave = at, false
		for _, opt := range f[6:] {
			if strings.HasPrefix(opt, "master:") {
				slave = true
			}
		}
	}
	return best, slave
}

// create makes a namespace and pins it at Dir/name, the way `ip netns add`
// does, so that `ip netns exec` and `ip -n` find it. Dir is made a shared
// mount point first, again like iproute2: a namespace pinned later then
// shows in mount namespaces made from this one since.
func create(name string) (netns.NsHandle, error) {
	if err := shareDir(); err != nil {
		return netns.None(), err
	}
	path := filepath.Join(Dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()
	var h netns.NsHandle
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("pin at %s: %w (under systemd the unit pins it before the daemon starts, with `extranetd netns`; run that as root)", path, err)
			}
			return fmt.Errorf("pin at %s: %w", path, err)
		}
		return nil
	})
	if err == nil {
		h, err = netns.GetFromPath(path)
	}
	if err != nil {
		unix.Unmount(path, unix.MNT_DETACH)
		os.Remove(path)
		return netns.None(), err
	}
	return h, nil
}

func shareDir() error {
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", Dir, err)
	}
	err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: make it one.
		if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", Dir, err)
		}
		err = unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", Dir, err)
	}
	return nil
}

// onThread runs fn on a locked OS thread of its own, whose namespace fn
// may change: the thread is thrown away afterwards rather than returned to
// the Go scheduler in a state other goroutines must not inherit.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread ends with this goroutine.
		errc <- fn()
	}()
	return <-errc
}

// Do runs fn inside the namespace, on a thread of its own. Processes fn
// starts are born there, and so are sockets it opens, which stay there
// whatever thread uses them later.
func (n *NS) Do(fn func() error) error {
	if !n.h.IsOpen() {
		return fn()
	}
	return onThread(func() error {
		if err := netns.Set(n.h); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", n.name, err)
		}
		return fn()
	})
}

// Netlink is a netlink handle that works on the namespace's links,
// addresses, routes and conntrack table from any thread.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// MoveIn moves a link of the host namespace into this one.
func (n *NS) MoveIn(link netlink.Link) error {
	if !n.h.IsOpen() {
		return nil
	}
	if err := netlink.LinkSetNsFd(link, int(n.h)); err != nil {
		return fmt.Errorf("move %s into network namespace %s: %w", link.Attrs().Name, n.name, err)
	}
	return nil
}

// Close lets go of the namespace; it stays pinned.
func (n *NS) Close() {
	if !n.h.IsOpen() {
		return
	}
	if n.nl != nil {
		n.nl.Close()
	}
	n.h.Close()
}

// Foreign names the links in the namespace other than loopback and those
// in ours: a namespace holding anything else belongs to someone else, and
// adopting it would replace its firewall.
func (n *NS) Foreign(ours ...string) ([]string, error) {
	links, err := n.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list the links of network namespace %s: %w", n.name, err)
	}
	var out []string
	for _, l := range links {
		if name := l.Attrs().Name; name != "lo" && !slices.Contains(ours, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// OwnsVeth tells whether the host's link of that name is a veth whose
// other end is in this namespace.
func (n *NS) OwnsVeth(name string) bool {
	link, err := netlink.LinkByName(name)
	if err != nil || link.Type() != "veth" {
		return false
	}
	id, err := netlink.GetNetNsIdByFd(int(n.h))
	return err == nil && id >= 0 && link.Attrs().NetNsID == id
}

// pin sees to the namespace being pinned at its name: after an `ip netns
// del` the daemon still enforces in it, through its handle, but no tool
// can look inside any more. The pin is put back; a name that now pins
// another namespace is an error, not something to take over.
func (n *NS) pin(e ensurer) error {
	if !n.h.IsOpen() {
		return nil
	}
	path := filepath.Join(Dir, n.name)
	h, err := netns.GetFromPath(path)
	if err == nil {
		defer h.Close()
		if !h.Equal(n.h) {
			return fmt.Errorf("%s now pins another network namespace than the gateway's; remove it (ip netns del %s) so that the gateway's can be pinned again", path, n.name)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open %s: %w", path, err)
	}
	e.note("namespace pin " + path + " missing")
	if !e.fix {
		return nil
	}
	if err := pinsReachHost(); err != nil {
		return fmt.Errorf("the gateway namespace is no longer pinned at %s, and cannot be pinned again from here: %w", path, err)
	}
	if err := shareDir(); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()
	self := fmt.Sprintf("/proc/self/fd/%d", int(n.h))
	if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("pin the gateway namespace again at %s: %w (restart extranetd, whose systemd unit pins it)", path, err)
	}
	return nil
}

// ValidName refuses a namespace name iproute2 would not take, or that
// would lead out of Dir.
func ValidName(name string) error {
	if !nameRE.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("network namespace name %q: use letters, digits, '.', '_' and '-' (at most 64)", name)
	}
	return nil
}

// Delete unpins the named namespace; it disappears, and with it every
// interface, rule and set inside, once nothing uses it any more. An absent
// one is not an error, so cleanup can run twice.
func Delete(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	path := filepath.Join(Dir, name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unpin network namespace %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
