// Package store keeps the gateway's desired state in one bbolt file:
// organisations, peers, their indexes and the hash-chained audit log. Every
// change is one transaction that includes its audit event, so an error leaves
// the file exactly as it was.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/pkg/api"
)

// SchemaVersion is the layout this code reads and writes.
const SchemaVersion = 5

var (
	bucketMeta  = []byte("meta")
	bucketOrgs  = []byte("orgs")
	bucketPeers = []byte("peers")
	// bucketKeys maps every public key ever used to its peer, revoked ones
	// included, so a revoked key can never come back.
	bucketKeys = []byte("keys")
	// bucketAddrs maps the 4-byte tunnel addresses in use to their peer;
	// big-endian keys keep a block's addresses contiguous for a cursor scan.
	bucketAddrs = []byte("addrs")
	bucketAudit = []byte("audit")
	// bucketDataplane mirrors each peer's data-plane fields in a compact
	// binary form (see dataplane.go), so the reconciler reads 10,000 peers
	// in about a millisecond instead of decoding their JSON.
	bucketDataplane = []byte("dataplane")
	// bucketRoles maps SUBJECT NUL ROLE to its assignment.
	bucketRoles = []byte("roles")

	keySchema    = []byte("schema")
	keyNextOrgID = []byte("next_org_id")
	// keyNextGroupID hands out group ids, which name a group's chain and
	// sets; like organisation ids they are never reused.
	keyNextGroupID = []byte("next_group_id")
	keyPlan        = []byte("address_plan")
	keyAuditHead   = []byte("audit_head")
	// keyAuditAnchor is the hash the oldest kept audit event links to.
	keyAuditAnchor = []byte("audit_anchor")
)

// Org is an organisation as stored.
type Org struct {
	ID          uint32     `json:"id"`
	Name        string     `json:"name"`
	DisplayName string     `json:"display_name,omitempty"`
	Contact     string     `json:"contact,omitempty"`
	State       string     `json:"state"`
	Expires     *time.Time `json:"expires,omitempty"`
	// Grants are the ceiling: what the organisation may be given at all.
	Grants []grant.Grant  `json:"grants"`
	Blocks []netip.Prefix `json:"blocks"`
	// Groups are the organisation's access groups, DefaultGroup first.
	Groups    []Group   `json:"groups"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	UpdatedAt time.Time `json:"updated_at"`
}

// DefaultGroup is the group every organisation has. Its grants are the
// organisation's own, whatever they are, so an organisation that never
// made a group works as before groups existed.
const DefaultGroup = "default"

// Group is an access group of an organisation: its peers reach the group's
// grants, which lie within the organisation's (the ceiling).
type Group struct {
	// ID is small, stable and never reused, like an organisation's.
	ID   uint32 `json:"id"`
	Name string `json:"name"`
	// Grants are unused for DefaultGroup, which has the organisation's.
	Grants    []grant.Grant `json:"grants,omitempty"`
	CreatedAt time.Time     `json:"created_at"`
	CreatedBy string        `json:"created_by"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// Group returns the named group, or nil.
func (o *Org) Group(name string) *Group {
	for i := range o.Groups {
		if o.Groups[i].Name == name {
			return &o.Groups[i]
		}
	}
	return nil
}

// GroupGrants is what the peers of group g may reach.
func (o *Org) GroupGrants(g *Group) []grant.Grant {
	if g.Name == DefaultGroup {
		return o.Grants
	}
	return g.Grants
}

// Peer is a peer as stored. PresharedKey is secret: it leaves the store only
// toward the WireGuard device and into a rendered client config.
type Peer struct {
	Org          string     `json:"org"`
	Name         string     `json:"name"`
	PublicKey    string     `json:"public_key"`
	PresharedKey string     `json:"preshared_key"`
	Address      netip.Addr `json:"address"`
	// Group is the name of the peer's access group in its organisation.
	Group         string     `json:"group"`
	State         string     `json:"state"`
	KeyOrigin     string     `json:"key_origin"`
	Expires       *time.Time `json:"expires,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	CreatedBy     string     `json:"created_by"`
	UpdatedAt     time.Time  `json:"updated_at"`
	LastHandshake *time.Time `json:"last_handshake,omitempty"`
	// ClocksFrom is when an admin last resumed or extended the peer: its
	// idle and unused clocks run from there if that is later, so a
	// decision to keep it is not undone by the next expire.
	ClocksFrom *time.Time `json:"clocks_from,omitempty"`
	Endpoint   string     `json:"endpoint,omitempty"`
	// Suspension says why the gateway suspended the peer by itself (a
	// scan); "" when an admin did, or the peer is not suspended.
	Suspension string `json:"suspension,omitempty"`
	RxBytes    int64  `json:"rx_bytes"`
	TxBytes    int64  `json:"tx_bytes"`
	// DevRx and DevTx are the device counters last seen; the device resets
	// them when a peer is re-created, and the totals above must not go back.
	DevRx int64 `json:"dev_rx,omitempty"`
	DevTx int64 `json:"dev_tx,omitempty"`
}

// ID is the ORG/NAME form.
func (p *Peer) ID() string { return p.Org + "/" + p.Name }

// ErrLocked means another process holds the database.
var ErrLocked = errors.New("state database is locked by another process")

// DB is the open state file.
type DB struct {
	bolt *bolt.DB
	path string
	// repl, when set, keeps the cluster's state this file is a copy of.
	repl Replicator
	// advanced is closed when ApplyReplicated moves the copy forward.
	mu       sync.Mutex
	advanced chan struct{}
}

// Open opens or creates the state file with mode 0600 and runs migrations.
// It gives up after timeout when another process holds the file, rather
// than hanging.
func Open(path string, timeout time.Duration) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w (is another extranetd running on this state directory?)", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// bbolt keeps the mode of an existing file; a copied-in file must not
	// stay readable by others.
	if err := os.Chmod(path, 0o600); err != nil {
		b.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	// Requests that arrive within 2 ms share one commit and one fsync; the
	// default 10 ms added more latency than it saved.
	b.MaxBatchDelay = 2 * time.Millisecond
	db := &DB{bolt: b, path: path}
	if err := db.migrate(); err != nil {
		b.Close()
		return nil, err
	}
	return db, nil
}

// migrations[i] upgrades schema i to i+1. Version 0 is an empty file.
var migrations = []func(*bolt.Tx) error{
	func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketOrgs, bucketPeers, bucketKeys, bucketAddrs, bucketAudit} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	},
	// 1 → 2: the dataplane mirror of every peer.
	func(tx *bolt.Tx) error {
		dp, err := tx.CreateBucketIfNotExists(bucketDataplane)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketPeers).ForEach(func(k, v []byte) error {
			var p Peer
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("decode peer %s: %w", k, err)
			}
			return dp.Put(k, encodeDataplane(&p))
		})
	},
	// 2 → 3: role assignments (empty until the daemon's first start
	// bootstraps them, see service.BootstrapRoles).
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketRoles)
		return err
	},
	// 3 → 4: access groups. Every organisation gets its default group,
	// which has the organisation's grants, and every peer joins it: what
	// each peer reaches stays as it was.
	func(tx *bolt.Tx) error {
		t := &Tx{tx: tx}
		var orgs []*Org
		if err := t.Orgs(func(o *Org) error {
			orgs = append(orgs, o)
			return nil
		}); err != nil {
			return err
		}
		for _, o := range orgs {
			id, err := t.NextGroupID()
			if err != nil {
				return err
			}
			o.Groups = []Group{{ID: id, Name: DefaultGroup, CreatedAt: o.CreatedAt, CreatedBy: o.CreatedBy, UpdatedAt: o.CreatedAt}}
			if err := t.PutOrg(o); err != nil {
				return err
			}
		}
		var peers []*Peer
		if err := t.Peers("", func(p *Peer) error {
			peers = append(peers, p)
			return nil
		}); err != nil {
			return err
		}
		for _, p := range peers {
			p.Group = DefaultGroup
			if err := t.PutPeer(p); err != nil {
				return err
			}
		}
		return nil
	},
	// 4 → 5: partner self-enrollment: invites, their token hashes and
	// the requests made through them.
	func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketInvites, bucketInviteTokens, bucketRequests} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	},
}

func (db *DB) migrate() error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		v := 0
		if m := tx.Bucket(bucketMeta); m != nil {
			if raw := m.Get(keySchema); raw != nil {
				v = int(binary.BigEndian.Uint32(raw))
			}
		}
		if v > SchemaVersion {
			return fmt.Errorf("state file schema %d is newer than this extranetd understands (%d); run a newer extranetd", v, SchemaVersion)
		}
		for ; v < SchemaVersion; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, be32(SchemaVersion))
	})
}

// Close closes the file.
func (db *DB) Close() error { return db.bolt.Close() }

// Path is the file's path.
func (db *DB) Path() string { return db.path }

// View runs fn in a read-only transaction.
func (db *DB) View(fn func(*Tx) error) error {
	return db.bolt.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Update runs fn in a read-write transaction. Concurrent callers are
// coalesced into one commit (one fsync), and each returns only once its
// change is durable. fn may run more than once, so it must only touch the
// transaction and its own results.
func (db *DB) Update(fn func(*Tx) error) error {
	_, err := db.Change(fn)
	return err
}

// Change is Update that also reports what fn changed, so the data plane
// can follow by applying only that.
func (db *DB) Change(fn func(*Tx) error) (Changes, error) {
	return db.change(0, fn)
}

// UpdateUnder is Update for what only the active gateway of a cluster
// records (what its device saw of partners): the write commits only while
// the role is still held under epoch, so a gateway that lost it without
// knowing yet cannot overwrite what the new active records. 0 is no
// condition, as on a single gateway, where it is Update.
func (db *DB) UpdateUnder(epoch int64, fn func(*Tx) error) error {
	_, err := db.change(epoch, fn)
	return err
}

func (db *DB) change(epoch int64, fn func(*Tx) error) (Changes, error) {
	if db.repl != nil {
		return db.changeReplicated(epoch, fn)
	}
	var ch Changes
	err := db.bolt.Batch(func(btx *bolt.Tx) error {
		// A batch that fails is retried call by call: keep only what the
		// last run of fn did.
		tx := &Tx{tx: btx}
		err := fn(tx)
		ch = tx.changes()
		return err
	})
	if err != nil {
		return Changes{}, err
	}
	return ch, nil
}

// Changes says what a transaction wrote that the data plane depends on.
type Changes struct {
	// Peers are the ORG/NAME of peers written or deleted.
	Peers []string
	// Orgs is set when any organisation was written or deleted.
	Orgs bool
}

// Empty reports whether nothing the data plane depends on changed.
func (c Changes) Empty() bool { return len(c.Peers) == 0 && !c.Orgs }

func (t *Tx) changes() Changes {
	ch := Changes{Orgs: t.orgsChanged}
	for id := range t.peersChanged {
		ch.Peers = append(ch.Peers, id)
	}
	return ch
}

func (t *Tx) peerChanged(id string) {
	if t.peersChanged == nil {
		t.peersChanged = map[string]bool{}
	}
	t.peersChanged[id] = true
}

// Bolt exposes the underlying handle for backups and checks.
func (db *DB) Bolt() *bolt.DB { return db.bolt }

// Tx is a transaction with typed accessors.
type Tx struct {
	tx *bolt.Tx
	// What this transaction wrote that the data plane depends on.
	peersChanged map[string]bool
	orgsChanged  bool
	// recording is set when the state is replicated: every write is then
	// kept in writes, for the cluster (see Replicator).
	recording bool
	writes    []Write
}

// ErrNotFound is returned by getters for absent records.
var ErrNotFound = errors.New("not found")

func getJSON(b bucket, key []byte, v any) error {
	raw := b.Get(key)
	if raw == nil {
		return ErrNotFound
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode %s/%s: %w", "record", key, err)
	}
	return nil
}

func putJSON(b bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

// Org returns the named organisation or ErrNotFound.
func (t *Tx) Org(name string) (*Org, error) {
	var o Org
	if err := getJSON(t.bucket(bucketOrgs), []byte(name), &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// PutOrg writes an organisation.
func (t *Tx) PutOrg(o *Org) error {
	t.orgsChanged = true
	return putJSON(t.bucket(bucketOrgs), []byte(o.Name), o)
}

// DeleteOrg removes an organisation record.
func (t *Tx) DeleteOrg(name string) error {
	t.orgsChanged = true
	return t.bucket(bucketOrgs).Delete([]byte(name))
}

// Orgs calls fn for every organisation in name order; fn returning an error stops the walk.
func (t *Tx) Orgs(fn func(*Org) error) error {
	return t.bucket(bucketOrgs).ForEach(func(_, v []byte) error {
		var o Org
		if err := json.Unmarshal(v, &o); err != nil {
			return fmt.Errorf("decode org: %w", err)
		}
		return fn(&o)
	})
}

// NextOrgID hands out organisation IDs; they are never reused.
func (t *Tx) NextOrgID() (uint32, error) {
	m := t.bucket(bucketMeta)
	id := uint32(1)
	if raw := m.Get(keyNextOrgID); raw != nil {
		id = binary.BigEndian.Uint32(raw)
	}
	if err := m.Put(keyNextOrgID, be32(id+1)); err != nil {
		return 0, err
	}
	return id, nil
}

// NextGroupID hands out group IDs; they are never reused.
func (t *Tx) NextGroupID() (uint32, error) {
	m := t.bucket(bucketMeta)
	id := uint32(1)
	if raw := m.Get(keyNextGroupID); raw != nil {
		id = binary.BigEndian.Uint32(raw)
	}
	if err := m.Put(keyNextGroupID, be32(id+1)); err != nil {
		return 0, err
	}
	return id, nil
}

// AddressPlan is how the tunnel network is cut into organisation blocks.
// It is kept with the state because every block and address in it was cut
// by that plan.
type AddressPlan struct {
	Network   netip.Prefix `json:"network"`
	BlockBits int          `json:"block_bits"`
}

// AddressPlan returns the stored plan, or ErrNotFound in a state made
// before plans were stored.
func (t *Tx) AddressPlan() (AddressPlan, error) {
	var p AddressPlan
	err := getJSON(t.bucket(bucketMeta), keyPlan, &p)
	return p, err
}

// SetAddressPlan stores the plan.
func (t *Tx) SetAddressPlan(p AddressPlan) error {
	return putJSON(t.bucket(bucketMeta), keyPlan, p)
}

func peerKey(org, name string) []byte { return []byte(org + "/" + name) }

// Peer returns ORG/NAME or ErrNotFound.
func (t *Tx) Peer(org, name string) (*Peer, error) {
	var p Peer
	if err := getJSON(t.bucket(bucketPeers), peerKey(org, name), &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// PutPeer writes a peer record. Indexes are the caller's (ClaimKey, ClaimAddr).
func (t *Tx) PutPeer(p *Peer) error {
	k := peerKey(p.Org, p.Name)
	t.peerChanged(string(k))
	if err := putJSON(t.bucket(bucketPeers), k, p); err != nil {
		return err
	}
	return t.bucket(bucketDataplane).Put(k, encodeDataplane(p))
}

// DeletePeer removes a peer record and its address; its key stays claimed.
func (t *Tx) DeletePeer(p *Peer) error {
	t.peerChanged(p.ID())
	if err := t.ReleaseAddr(p.Address); err != nil {
		return err
	}
	if err := t.bucket(bucketDataplane).Delete(peerKey(p.Org, p.Name)); err != nil {
		return err
	}
	return t.bucket(bucketPeers).Delete(peerKey(p.Org, p.Name))
}

// Peers calls fn for every peer, or only those of org when org is not
// empty, in ORG/NAME order.
func (t *Tx) Peers(org string, fn func(*Peer) error) error {
	return scanJSON(t.bucket(bucketPeers).Cursor(), org, func(v []byte) error {
		var p Peer
		if err := json.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("decode peer: %w", err)
		}
		return fn(&p)
	})
}

// scanJSON calls fn with every value of a bucket keyed ORG/…, or only
// those of org when org is not empty, in key order.
func scanJSON(c *bolt.Cursor, org string, fn func(v []byte) error) error {
	var prefix []byte
	k, v := c.First()
	if org != "" {
		prefix = []byte(org + "/")
		k, v = c.Seek(prefix)
	}
	for ; k != nil; k, v = c.Next() {
		if prefix != nil && !hasPrefix(k, prefix) {
			break
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}

func hasPrefix(b, p []byte) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == string(p)
}

// KeyOwner returns the ORG/NAME that ever used a public key, or "".
func (t *Tx) KeyOwner(pub string) string {
	return string(t.bucket(bucketKeys).Get([]byte(pub)))
}

// ClaimKey records that a public key belongs to a peer, for good.
func (t *Tx) ClaimKey(pub, peerID string) error {
	return t.bucket(bucketKeys).Put([]byte(pub), []byte(peerID))
}

// AddrOwner returns the ORG/NAME holding an address, or "".
func (t *Tx) AddrOwner(a netip.Addr) string {
	k := a.As4()
	return string(t.bucket(bucketAddrs).Get(k[:]))
}

// ClaimAddr records an address as taken.
func (t *Tx) ClaimAddr(a netip.Addr, peerID string) error {
	k := a.As4()
	return t.bucket(bucketAddrs).Put(k[:], []byte(peerID))
}

// ReleaseAddr returns an address to the pool.
func (t *Tx) ReleaseAddr(a netip.Addr) error {
	if !a.IsValid() {
		return nil
	}
	k := a.As4()
	return t.bucket(bucketAddrs).Delete(k[:])
}

// FreeAddr returns the lowest free address between first and last
// (inclusive), walking the taken ones with a cursor, or false when full.
func (t *Tx) FreeAddr(first, last netip.Addr) (netip.Addr, bool) {
	c := t.bucket(bucketAddrs).Cursor()
	want := first
	fk := first.As4()
	for k, _ := c.Seek(fk[:]); len(k) == 4; k, _ = c.Next() {
		taken := netip.AddrFrom4([4]byte(k))
		if taken.Compare(last) > 0 {
			break
		}
		if taken != want {
			break
		}
		want = want.Next()
	}
	if want.Compare(last) > 0 {
		return netip.Addr{}, false
	}
	return want, true
}

func be32(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// InForce reports whether an organisation or a peer in state, with its
// date expires (nil or zero: none), gives access at now: it is active and
// its date has not come, whether or not the expire job has marked it yet.
// The data plane, the enrollment page's config delivery and the start's
// report of what ended all decide by it.
func InForce(state string, expires *time.Time, now time.Time) bool {
	return state == api.StateActive && (expires == nil || expires.IsZero() || expires.After(now))
}
