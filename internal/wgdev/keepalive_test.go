package wgdev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/netnstest"
)

// countingHandler counts log records whose message contains a text.
type countingHandler struct {
	text string
	n    *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.text) {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// TestKeepaliveKicksOnlyItsOwnPeer: a peer added with an endpoint gets a
// keepalive, which starts its handshake at once; the peers added in the
// same call without one must not. wireguard-go's UAPI keeps the "keepalive
// turned on" flag from one peer to the next of a set, so every peer after
// such a peer started handshakes it could not send (no endpoint), every 5
// seconds for 90, at two X25519 operations each: at 10,000 peers, up to
// half of the daemon's CPU after a start (issue #27's profile).
func TestKeepaliveKicksOnlyItsOwnPeer(t *testing.T) {
	netnstest.Run(t, func(string) {
		b := make([]byte, 3)
		rand.Read(b)
		var failed atomic.Int64
		key, _ := wgtypes.GeneratePrivateKey()
		d, err := Open(Config{
			Name: "wgka" + hex.EncodeToString(b), Mode: Userspace, PrivateKey: key,
			Address: netip.MustParsePrefix("100.64.0.1/16"),
			Logger:  slog.New(countingHandler{text: "no known endpoint", n: &failed}),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.Up(); err != nil {
			t.Fatal(err)
		}
		var want []Peer
		for i := 0; i < 50; i++ {
			k, _ := wgtypes.GeneratePrivateKey()
			p := Peer{PublicKey: k.PublicKey(), PresharedKey: key, Address: netip.AddrFrom4([4]byte{100, 64, 1, byte(i + 1)})}
			if i == 0 {
				// Seen recently: it gets its keepalive, toward a port
				// that discards it.
				p.Endpoint = netip.MustParseAddrPort("127.0.0.1:9")
			}
			want = append(want, p)
		}
		if _, err := d.SyncPeers(want, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if n := failed.Load(); n > 0 {
			t.Errorf("%d handshakes of peers without an endpoint were started by one peer's keepalive", n)
		}
	})
}
