// Package wgdev runs the gateway's WireGuard interface: in the kernel where
// the module exists, else in-process with wireguard-go, serving the same
// UAPI socket so that wgctrl and the stock `wg` tool see no difference. It
// syncs peers by diff and reads their statistics.
package wgdev

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/extranetgw/extranet/internal/gwns"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Mode chooses where WireGuard runs.
type Mode string

// Modes. Auto resolves to Kernel or Userspace.
const (
	Auto      Mode = "auto"
	Kernel    Mode = "kernel"
	Userspace Mode = "userspace"
)

// DefaultMTU is WireGuard's usual MTU.
const DefaultMTU = 1420

// Config describes the interface.
type Config struct {
	Name       string
	Mode       Mode
	PrivateKey wgtypes.Key
	ListenPort int
	// Address is the gateway's tunnel address with the tunnel network's
	// length, so the kernel routes the whole network into the interface.
	Address netip.Prefix
	MTU     int
	Logger  *slog.Logger
	// NS is where the interface lives: the gateway's namespace. Its UDP
	// socket stays in the namespace the daemon runs in, the host's, where
	// partners reach the listen port.
	NS *gwns.NS
}

// Peer is one wanted peer; its only allowed IP is its own address.
type Peer struct {
	PublicKey    wgtypes.Key
	PresharedKey wgtypes.Key
	Address      netip.Addr
	// Endpoint, when known, is where the peer was last seen. A peer added
	// with one gets a keepalive at once, which makes the gateway start the
	// handshake: after a restart or a resume the partner's client still
	// holds a session the gateway forgot, and would otherwise only notice
	// after about 15 seconds of silence.
	Endpoint netip.AddrPort
}

// KeepaliveInterval is the persistent keepalive of peers added with an
// endpoint, the same as the client configs ask for.
const KeepaliveInterval = 25 * time.Second

// PeerStats is what the device knows about a peer's traffic.
type PeerStats struct {
	PublicKey     wgtypes.Key
	LastHandshake time.Time
	Endpoint      string
	RxBytes       int64
	TxBytes       int64
}

// Info describes the running interface.
type Info struct {
	Name       string
	Mode       Mode
	PublicKey  wgtypes.Key
	ListenPort int
}

// SyncResult counts what SyncPeers changed.
type SyncResult struct {
	Added, Removed, Updated int
	// Fixed says what of the interface itself was found changed by hand
	// and put back.
	Fixed []string
}

// Device is the interface as the reconciler drives it.
type Device interface {
	Info() Info
	// SyncPeers makes the peers exactly want. With verify it reads the
	// live device to find (and undo) changes made behind its back; without
	// it, it diffs against what it applied last, which is much cheaper
	// with thousands of peers.
	SyncPeers(want []Peer, verify bool) (SyncResult, error)
	// UpdatePeers adds or fixes set and removes remove, touching no other
	// peer.
	UpdatePeers(set []Peer, remove []wgtypes.Key) (SyncResult, error)
	Stats() ([]PeerStats, error)
	// EndKeepalives takes back the keepalive of peers added with an
	// endpoint once stats show they handshook since: it was there to start
	// the handshake, and the partner's own config keeps the path open.
	EndKeepalives(stats []PeerStats) error
	// Up brings the link up. Open leaves a new interface down, so that
	// its peers and the firewall can be loaded before a packet passes.
	Up() error
	// Down takes the link down: nothing passes, no handshake is answered,
	// and the peers stay, ready for the next Up.
	Down() error
	// Kick points peers at their endpoints and starts the handshake with
	// each (a keepalive, which EndKeepalives takes back): partners whose
	// clients hold a session another gateway had are back at once, not
	// after their own retry.
	Kick(peers []Peer) error
	// Close stops a userspace device (its interface disappears with it)
	// and leaves a kernel one in place; either way the firewall's default
	// deny stays, so nothing opens.
	Close() error
}

var _ Device = (*dev)(nil)

type dev struct {
	cfg    Config
	mode   Mode
	client *wgctrl.Client
	log    *slog.Logger
	// nl works on links in the interface's namespace.
	nl *netlink.Handle

	// Userspace only.
	wg   *device.Device
	uapi net.Listener

	// adopted: a kernel interface that existed before Open; created: one
	// that Open made. unadopted: the adopted one's peers were not read yet.
	adopted, created, unadopted bool

	// applied is the peer set of the last successful sync; nil when unknown.
	applied map[wgtypes.Key]Peer

	// keepalive holds the peers given a keepalive by peerChange, and when.
	// The reconciler adds them; the statistics poller ends them.
	kaMu      sync.Mutex
	keepalive map[wgtypes.Key]time.Time
}

// Open creates (or adopts) the interface and configures its key, port, MTU
// and address. A new interface stays down until Up.
func Open(cfg Config) (Device, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.NS == nil {
		cfg.NS = gwns.Current()
	}
	d := &dev{cfg: cfg, log: cfg.Logger, nl: cfg.NS.Netlink()}
	var err error
	switch cfg.Mode {
	case Kernel:
		err = d.openKernel()
	case Userspace:
		err = d.openUserspace()
	case Auto, "":
		if err = d.openKernel(); errors.Is(err, ErrNoKernelModule) {
			d.log.Info("no WireGuard kernel module; using embedded wireguard-go")
			err = d.openUserspace()
		}
	default:
		err = fmt.Errorf("unknown WireGuard mode %q", cfg.Mode)
	}
	if err != nil {
		return nil, err
	}
	if err := d.configure(); err != nil {
		d.Close()
		if d.created {
			// Leave nothing behind that a later start would adopt.
			if rerr := Remove(d.cfg.NS, d.cfg.Name); rerr != nil {
				d.log.Warn("remove the interface of a failed start", "err", rerr)
			}
		}
		return nil, err
	}
	return d, nil
}

// ErrNoKernelModule is returned for --wireguard kernel on a kernel that
// cannot make WireGuard interfaces.
var ErrNoKernelModule = errors.New("this kernel has no WireGuard module (modprobe wireguard failed or the kernel was built without it): install it, or run with --wireguard userspace (or auto)")

// openKernel creates the interface, or adopts one of that name. An adopted
// interface keeps its link state only while it holds our key: then it is
// ours from an earlier run, still guarded by the rules that outlived that
// run, and partners keep their sessions across the restart. Anything else
// goes down until the firewall and the peers are in.
func (d *dev) openKernel() error {
	link, err := d.nl.LinkByName(d.cfg.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case err == nil:
		if link.Type() != "wireguard" {
			return fmt.Errorf("interface %s exists and is a %s, not wireguard", d.cfg.Name, link.Type())
		}
		d.mode, d.adopted, d.unadopted = Kernel, true, true
		return nil
	case !errors.As(err, &notFound):
		return fmt.Errorf("look up interface %s: %w", d.cfg.Name, err)
	}
	// One in the host namespace (a release that enforced there, or a move
	// that failed) is taken into the gateway's namespace: its socket stays
	// where it was born, so partners keep their endpoint.
	if link, err := netlink.LinkByName(d.cfg.Name); err == nil && link.Type() == "wireguard" {
		if err := d.cfg.NS.MoveIn(link); err != nil {
			return err
		}
		d.log.Info("moved WireGuard interface into the gateway namespace", "interface", d.cfg.Name, "netns", d.cfg.NS.Name())
		d.mode, d.adopted, d.unadopted = Kernel, true, true
		return nil
	}
	// A kernel device binds its port only when the link comes up, and then
	// a taken port is merely an errno; find it before anything exists.
	if err := checkPortFree(d.cfg.ListenPort); err != nil {
		return err
	}
	// Made here, in the host namespace, and then moved: WireGuard keeps
	// its UDP socket in the namespace an interface was made in.
	attrs := netlink.NewLinkAttrs()
	attrs.Name = d.cfg.Name
	link = &netlink.GenericLink{LinkAttrs: attrs, LinkType: "wireguard"}
	if err := netlink.LinkAdd(link); err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) {
			return ErrNoKernelModule
		}
		return fmt.Errorf("create kernel interface %s: %w", d.cfg.Name, err)
	}
	if err := d.cfg.NS.MoveIn(link); err != nil {
		if derr := netlink.LinkDel(link); derr != nil {
			err = errors.Join(err, derr)
		}
		return err
	}
	d.mode, d.created = Kernel, true
	return nil
}

func (d *dev) openUserspace() error {
	// wireguard-go's verbose log prints handshake details; only errors
	// are worth keeping.
	logger := &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf:   newWGLog(d.log).errorf,
	}
	// The TUN is made inside the gateway's namespace, and so is the
	// netlink socket by which wireguard-go follows its link state. The
	// device's UDP sockets are opened later, when it comes up, by threads
	// of the host namespace.
	var wg *device.Device
	err := d.cfg.NS.Do(func() error {
		t, err := tun.CreateTUN(d.cfg.Name, d.cfg.MTU)
		if err != nil {
			return fmt.Errorf("create TUN %s: %w", d.cfg.Name, err)
		}
		wg = device.NewDevice(nsTUN{t, d.cfg.NS}, conn.NewDefaultBind(), logger)
		return nil
	})
	if err != nil {
		return err
	}
	f, err := ipc.UAPIOpen(d.cfg.Name)
	if err != nil {
		wg.Close()
		return uapiOpenError(d.cfg.Name, err)
	}
	l, err := ipc.UAPIListen(d.cfg.Name, f)
	if err != nil {
		f.Close()
		wg.Close()
		return fmt.Errorf("listen on UAPI socket: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go wg.IpcHandle(c)
		}
	}()
	d.wg, d.uapi, d.mode = wg, l, Userspace
	// A device just made holds no peers: the first sync need not read it.
	d.applied = map[wgtypes.Key]Peer{}
	return nil
}

// configure sets key and port through wgctrl, exactly as for a kernel
// device, then MTU, address and link state through netlink. An adopted
// interface is brought to the same state, and what that changed is logged.
func (d *dev) configure() error {
	// Opened in the namespace, the kernel's netlink socket finds the
	// interface there from any thread.
	err := d.cfg.NS.Do(func() error {
		c, err := wgctrl.New()
		d.client = c
		return err
	})
	if err != nil {
		return fmt.Errorf("open wgctrl: %w", err)
	}
	link, err := d.nl.LinkByName(d.cfg.Name)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", d.cfg.Name, err)
	}
	var changed []string
	if d.adopted {
		if changed, err = d.adopt(link); err != nil {
			return err
		}
	}
	if err := d.assertIdentity(); err != nil {
		return err
	}
	if link.Attrs().MTU != d.cfg.MTU {
		if d.adopted {
			changed = append(changed, fmt.Sprintf("MTU %d -> %d", link.Attrs().MTU, d.cfg.MTU))
		}
		if err := d.nl.LinkSetMTU(link, d.cfg.MTU); err != nil {
			return fmt.Errorf("set MTU of %s: %w", d.cfg.Name, err)
		}
	}
	addrs, err := d.nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", d.cfg.Name, err)
	}
	want := &netlink.Addr{IPNet: &net.IPNet{IP: d.cfg.Address.Addr().AsSlice(), Mask: net.CIDRMask(d.cfg.Address.Bits(), 32)}}
	for _, a := range addrs {
		if a.IPNet.String() == want.IPNet.String() {
			continue
		}
		// Another address would make the gateway answer, and route, for a
		// network that is not the tunnel's.
		if err := d.nl.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove address %s from %s: %w", a.IPNet, d.cfg.Name, err)
		}
		changed = append(changed, "removed address "+a.IPNet.String())
	}
	if err := d.nl.AddrReplace(link, want); err != nil {
		return fmt.Errorf("set address %s on %s: %w", d.cfg.Address, d.cfg.Name, err)
	}
	if _, err := d.disableIPv6(); err != nil {
		return err
	}
	if d.adopted {
		d.log.Info("adopted existing WireGuard interface", "interface", d.cfg.Name, "changed", changed)
	}
	return nil
}

// adopt looks at an interface that existed before Open. Its key and port
// are then set like a new one's; here it takes the link down when the
// interface is not ours, checks the port and says what differs.
func (d *dev) adopt(link netlink.Link) ([]string, error) {
	live, err := d.client.Device(d.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", d.cfg.Name, err)
	}
	var changed []string
	up := link.Attrs().Flags&net.FlagUp != 0
	if live.PrivateKey != d.cfg.PrivateKey {
		changed = append(changed, "private key replaced by the gateway's")
		if up {
			if err := d.nl.LinkSetDown(link); err != nil {
				return nil, fmt.Errorf("take %s down: %w", d.cfg.Name, err)
			}
			up = false
			changed = append(changed, "link taken down until the firewall is in place")
		}
	}
	if live.ListenPort != d.cfg.ListenPort {
		changed = append(changed, fmt.Sprintf("listen port %d -> %d", live.ListenPort, d.cfg.ListenPort))
	}
	// An up link binds a new port at once, a down one only when it comes
	// up, where a taken port would be a bare errno. An up link on our port
	// holds that port itself.
	if !up || live.ListenPort != d.cfg.ListenPort {
		if err := checkPortFree(d.cfg.ListenPort); err != nil {
			return nil, err
		}
	}
	if up {
		changed = append(changed, "link kept up: partners keep their sessions")
	}
	return changed, nil
}

func (d *dev) Up() error {
	link, err := d.nl.LinkByName(d.cfg.Name)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", d.cfg.Name, err)
	}
	if err := d.nl.LinkSetUp(link); err != nil {
		if portInUse(err) {
			return errPortInUse(d.cfg.ListenPort, err)
		}
		return fmt.Errorf("bring %s up: %w", d.cfg.Name, err)
	}
	if d.wg != nil {
		// wireguard-go follows the link's state by itself, but from its
		// own goroutine, where a failure (the listen port taken, say) is
		// only logged and leaves a gateway that answers no one. Bringing
		// it up here as well (a no-op if it is up) returns that error.
		if err := d.wg.Up(); err != nil {
			return fmt.Errorf("start WireGuard on UDP port %d: %w", d.cfg.ListenPort, err)
		}
		// An attempt of wireguard-go's own that failed to bind (the port
		// taken) leaves its port at 0, and the Up above then binds any
		// free port and succeeds: a gateway on a port no partner dials.
		// Setting the port again binds it, or says it is taken. Only
		// then: setting it rebinds, and the answer to a handshake the
		// link's coming up just started would be lost.
		if dv, err := d.client.Device(d.cfg.Name); err != nil || dv.ListenPort != d.cfg.ListenPort {
			if err := d.assertIdentity(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *dev) Down() error {
	link, err := d.nl.LinkByName(d.cfg.Name)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", d.cfg.Name, err)
	}
	if err := d.nl.LinkSetDown(link); err != nil {
		return fmt.Errorf("take %s down: %w", d.cfg.Name, err)
	}
	if d.wg != nil {
		// As in Up: wireguard-go follows the link from a goroutine of its
		// own, and the socket must be closed before this returns.
		if err := d.wg.Down(); err != nil {
			return fmt.Errorf("stop WireGuard on %s: %w", d.cfg.Name, err)
		}
	}
	return nil
}

// kickBatch is how many handshakes a kick starts at once. The kernel
// answers handshakes with cookies, which cost a round trip more, once 512
// wait in its queue; wireguard-go likewise.
const kickBatch = 256

func (d *dev) Kick(peers []Peer) error {
	keepalive := KeepaliveInterval
	for start := 0; start < len(peers); start += kickBatch {
		batch := peers[start:min(start+kickBatch, len(peers))]
		changes := make([]wgtypes.PeerConfig, 0, len(batch))
		for _, p := range batch {
			if p.Endpoint.IsValid() {
				changes = append(changes, wgtypes.PeerConfig{
					PublicKey: p.PublicKey, UpdateOnly: true,
					Endpoint: net.UDPAddrFromAddrPort(p.Endpoint), PersistentKeepaliveInterval: &keepalive,
				})
			}
		}
		if err := d.configurePeers(changes); err != nil {
			return fmt.Errorf("start handshakes: %w", err)
		}
		if start+kickBatch < len(peers) {
			time.Sleep(kickPause)
		}
	}
	return nil
}

// kickPause lets a batch's handshakes complete before the next starts.
const kickPause = 20 * time.Millisecond

func (d *dev) assertIdentity() error {
	port := d.cfg.ListenPort
	err := d.client.ConfigureDevice(d.cfg.Name, wgtypes.Config{PrivateKey: &d.cfg.PrivateKey, ListenPort: &port})
	if portInUse(err) {
		return errPortInUse(port, err)
	}
	if err != nil {
		return fmt.Errorf("configure %s: %w", d.cfg.Name, err)
	}
	return nil
}

// disableIPv6 makes the kernel drop every IPv6 packet that arrives on the
// interface, and reports whether it had to. Partners get IPv4 only, and a
// peer whose AllowedIPs were edited by hand to take IPv6 must reach
// nothing; the namespace's IPv6 rules drop it too. A kernel without IPv6
// has no such file.
func (d *dev) disableIPv6() (fixed bool, err error) {
	err = d.cfg.NS.Do(func() error {
		fixed, err = disableIPv6(d.cfg.Name)
		return err
	})
	return fixed, err
}

func disableIPv6(iface string) (bool, error) {
	path := "/proc/sys/net/ipv6/conf/" + iface + "/disable_ipv6"
	cur, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	if strings.TrimSpace(string(cur)) == "1" {
		return false, nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return false, fmt.Errorf("disable IPv6 on %s: %w", iface, err)
	}
	return true, nil
}

func errPortInUse(port int, err error) error {
	return fmt.Errorf("UDP port %d is already in use by another program; stop it, or choose another port with --listen-port (the Endpoint of every issued config names the port): %w", port, err)
}

// checkPortFree binds the listen port the way a kernel WireGuard device
// does, IPv4 and IPv6 apart, and lets it go. Only "in use" counts: a
// namespace without IPv6 cannot bind [::] and needs no check there.
func checkPortFree(port int) error {
	for _, network := range []string{"udp4", "udp6"} {
		c, err := net.ListenUDP(network, &net.UDPAddr{Port: port})
		if portInUse(err) {
			return errPortInUse(port, err)
		}
		if err == nil {
			c.Close()
		}
	}
	return nil
}

// uapiOpenError says why wireguard-go's control socket could not be made.
// Its sockets are in one directory of the host's mount namespace whatever
// the network namespace, so a second daemon (or a wireguard-go) with an
// interface of the same name holds ours. wireguard-go says so in text
// alone.
func uapiOpenError(name string, err error) error {
	path := "/var/run/wireguard/" + name + ".sock"
	if strings.Contains(err.Error(), "in use") {
		return fmt.Errorf("open UAPI socket %s: %w: another userspace WireGuard interface named %s runs on this host, in whatever network namespace (their control sockets share that directory); give this extranetd another --interface", path, err, name)
	}
	return fmt.Errorf("open UAPI socket %s: %w", path, err)
}

// portInUse tells whether configuring failed because the listen port is
// taken. The kernel says so with an errno; wireguard-go's UAPI only in
// text, which wgctrl passes on as it is.
func portInUse(err error) bool {
	if err == nil {
		return false
	}
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), fmt.Sprintf("errno=-%d", int(syscall.EADDRINUSE)))
}

func (d *dev) Info() Info {
	return Info{Name: d.cfg.Name, Mode: d.mode, PublicKey: d.cfg.PrivateKey.PublicKey(), ListenPort: d.cfg.ListenPort}
}

// SyncPeers removes unwanted peers, adds missing ones and fixes changed
// ones, in one configuration call. It never replaces the whole peer list,
// which would drop every session for a moment.
func (d *dev) SyncPeers(want []Peer, verify bool) (SyncResult, error) {
	var res SyncResult
	have := d.applied
	if verify || have == nil {
		live, err := d.client.Device(d.cfg.Name)
		if err != nil {
			return res, fmt.Errorf("read %s: %w", d.cfg.Name, err)
		}
		if live.PrivateKey != d.cfg.PrivateKey || live.ListenPort != d.cfg.ListenPort {
			d.log.Warn("interface key or port changed by hand; restoring", "interface", d.cfg.Name)
			if err := d.assertIdentity(); err != nil {
				return res, err
			}
			res.Fixed = append(res.Fixed, "interface key or port")
		}
		if fixed, err := d.disableIPv6(); err != nil {
			return res, err
		} else if fixed {
			d.log.Warn("IPv6 was enabled on the interface by hand; disabled again", "interface", d.cfg.Name)
			res.Fixed = append(res.Fixed, "IPv6 enabled on "+d.cfg.Name)
		}
		have = make(map[wgtypes.Key]Peer, len(live.Peers))
		for _, p := range live.Peers {
			hp := Peer{PublicKey: p.PublicKey, PresharedKey: p.PresharedKey}
			if len(p.AllowedIPs) == 1 && isHost(p.AllowedIPs[0]) {
				hp.Address, _ = netip.AddrFromSlice(p.AllowedIPs[0].IP.To4())
			}
			have[p.PublicKey] = hp
		}
	}
	next := make(map[wgtypes.Key]Peer, len(want))
	var changes []wgtypes.PeerConfig
	for _, w := range want {
		next[w.PublicKey] = w
		if pc, ok := peerChange(have, w, &res); ok {
			changes = append(changes, pc)
		}
	}
	for k := range have {
		if _, ok := next[k]; !ok {
			res.Removed++
			changes = append(changes, wgtypes.PeerConfig{PublicKey: k, Remove: true})
		}
	}
	if err := d.configurePeers(changes); err != nil {
		return SyncResult{}, err
	}
	if d.unadopted && res.Removed > 0 {
		d.log.Warn("removed peers of the adopted interface that the state does not hold", "interface", d.cfg.Name, "removed", res.Removed)
	}
	d.applied, d.unadopted = next, false
	return res, nil
}

// UpdatePeers adds or fixes the peers in set and removes those in remove,
// leaving every other peer alone: after a change to a few peers this costs
// a few peers, not a walk over all of them. Unlike SyncPeers it trusts that
// the device holds what was applied last.
func (d *dev) UpdatePeers(set []Peer, remove []wgtypes.Key) (SyncResult, error) {
	var res SyncResult
	var changes []wgtypes.PeerConfig
	for _, w := range set {
		if pc, ok := peerChange(d.applied, w, &res); ok {
			changes = append(changes, pc)
		}
	}
	for _, k := range remove {
		if _, ok := d.applied[k]; ok || d.applied == nil {
			res.Removed++
			changes = append(changes, wgtypes.PeerConfig{PublicKey: k, Remove: true})
		}
	}
	if err := d.configurePeers(changes); err != nil {
		return SyncResult{}, err
	}
	if d.applied != nil {
		for _, k := range remove {
			delete(d.applied, k)
		}
		for _, w := range set {
			d.applied[w.PublicKey] = w
		}
	}
	return res, nil
}

// peerChange returns the configuration that makes the device hold w, given
// that it holds have, and counts it in res; false when nothing is to do.
func peerChange(have map[wgtypes.Key]Peer, w Peer, res *SyncResult) (wgtypes.PeerConfig, bool) {
	h, ok := have[w.PublicKey]
	if ok && h.PresharedKey == w.PresharedKey && h.Address == w.Address {
		return wgtypes.PeerConfig{}, false
	}
	if ok {
		res.Updated++
	} else {
		res.Added++
	}
	psk := w.PresharedKey
	pc := wgtypes.PeerConfig{
		PublicKey:         w.PublicKey,
		PresharedKey:      &psk,
		ReplaceAllowedIPs: true,
		AllowedIPs:        []net.IPNet{{IP: w.Address.AsSlice(), Mask: net.CIDRMask(32, 32)}},
	}
	if !ok && w.Endpoint.IsValid() {
		keepalive := KeepaliveInterval
		pc.Endpoint = net.UDPAddrFromAddrPort(w.Endpoint)
		pc.PersistentKeepaliveInterval = &keepalive
	}
	return pc, true
}

// configurePeers sends peer changes in one call.
func (d *dev) configurePeers(changes []wgtypes.PeerConfig) error {
	if len(changes) == 0 {
		return nil
	}
	// Peers that get a keepalive go last: wireguard-go's UAPI keeps the
	// "keepalive turned on" flag from one peer of a set to the next, so
	// every peer after one would be kicked too and, without an endpoint,
	// retry a handshake it cannot send every 5 s for 90 s (two X25519
	// operations each; TestKeepaliveKicksOnlyItsOwnPeer). Among the last,
	// a kick is what each of them gets anyway.
	slices.SortStableFunc(changes, func(a, b wgtypes.PeerConfig) int {
		return cmp.Compare(keepaliveOn(a), keepaliveOn(b))
	})
	// Before the call: the handshake a keepalive starts can be over before
	// the call returns.
	now := time.Now()
	if err := d.client.ConfigureDevice(d.cfg.Name, wgtypes.Config{Peers: changes}); err != nil {
		// What the device holds now is unknown; the next sync reads it.
		d.applied = nil
		return fmt.Errorf("configure peers of %s: %w", d.cfg.Name, err)
	}
	d.kaMu.Lock()
	defer d.kaMu.Unlock()
	for _, c := range changes {
		switch {
		case c.Remove:
			delete(d.keepalive, c.PublicKey)
		case c.PersistentKeepaliveInterval != nil:
			if d.keepalive == nil {
				d.keepalive = map[wgtypes.Key]time.Time{}
			}
			d.keepalive[c.PublicKey] = now
		}
	}
	return nil
}

// keepaliveOn is 1 for a change that turns a peer's keepalive on.
func keepaliveOn(c wgtypes.PeerConfig) int {
	if c.PersistentKeepaliveInterval != nil && *c.PersistentKeepaliveInterval > 0 {
		return 1
	}
	return 0
}

func (d *dev) EndKeepalives(stats []PeerStats) error {
	d.kaMu.Lock()
	defer d.kaMu.Unlock()
	var changes []wgtypes.PeerConfig
	var done []wgtypes.Key
	off := time.Duration(0)
	for _, s := range stats {
		if since, ok := d.keepalive[s.PublicKey]; ok && s.LastHandshake.After(since) {
			changes = append(changes, wgtypes.PeerConfig{PublicKey: s.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &off})
			done = append(done, s.PublicKey)
		}
	}
	if len(changes) == 0 {
		return nil
	}
	if err := d.client.ConfigureDevice(d.cfg.Name, wgtypes.Config{Peers: changes}); err != nil {
		return fmt.Errorf("end the keepalive of %d peers of %s: %w", len(changes), d.cfg.Name, err)
	}
	for _, k := range done {
		delete(d.keepalive, k)
	}
	return nil
}

func isHost(n net.IPNet) bool {
	ones, bits := n.Mask.Size()
	return ones == 32 && bits == 32 && n.IP.To4() != nil
}

func (d *dev) Stats() ([]PeerStats, error) {
	live, err := d.client.Device(d.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", d.cfg.Name, err)
	}
	out := make([]PeerStats, 0, len(live.Peers))
	for _, p := range live.Peers {
		s := PeerStats{PublicKey: p.PublicKey, LastHandshake: p.LastHandshakeTime, RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes}
		if p.Endpoint != nil {
			s.Endpoint = p.Endpoint.String()
		}
		out = append(out, s)
	}
	return out, nil
}

func (d *dev) Close() error {
	var errs []error
	if d.client != nil {
		errs = append(errs, d.client.Close())
	}
	if d.uapi != nil {
		errs = append(errs, d.uapi.Close())
	}
	if d.wg != nil {
		d.wg.Close()
	}
	return errors.Join(errs...)
}

// Remove deletes the interface in ns and any stale UAPI socket; an absent
// interface is not an error, so cleanup can run twice.
func Remove(ns *gwns.NS, name string) error {
	var errs []error
	if link, err := ns.Netlink().LinkByName(name); err == nil {
		if err := ns.Netlink().LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete interface %s: %w", name, err))
		}
	}
	sock := filepath.Join("/var/run/wireguard", name+".sock")
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", sock, err))
	}
	return errors.Join(errs...)
}

// LoadOrCreateKey returns the gateway's private key, generating it into
// path (mode 0600) on first use. A key file others can read is refused.
func LoadOrCreateKey(path string) (wgtypes.Key, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return createKey(path)
	}
	if err != nil {
		return wgtypes.Key{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return wgtypes.Key{}, fmt.Errorf("%s is readable by others (mode %o); run `chmod 600 %s`", path, fi.Mode().Perm(), path)
	}
	k, err := wgtypes.ParseKey(string(trimSpace(raw)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("%s does not hold a WireGuard key", path)
	}
	return k, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// createKey writes a new key so that path either does not exist or holds a
// whole key: into a temporary file first, then linked into place, which
// also fails rather than overwrite a key another process just made. A
// crash midway leaves at most a stray temporary file, never a torn key.
func createKey(path string) (wgtypes.Key, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return k, err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".gateway.key-*")
	if err != nil {
		return k, fmt.Errorf("create key file in %s: %w", filepath.Dir(path), err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	// CreateTemp makes files 0600 already; say so rather than rely on it.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.WriteString(k.String() + "\n")
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return k, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Link(tmp, path); err != nil {
		return k, fmt.Errorf("create %s: %w", path, err)
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		// The new name must survive a crash too.
		dir.Sync()
		dir.Close()
	}
	return k, nil
}

// nsTUN is a TUN device in a namespace other than the caller's.
// wireguard-go reads the MTU by the interface's name, through a socket
// that must be made where the interface is.
type nsTUN struct {
	tun.Device
	ns *gwns.NS
}

func (t nsTUN) MTU() (int, error) {
	var mtu int
	err := t.ns.Do(func() error {
		var err error
		mtu, err = t.Device.MTU()
		return err
	})
	return mtu, err
}
