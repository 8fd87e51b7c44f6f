// Package nflog reads the packets the firewall sends to a netlink log group
// (iptables' NFLOG target): the refusals of the gateway namespace, each with
// the rule's prefix. It keeps addresses, protocol and destination port of a
// packet and nothing of its payload.
//
// No NFLOG library is in the module registry here (florianl/go-nflog is
// not served), and the protocol is small: one configuration message binds
// the group and sets the copy range, and each packet then arrives as one
// message of attributes (linux/netfilter/nfnetlink_log.h). The socket and
// the attribute codec are ti-mo/netfilter's, as for the flow log.
package nflog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// Packet is what is kept of a logged packet.
type Packet struct {
	// Prefix is the logging rule's --nflog-prefix.
	Prefix   string
	Proto    uint8
	Src, Dst netip.Addr
	// DPort is the destination port of TCP, UDP, SCTP and UDP-Lite; 0
	// for other protocols and for fragments after the first.
	DPort uint16
	// Opening: the packet tries to open something (a TCP SYN without ACK,
	// a UDP datagram, an ICMP echo request, any other protocol), rather
	// than carry on a connection the firewall no longer lets through (a
	// retransmission after an ungrant killed it, say).
	Opening bool
}

// The nfnetlink_log protocol (linux/netfilter/nfnetlink_log.h).
const (
	msgPacket = 0 // NFULNL_MSG_PACKET
	msgConfig = 1 // NFULNL_MSG_CONFIG

	attrCfgCmd     = 1 // NFULA_CFG_CMD
	attrCfgMode    = 2 // NFULA_CFG_MODE
	attrCfgNLBuf   = 3 // NFULA_CFG_NLBUFSIZ
	attrCfgTimeout = 4 // NFULA_CFG_TIMEOUT
	attrCfgQThresh = 5 // NFULA_CFG_QTHRESH

	cmdBind   = 1 // NFULNL_CFG_CMD_BIND
	cmdUnbind = 2 // NFULNL_CFG_CMD_UNBIND

	copyPacket = 2 // NFULNL_COPY_PACKET

	attrPayload = 9  // NFULA_PAYLOAD
	attrPrefix  = 10 // NFULA_PREFIX
)

// configMessage binds group (or, with cmdUnbind, releases it) and sets how
// packets are copied: the first copyRange bytes, batched in the kernel for
// at most a tenth of a second or 64 packets, whichever comes first, so a
// flood costs a message per batch rather than per packet.
func configMessage(group uint16, cmd uint8, copyRange uint32) (netlink.Message, error) {
	attrs := []netfilter.Attribute{{Type: attrCfgCmd, Data: []byte{cmd}}}
	if cmd == cmdBind {
		mode := make([]byte, 6) // struct nfulnl_msg_config_mode: __be32 range, __u8 mode, __u8 pad
		binary.BigEndian.PutUint32(mode, copyRange)
		mode[4] = copyPacket
		attrs = append(attrs,
			netfilter.Attribute{Type: attrCfgMode, Data: mode},
			netfilter.Attribute{Type: attrCfgNLBuf, Data: netfilter.Uint32Bytes(64 << 10)},
			netfilter.Attribute{Type: attrCfgTimeout, Data: netfilter.Uint32Bytes(10)}, // hundredths of a second
			netfilter.Attribute{Type: attrCfgQThresh, Data: netfilter.Uint32Bytes(64)},
		)
	}
	return netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysULOG, MessageType: msgConfig,
		Family: netfilter.ProtoUnspec, ResourceID: group,
		Flags: netlink.Request | netlink.Acknowledge,
	}, attrs)
}

// decode reads one packet message; ok is false for a message that is not
// a logged IPv4 packet.
func decode(m netlink.Message) (p Packet, ok bool) {
	h, attrs, err := netfilter.UnmarshalNetlink(m)
	if err != nil || h.SubsystemID != netfilter.NFSubsysULOG || h.MessageType != msgPacket {
		return Packet{}, false
	}
	var payload []byte
	for _, a := range attrs {
		switch a.Type {
		case attrPrefix:
			p.Prefix = strings.TrimRight(string(a.Data), "\x00")
		case attrPayload:
			payload = a.Data
		}
	}
	return p, parseIPv4(payload, &p)
}

// parseIPv4 fills p's addresses, protocol and port from the packet's
// headers.
func parseIPv4(b []byte, p *Packet) bool {
	if len(b) < 20 || b[0]>>4 != 4 {
		return false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return false
	}
	p.Proto = b[9]
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	fragOffset := binary.BigEndian.Uint16(b[6:8]) & 0x1fff
	l4 := b[ihl:]
	if fragOffset != 0 {
		l4 = nil // a later fragment: no header of its protocol
	}
	switch p.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP, unix.IPPROTO_UDPLITE:
		if len(l4) >= 4 {
			p.DPort = binary.BigEndian.Uint16(l4[2:4])
		}
	}
	switch p.Proto {
	case unix.IPPROTO_TCP:
		const syn, ack = 0x02, 0x10
		p.Opening = len(l4) >= 14 && l4[13]&(syn|ack) == syn
	case unix.IPPROTO_ICMP:
		const echoRequest = 8
		p.Opening = len(l4) >= 1 && l4[0] == echoRequest
	default:
		p.Opening = true
	}
	return true
}

// Reader is a bound log group's socket.
type Reader struct {
	c     *netlink.Conn
	group uint16
}

// Open binds group on a new socket, which must be made in the namespace
// whose rules log to it: call it inside that namespace. readBuffer is the
// socket's receive buffer; copyRange how many bytes of each packet come.
// The group has one reader at a time: a second bind fails with EBUSY.
func Open(group uint16, copyRange uint32, readBuffer int) (*Reader, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nflog: open a netfilter socket: %w", err)
	}
	if err := c.SetReadBuffer(readBuffer); err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: socket buffer: %w", err)
	}
	m, err := configMessage(group, cmdBind, copyRange)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: bind group %d: %w", group, err)
	}
	// Not Execute: packets may arrive between the bind and its
	// acknowledgement, which Execute would take for a wrong answer. An
	// error comes back from Receive as an error, an acknowledgement as
	// the only message of its kind.
	sent, err := c.Send(m)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: bind group %d: %w", group, err)
	}
	r := &Reader{c: c, group: group}
	// The kernel answers at once; a deadline keeps a socket that somehow
	// never does from holding up the caller.
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: bind group %d: %w", group, err)
	}
	for tries := 0; tries < 1000; tries++ {
		msgs, err := c.Receive()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("nflog: bind group %d: %w", group, err)
		}
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == sent.Header.Sequence {
				if err := c.SetReadDeadline(time.Time{}); err != nil {
					c.Close()
					return nil, fmt.Errorf("nflog: bind group %d: %w", group, err)
				}
				return r, nil
			}
		}
	}
	c.Close()
	return nil, fmt.Errorf("nflog: bind group %d: no acknowledgement", group)
}

// ErrLost is what Read returns when the socket's buffer overflowed: the
// packets logged meanwhile are gone, and reading goes on.
var ErrLost = errors.New("nflog: the socket's buffer overflowed; packets were lost")

// Read calls fn for each packet of the next batch the kernel sent. It
// returns ErrLost after an overflow and another error when the socket
// failed or was closed.
func (r *Reader) Read(fn func(Packet)) error {
	msgs, err := r.c.Receive()
	if err != nil {
		if errors.Is(err, unix.ENOBUFS) {
			return ErrLost
		}
		return err
	}
	for _, m := range msgs {
		if p, ok := decode(m); ok {
			fn(p)
		}
	}
	return nil
}

// Close releases the group and the socket; a Read blocked on it returns.
func (r *Reader) Close() error {
	// The kernel releases the group with the socket; unbinding first only
	// makes it prompt.
	if m, err := configMessage(r.group, cmdUnbind, 0); err == nil {
		m.Header.Flags = netlink.Request
		_, _ = r.c.Send(m)
	}
	return r.c.Close()
}

// Listen reads until ctx ends, calling fn for each packet, and onLost after
// each overflow; it closes the reader when it returns.
func (r *Reader) Listen(ctx context.Context, fn func(Packet), onLost func()) error {
	// Closing the socket is what ends a blocked Read.
	stop := context.AfterFunc(ctx, func() { r.c.Close() })
	defer func() {
		if stop() {
			r.Close()
		}
	}()
	for {
		err := r.Read(fn)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrLost):
			onLost()
		case err != nil:
			return err
		}
	}
}
