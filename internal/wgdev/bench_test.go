package wgdev

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/netnstest"
)

// BenchmarkUserspacePeers measures embedded wireguard-go alone holding
// 10,000 peers: how long adding them takes (two X25519 operations per peer
// in its NewPeer) and how much memory they keep resident once the device is
// up (per-peer queues, two goroutines each). These are the floor under the
// daemon's cold start and resident memory in userspace mode. A channel TUN
// and channel binds stand in for the kernel: no root, no sockets.
//
//	go test -run '^$' -bench UserspacePeers -benchtime 1x ./internal/wgdev
func BenchmarkUserspacePeers(b *testing.B) {
	const n = 10000
	var uapi strings.Builder
	priv, _ := wgtypes.GeneratePrivateKey()
	fmt.Fprintf(&uapi, "private_key=%x\n", priv[:])
	for i := 0; i < n; i++ {
		k, _ := wgtypes.GeneratePrivateKey()
		pub := k.PublicKey()
		fmt.Fprintf(&uapi, "public_key=%x\npreshared_key=%x\nallowed_ip=100.64.%d.%d/32\n", pub[:], priv[:], i/250, 1+i%250)
	}
	for b.Loop() {
		// Hand back what an earlier round freed, so the growth is this
		// round's.
		debug.FreeOSMemory()
		rss0 := residentMB(b)
		tun := tuntest.NewChannelTUN()
		d := device.NewDevice(tun.TUN(), bindtest.NewChannelBinds()[0], device.NewLogger(device.LogLevelSilent, ""))
		start := time.Now()
		if err := d.IpcSet(uapi.String()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-to-add")
		if err := d.Up(); err != nil {
			b.Fatal(err)
		}
		// Let every peer's goroutines start.
		time.Sleep(time.Second)
		runtime.GC()
		b.ReportMetric(residentMB(b)-rss0, "MB-resident")
		d.Close()
	}
}

func residentMB(b *testing.B) float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// BenchmarkKick10k: how long a promotion's kick takes to start the
// handshake with 10,000 partners (userspace, in a namespace of its own;
// the handshakes go to a discard port on loopback). Batches of kickBatch
// with kickPause between them keep the partners' answers under the 512
// queued handshakes past which WireGuard answers with cookies.
func BenchmarkKick10k(b *testing.B) {
	const n = 10000
	netnstest.Run(b, func(string) {
		key, _ := wgtypes.GeneratePrivateKey()
		d, err := Open(Config{Name: "wgkick0", Mode: Userspace, PrivateKey: key, Address: netip.MustParsePrefix("100.64.0.1/16")})
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		peers := make([]Peer, n)
		for i := range peers {
			k, _ := wgtypes.GeneratePrivateKey()
			peers[i] = Peer{PublicKey: k.PublicKey(), PresharedKey: key, Address: netip.AddrFrom4([4]byte{100, 64, byte(1 + i/250), byte(1 + i%250)})}
		}
		if _, err := d.SyncPeers(peers, false); err != nil {
			b.Fatal(err)
		}
		if err := d.Up(); err != nil {
			b.Fatal(err)
		}
		for i := range peers {
			peers[i].Endpoint = netip.MustParseAddrPort("127.0.0.1:9")
		}
		for b.Loop() {
			start := time.Now()
			if err := d.Kick(peers); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-to-kick")
		}
	})
}
