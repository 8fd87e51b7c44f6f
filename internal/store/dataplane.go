package store

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// DataplanePeer is what the reconciler needs of a peer.
type DataplanePeer struct {
	Org, Name     string
	State         string
	PublicKey     [32]byte
	PresharedKey  [32]byte
	Address       netip.Addr
	Group         string
	Expires       time.Time // zero: none
	LastHandshake time.Time // zero: never
	Endpoint      string
}

var stateCodes = []string{"", "active", "suspended", "expired", "revoked"}

func stateCode(s string) byte {
	for i, c := range stateCodes {
		if c == s {
			return byte(i)
		}
	}
	return 0
}

func unixOrZero(t *time.Time) int64 {
	if t == nil || t.IsZero() {
		return 0
	}
	return t.Unix()
}

// encodeDataplane lays out: state (1), public key (32), preshared key (32),
// address (4), expires (8), last handshake (8), group name length (1),
// group name, endpoint (rest). A key that is not valid base64 of 32 bytes
// is stored as zeros, which the reconciler refuses to configure. Group
// names are at most 63 bytes (validate.Name); one of more than 255, which
// the layout cannot hold, is stored empty, which no group matches, so its
// peer gets nothing.
func encodeDataplane(p *Peer) []byte {
	group := p.Group
	if len(group) > 255 {
		group = ""
	}
	b := make([]byte, 0, 86+len(group)+len(p.Endpoint))
	b = append(b, stateCode(p.State))
	b = append(b, key32(p.PublicKey)...)
	b = append(b, key32(p.PresharedKey)...)
	var a [4]byte
	if p.Address.Is4() {
		a = p.Address.As4()
	}
	b = append(b, a[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(unixOrZero(p.Expires)))
	b = binary.BigEndian.AppendUint64(b, uint64(unixOrZero(p.LastHandshake)))
	b = append(b, byte(len(group)))
	b = append(b, group...)
	return append(b, p.Endpoint...)
}

func key32(s string) []byte {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != 32 {
		return make([]byte, 32)
	}
	return raw
}

var errShortRecord = errors.New("short dataplane record")

func decodeDataplane(k, v []byte) (DataplanePeer, error) {
	var p DataplanePeer
	if len(v) < 86 || len(v) < 86+int(v[85]) {
		return p, errShortRecord
	}
	p.Org, p.Name, _ = strings.Cut(string(k), "/")
	if int(v[0]) < len(stateCodes) {
		p.State = stateCodes[v[0]]
	}
	copy(p.PublicKey[:], v[1:33])
	copy(p.PresharedKey[:], v[33:65])
	p.Address = netip.AddrFrom4([4]byte(v[65:69]))
	if e := int64(binary.BigEndian.Uint64(v[69:77])); e != 0 {
		p.Expires = time.Unix(e, 0).UTC()
	}
	if h := int64(binary.BigEndian.Uint64(v[77:85])); h != 0 {
		p.LastHandshake = time.Unix(h, 0).UTC()
	}
	end := 86 + int(v[85])
	p.Group = string(v[86:end])
	p.Endpoint = string(v[end:])
	return p, nil
}

// DataplanePeers calls fn for every peer's data-plane record, in ORG/NAME order.
func (t *Tx) DataplanePeers(fn func(*DataplanePeer) error) error {
	return t.bucket(bucketDataplane).ForEach(func(k, v []byte) error {
		p, err := decodeDataplane(k, v)
		if err != nil {
			return err
		}
		return fn(&p)
	})
}

// DataplanePeer returns the data-plane record of ORG/NAME, or ErrNotFound.
func (t *Tx) DataplanePeer(id string) (*DataplanePeer, error) {
	v := t.bucket(bucketDataplane).Get([]byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	p, err := decodeDataplane([]byte(id), v)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", id, err)
	}
	return &p, nil
}
