package flowlog

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"
)

// attr encodes one netlink attribute, padded, its value as given.
func attr(typ uint16, v ...[]byte) []byte {
	var val []byte
	for _, b := range v {
		val = append(val, b...)
	}
	b := make([]byte, 4, 4+len(val)+3)
	binary.NativeEndian.PutUint16(b[0:2], uint16(4+len(val)))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// destroyMessage is a DESTROY event as the kernel sends it: a netlink
// header, the nfgenmsg, then the flow's attributes.
func destroyMessage(start time.Time) []byte {
	const nested = 0x8000
	body := append([]byte{2, 0, 0, 0}, // AF_INET, version 0, res_id
		append(attr(ctaTupleOrig|nested,
			attr(ctaTupleIP|nested, attr(ctaIPv4Src, []byte{100, 64, 1, 5}), attr(ctaIPv4Dst, []byte{10, 10, 1, 2})),
			attr(ctaTupleProto|nested, attr(ctaProtoNum, []byte{6}), attr(ctaProtoSrc, be16(40000)), attr(ctaProtoDst, be16(22)))),
			append(attr(ctaProtoInfo|nested, attr(ctaProtoInfoTCP|nested, attr(ctaProtoInfoTCPState, []byte{tcpTimeWait}))),
				append(attr(ctaCountersOrig|nested, attr(ctaCountersPackets, be64(12)), attr(ctaCountersBytes, be64(3400))),
					append(attr(ctaCountersReply|nested, attr(ctaCountersPackets, be64(9)), attr(ctaCountersBytes, be64(9000))),
						append(attr(ctaID, be32(77)),
							attr(ctaTimestamp|nested, attr(ctaTimestampStart, be64(uint64(start.UnixNano()))), attr(ctaTimestampStop, be64(uint64(start.Add(time.Minute).UnixNano()))))...)...)...)...)...)...)
	hdr := make([]byte, 16)
	binary.NativeEndian.PutUint32(hdr[0:4], uint32(16+len(body)))
	binary.NativeEndian.PutUint16(hdr[4:6], msgCTDelete)
	return append(hdr, body...)
}

// TestParseEnded: a DESTROY message parses in place into what the record
// needs, without allocating; messages of other kinds are skipped.
func TestParseEnded(t *testing.T) {
	start := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	raw := destroyMessage(start)
	msg, rest, ok := nextMessage(raw)
	if !ok || len(rest) != 0 {
		t.Fatalf("nextMessage: %v, %d bytes left", ok, len(rest))
	}
	var e ended
	if !parseEnded(msg, &e) {
		t.Fatal("a DESTROY message did not parse")
	}
	want := ended{id: 77, tuple: Tuple{Proto: 6, Src: netip.MustParseAddr("100.64.1.5"), Dst: netip.MustParseAddr("10.10.1.2"), SPort: 40000, DPort: 22},
		start: start, stop: start.Add(time.Minute), out: conntrack.Counter{Packets: 12, Bytes: 3400}, in: conntrack.Counter{Packets: 9, Bytes: 9000},
		tcpState: tcpTimeWait, tcp: true}
	if !e.start.Equal(want.start) || !e.stop.Equal(want.stop) {
		t.Errorf("times %v %v, want %v %v", e.start, e.stop, want.start, want.stop)
	}
	e.start, e.stop, want.start, want.stop = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if e != want {
		t.Errorf("parsed\n%+v\nwant\n%+v", e, want)
	}
	if n := testing.AllocsPerRun(100, func() { parseEnded(msg, &e) }); n != 0 {
		t.Errorf("parsing an event allocates %v times; want none", n)
	}
	other := append([]byte(nil), raw...)
	binary.NativeEndian.PutUint16(other[4:6], 1<<8) // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW (0)
	if msg, _, _ := nextMessage(other); parseEnded(msg, &e) {
		t.Error("a NEW message parsed as a flow that ended")
	}
}

// FuzzParseEnded: whatever the bytes, parsing neither panics nor reads
// past them.
func FuzzParseEnded(f *testing.F) {
	f.Add(destroyMessage(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e ended
		for rest := b; len(rest) > 0; {
			msg, r, ok := nextMessage(rest)
			if !ok {
				break
			}
			parseEnded(msg, &e)
			rest = r
		}
	})
}
