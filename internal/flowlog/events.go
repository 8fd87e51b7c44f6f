package flowlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// ended is what a DESTROY event says of a flow.
type ended struct {
	id          uint32
	tuple       Tuple
	start, stop time.Time
	out, in     conntrack.Counter
	// tcpState is conntrack's TCP state at the end, when tcp says the
	// event carried one.
	tcpState uint8
	tcp      bool
}

// eventSocket reads conntrack's DESTROY events. A general netlink library
// costs a peek, a buffer and a dozen objects per event, which at 6,500
// flows a second kept the daemon's garbage collector busy (a third of its
// time, besides the tunnel it also carries in userspace): this one takes
// up to eventBatch datagrams per system call (recvmmsg) into buffers made
// once, and parses them in place, allocating nothing per event. The
// protocol is ctnetlink's (linux/netfilter/nfnetlink_conntrack.h).
type eventSocket struct {
	f   *os.File
	raw syscall.RawConn
	buf []byte // eventBatch slots of eventSlot bytes
	iov [eventBatch]unix.Iovec
	hdr [eventBatch]unix.Mmsghdr
	// got datagrams came with the last call, of which the first taken
	// are parsed; pending are the messages of the one being parsed.
	got, taken int
	pending    []byte
}

const (
	eventBatch = 64
	// eventSlot holds a datagram: an event is a few hundred bytes.
	eventSlot = 4 << 10
)

// errLost says the kernel dropped events: the socket's buffer was full.
// The socket goes on.
var errLost = errors.New("conntrack events lost: the socket's buffer overflowed")

const (
	nfnlgrpConntrackDestroy = 3        // NFNLGRP_CONNTRACK_DESTROY
	msgCTDelete             = 1<<8 | 2 // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE

	ctaTupleOrig     = 1
	ctaProtoInfo     = 4
	ctaCountersOrig  = 9
	ctaCountersReply = 10
	ctaID            = 12
	ctaTimestamp     = 20

	ctaTupleIP    = 1
	ctaTupleProto = 2
	ctaIPv4Src    = 1
	ctaIPv4Dst    = 2
	ctaIPv6Src    = 3
	ctaIPv6Dst    = 4
	ctaProtoNum   = 1
	ctaProtoSrc   = 2
	ctaProtoDst   = 3

	ctaProtoInfoTCP      = 1
	ctaProtoInfoTCPState = 1
	ctaCountersPackets   = 1
	ctaCountersBytes     = 2
	ctaTimestampStart    = 1
	ctaTimestampStop     = 2
)

// openEvents makes the socket, in the calling thread's namespace, with a
// receive buffer of bufSize bytes.
func openEvents(bufSize int) (*eventSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("conntrack event socket: %w", err)
	}
	// FORCE: past net.core.rmem_max, which is 208 KiB by default. It
	// needs CAP_NET_ADMIN of the host; without it, what rmem_max allows.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufSize); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, bufSize); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("conntrack event socket buffer: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (nfnlgrpConntrackDestroy - 1)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen to conntrack events: %w", err)
	}
	// Non-blocking, so the runtime's poller waits for it and Close ends
	// a read in progress.
	s := &eventSocket{f: os.NewFile(uintptr(fd), "conntrack events"), buf: make([]byte, eventBatch*eventSlot)}
	if s.raw, err = s.f.SyscallConn(); err != nil {
		s.f.Close()
		return nil, fmt.Errorf("conntrack event socket: %w", err)
	}
	for i := range s.hdr {
		s.iov[i].Base = &s.buf[i*eventSlot]
		s.iov[i].SetLen(eventSlot)
		s.hdr[i].Hdr.Iov = &s.iov[i]
		s.hdr[i].Hdr.SetIovlen(1)
	}
	return s, nil
}

func (s *eventSocket) Close() error { return s.f.Close() }

// next fills e with the next flow that ended; errLost when events were
// lost, after which the socket goes on; any other error ends it.
func (s *eventSocket) next(e *ended) error {
	for {
		for len(s.pending) > 0 {
			msg, rest, ok := nextMessage(s.pending)
			s.pending = rest
			if ok && parseEnded(msg, e) {
				return nil
			}
		}
		if s.taken < s.got {
			h := &s.hdr[s.taken]
			// A datagram larger than its slot (MSG_TRUNC) is no
			// conntrack event of ours.
			if h.Hdr.Flags&unix.MSG_TRUNC == 0 {
				s.pending = s.buf[s.taken*eventSlot : s.taken*eventSlot+int(min(h.Len, eventSlot))]
			}
			s.taken++
			continue
		}
		if err := s.receive(); err != nil {
			return err
		}
	}
}

// buffered says whether next has an event to parse without a call to
// the kernel.
func (s *eventSocket) buffered() bool { return len(s.pending) > 0 || s.taken < s.got }

// eventPause is how long the reader lets events gather after a call
// that did not fill a batch. Under load events come one by one, and
// waking for each cost more than parsing it (half the reader's time at
// 6,000 flows a second went to the poller): after a pause they come by
// the batch. A record is late by as much, and the socket's 4 MiB hold
// what 100,000 flows a second send meanwhile.
const eventPause = 10 * time.Millisecond

// receive takes the datagrams waiting, up to eventBatch, waiting for one
// if none is.
func (s *eventSocket) receive() error {
	if s.got > 0 && s.got < eventBatch {
		time.Sleep(eventPause)
	}
	var n uintptr
	var errno syscall.Errno
	err := s.raw.Read(func(fd uintptr) bool {
		n, _, errno = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.hdr[0])), eventBatch, unix.MSG_DONTWAIT, 0, 0)
		return errno != unix.EAGAIN
	})
	switch {
	case err != nil:
		return err
	case errno == unix.ENOBUFS:
		// The buffer is full: read on at once, no pause.
		s.got, s.taken = 0, 0
		return errLost
	case errno != 0:
		return fmt.Errorf("receive conntrack events: %w", errno)
	}
	s.got, s.taken = int(n), 0
	return nil
}

// nextMessage splits the first netlink message off b: its type and
// payload in msg (the header's 16 bytes stripped to type and body).
func nextMessage(b []byte) (msg message, rest []byte, ok bool) {
	if len(b) < unix.NLMSG_HDRLEN {
		return message{}, nil, false
	}
	l := int(binary.NativeEndian.Uint32(b[0:4]))
	if l < unix.NLMSG_HDRLEN || l > len(b) {
		return message{}, nil, false
	}
	msg = message{typ: binary.NativeEndian.Uint16(b[4:6]), body: b[unix.NLMSG_HDRLEN:l]}
	adv := min((l+3)&^3, len(b))
	return msg, b[adv:], true
}

type message struct {
	typ  uint16
	body []byte
}

// parseEnded fills e from a DESTROY message, and says whether it was one
// with an original tuple.
func parseEnded(m message, e *ended) bool {
	// The nfgenmsg (family, version, resource id) comes first.
	if m.typ != msgCTDelete || len(m.body) < 4 {
		return false
	}
	*e = ended{}
	var src, dst netip.Addr
	var proto uint8
	var sport, dport uint16
	for a := (attrs{b: m.body[4:]}); a.next(); {
		switch a.typ {
		case ctaTupleOrig:
			for t := (attrs{b: a.v}); t.next(); {
				switch t.typ {
				case ctaTupleIP:
					for ip := (attrs{b: t.v}); ip.next(); {
						switch {
						case (ip.typ == ctaIPv4Src || ip.typ == ctaIPv6Src) && addrOK(ip.v):
							src, _ = netip.AddrFromSlice(ip.v)
						case (ip.typ == ctaIPv4Dst || ip.typ == ctaIPv6Dst) && addrOK(ip.v):
							dst, _ = netip.AddrFromSlice(ip.v)
						}
					}
				case ctaTupleProto:
					for p := (attrs{b: t.v}); p.next(); {
						switch {
						case p.typ == ctaProtoNum && len(p.v) >= 1:
							proto = p.v[0]
						case p.typ == ctaProtoSrc && len(p.v) >= 2:
							sport = binary.BigEndian.Uint16(p.v)
						case p.typ == ctaProtoDst && len(p.v) >= 2:
							dport = binary.BigEndian.Uint16(p.v)
						}
					}
				}
			}
		case ctaProtoInfo:
			for pi := (attrs{b: a.v}); pi.next(); {
				if pi.typ != ctaProtoInfoTCP {
					continue
				}
				for tcp := (attrs{b: pi.v}); tcp.next(); {
					if tcp.typ == ctaProtoInfoTCPState && len(tcp.v) >= 1 {
						e.tcpState, e.tcp = tcp.v[0], true
					}
				}
			}
		case ctaCountersOrig:
			e.out = counter(a.v)
		case ctaCountersReply:
			e.in = counter(a.v)
		case ctaID:
			if len(a.v) >= 4 {
				e.id = binary.BigEndian.Uint32(a.v)
			}
		case ctaTimestamp:
			for ts := (attrs{b: a.v}); ts.next(); {
				if len(ts.v) < 8 {
					continue
				}
				at := time.Unix(0, int64(binary.BigEndian.Uint64(ts.v)))
				switch ts.typ {
				case ctaTimestampStart:
					e.start = at
				case ctaTimestampStop:
					e.stop = at
				}
			}
		}
	}
	if !src.IsValid() || !dst.IsValid() {
		return false
	}
	e.tuple = Tuple{Proto: proto, Src: src.Unmap(), Dst: dst.Unmap()}
	// Ports as the sweep names them: for TCP and UDP only.
	if proto == 6 || proto == 17 {
		e.tuple.SPort, e.tuple.DPort = sport, dport
	}
	return true
}

func addrOK(b []byte) bool { return len(b) == 4 || len(b) == 16 }

func counter(b []byte) conntrack.Counter {
	var c conntrack.Counter
	for a := (attrs{b: b}); a.next(); {
		if len(a.v) < 8 {
			continue
		}
		switch a.typ {
		case ctaCountersPackets:
			c.Packets = binary.BigEndian.Uint64(a.v)
		case ctaCountersBytes:
			c.Bytes = binary.BigEndian.Uint64(a.v)
		}
	}
	return c
}

// attrs walks netlink attributes in place: typ (the nested and byte-order
// flags cleared) and value v of each, until b ends or a length is wrong.
type attrs struct {
	b   []byte
	typ uint16
	v   []byte
}

func (a *attrs) next() bool {
	if len(a.b) < 4 {
		return false
	}
	l := int(binary.NativeEndian.Uint16(a.b[0:2]))
	if l < 4 || l > len(a.b) {
		a.b = nil
		return false
	}
	a.typ = binary.NativeEndian.Uint16(a.b[2:4]) & 0x3fff
	a.v = a.b[4:l]
	a.b = a.b[min((l+3)&^3, len(a.b)):]
	return true
}
