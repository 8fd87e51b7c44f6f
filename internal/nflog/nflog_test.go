package nflog

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/netnstest"
)

func TestParseIPv4(t *testing.T) {
	// 20-byte header, TCP to 10.10.1.2:8443 from 100.64.1.5.
	tcp := []byte{0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 100, 64, 1, 5, 10, 10, 1, 2, 0x9c, 0x40, 0x20, 0xfb}
	var p Packet
	if !parseIPv4(tcp, &p) || p.Proto != 6 || p.Src != netip.MustParseAddr("100.64.1.5") || p.Dst != netip.MustParseAddr("10.10.1.2") || p.DPort != 8443 {
		t.Errorf("tcp: %+v", p)
	}
	// With options (IHL 6): the port is after them.
	opts := append([]byte{0x46, 0, 0, 44, 0, 0, 0, 0, 64, 17, 0, 0, 100, 64, 1, 5, 10, 10, 1, 2, 1, 1, 1, 1}, 0x9c, 0x40, 0, 53)
	p = Packet{}
	if !parseIPv4(opts, &p) || p.Proto != 17 || p.DPort != 53 {
		t.Errorf("udp with options: %+v", p)
	}
	// A later fragment carries no ports.
	frag := append([]byte(nil), tcp...)
	frag[6], frag[7] = 0, 10
	p = Packet{}
	if !parseIPv4(frag, &p) || p.DPort != 0 {
		t.Errorf("fragment: %+v", p)
	}
	// Truncated or not IPv4: refused, never a panic.
	for _, b := range [][]byte{nil, tcp[:19], {0x65, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0x4f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if parseIPv4(b, &Packet{}) {
			t.Errorf("accepted %x", b)
		}
	}
	// Whether it opens something: a SYN does, a SYN-ACK or a retransmitted
	// segment of a killed connection does not; an echo request does, an
	// echo reply does not; UDP always does.
	ipTCP := []byte{0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 100, 64, 1, 5, 10, 10, 1, 2}
	for flags, want := range map[byte]bool{0x02: true, 0x12: false, 0x10: false, 0x18: false, 0x01: false} {
		seg := make([]byte, 20)
		seg[2], seg[3], seg[13] = 0x01, 0xbb, flags
		p = Packet{}
		if !parseIPv4(append(append([]byte(nil), ipTCP...), seg...), &p) || p.Opening != want || p.DPort != 443 {
			t.Errorf("tcp flags %#x: %+v, want opening %v", flags, p, want)
		}
	}
	ipICMP := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 100, 64, 1, 5, 10, 10, 1, 2}
	for typ, want := range map[byte]bool{8: true, 0: false, 3: false} {
		p = Packet{}
		if !parseIPv4(append(append([]byte(nil), ipICMP...), typ, 0, 0, 0), &p) || p.Opening != want || p.DPort != 0 {
			t.Errorf("icmp type %d: %+v, want opening %v", typ, p, want)
		}
	}
	if p = (Packet{}); !parseIPv4(opts, &p) || !p.Opening {
		t.Errorf("udp: %+v", p)
	}
	// A header cut right after itself has no port, and is still a packet.
	p = Packet{}
	if !parseIPv4(tcp[:20], &p) || p.DPort != 0 || p.Proto != 6 {
		t.Errorf("header only: %+v", p)
	}
}

func FuzzParseIPv4(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 100, 64, 1, 5, 10, 10, 1, 2, 0x9c, 0x40, 0x20, 0xfb})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		parseIPv4(b, &p)
	})
}

// TestReadsTheKernelsLog: packets a rule logs in a namespace arrive, with
// the rule's prefix, the destination and its port; a second reader of the
// same group is refused while the first holds it.
func TestReadsTheKernelsLog(t *testing.T) {
	netnstest.Run(t, func(name string) {
		netnstest.Sh(t, "iptables", "-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", "9", "-j", "NFLOG", "--nflog-group", "7", "--nflog-prefix", "not-granted", "--nflog-size", "64")
		r, err := Open(7, 64, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(7, 64, 1<<20); err == nil {
			t.Error("a second reader bound the same group")
		}
		ctx, cancel := context.WithCancel(context.Background())
		var mu sync.Mutex
		var got []Packet
		done := make(chan error, 1)
		go func() {
			done <- r.Listen(ctx, func(p Packet) {
				mu.Lock()
				got = append(got, p)
				mu.Unlock()
			}, func() {})
		}()
		// Unconnected: the port unreachable that answers each packet
		// fails no later write.
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := 0; i < 3; i++ {
			if _, err := c.WriteTo([]byte("payload never kept"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n >= 3 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Listen: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Listen did not return after its context ended")
		}
		mu.Lock()
		defer mu.Unlock()
		want := Packet{Prefix: "not-granted", Proto: 17, Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1"), DPort: 9, Opening: true}
		if len(got) != 3 {
			t.Fatalf("got %d packets, want 3: %+v", len(got), got)
		}
		for _, p := range got {
			if p != want {
				t.Errorf("got %+v, want %+v", p, want)
			}
		}
		// Released: the group can be bound again.
		r2, err := Open(7, 64, 1<<20)
		if err != nil {
			t.Fatalf("the group was not released: %v", err)
		}
		r2.Close()
	})
}
