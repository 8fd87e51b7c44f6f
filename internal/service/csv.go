package service

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/ipam"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/timespec"
	"github.com/extranetgw/extranet/internal/validate"
	"github.com/extranetgw/extranet/pkg/api"
)

// CSVHeader is the first line of an import or export file. The first eight
// columns are the original format, which still imports; the rest make an
// export lossless (see docs/operations.md, "Importing a partner base").
// Rows are of kind org, group (an access group: org, name and grants, after
// its org's row) or peer (whose group column is empty for the default).
var CSVHeader = []string{"kind", "org", "name", "display_name", "contact", "grants", "public_key", "expires",
	"state", "created_at", "blocks", "address", "preshared_key", "key_origin", "last_handshake", "group"}

// importer checks the rows of one import against the file and the store,
// collecting every problem rather than stopping at the first.
type importer struct {
	s        *Service
	tx       *store.Tx
	now      time.Time
	problems []string
	orgs     map[string]*store.Org
	// Whose each block, address, peer and key already is, in the store or
	// on an earlier row.
	blockOwner map[netip.Prefix]string
	addrRow    map[netip.Addr]int
	peerRow    map[string]int
	keyRow     map[string]int
}

func (im *importer) bad(line int, field, format string, args ...any) {
	im.problems = append(im.problems, fmt.Sprintf("row %d, %s: %s", line, field, fmt.Sprintf(format, args...)))
}

// state reads the state column; empty means active, as in the old format.
func (im *importer) state(r csvRow, allowed ...string) string {
	st := r.get("state")
	if st == "" {
		return api.StateActive
	}
	for _, a := range allowed {
		if st == a {
			return st
		}
	}
	im.bad(r.line, "state", "%q is not one of %s", validate.Printable(st), strings.Join(allowed, ", "))
	return st
}

// instant reads an RFC 3339 column, or returns def when it is empty.
func (im *importer) instant(r csvRow, field string, def *time.Time) *time.Time {
	v := r.get(field)
	if v == "" {
		return def
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		im.bad(r.line, field, "%q is not an RFC 3339 time such as 2026-11-24T09:30:00Z", validate.Printable(v))
		return def
	}
	t = t.UTC()
	return &t
}

func (im *importer) org(r csvRow) *store.Org {
	name := r.get("org")
	if err := validate.Name("org", name); err != nil {
		im.bad(r.line, "org", "%v", err)
		return nil
	}
	if _, err := im.tx.Org(name); err == nil {
		im.bad(r.line, "org", "organisation %q already exists", name)
	}
	if im.orgs[name] != nil {
		im.bad(r.line, "org", "organisation %q appears twice in the file", name)
	}
	o := &store.Org{Name: name, DisplayName: r.get("display_name"), Contact: r.get("contact"),
		State:     im.state(r, api.StateActive, api.StateSuspended, api.StateExpired),
		CreatedAt: *im.instant(r, "created_at", &im.now), UpdatedAt: im.now}
	if err := validate.Text("display name", o.DisplayName, maxDisplayName); err != nil {
		im.bad(r.line, "display_name", "%v", err)
	}
	if err := validate.Text("contact", o.Contact, maxContact); err != nil {
		im.bad(r.line, "contact", "%v", err)
	}
	gs, err := grant.ParseAll(strings.Fields(r.get("grants")))
	if err == nil {
		err = im.s.checkGrants(gs)
	}
	if err != nil {
		im.bad(r.line, "grants", "%v", err)
	}
	o.Grants = gs
	// A contract that has already ended still moves: the reconciler keeps
	// the organisation out of the data plane all the same.
	if e := r.get("expires"); e != "" {
		t, err := timespec.ParseDate(e, im.now)
		if err != nil {
			im.bad(r.line, "expires", "%v", err)
		}
		o.Expires = &t
	}
	plan := im.s.opts.Plan
	for _, f := range strings.Fields(r.get("blocks")) {
		b, err := netip.ParsePrefix(f)
		switch {
		case err != nil || !b.Addr().Is4():
			im.bad(r.line, "blocks", "%q is not an IPv4 prefix such as %s", validate.Printable(f), plan.Block(1))
		case b != b.Masked() || b.Bits() != plan.BlockBits || !plan.Network.Contains(b.Addr()):
			im.bad(r.line, "blocks", "%s is not a /%d block of this gateway's tunnel network %s; leave blocks and addresses empty to get new ones (partners then need new configs)", b, plan.BlockBits, plan.Network)
		case b == plan.Block(0):
			im.bad(r.line, "blocks", "%s is the gateway's own block", b)
		case im.blockOwner[b] != "":
			im.bad(r.line, "blocks", "%s already belongs to organisation %s", b, im.blockOwner[b])
		default:
			im.blockOwner[b] = name
			o.Blocks = append(o.Blocks, b)
		}
	}
	im.orgs[name] = o
	return o
}

// group checks a group row and adds the group to its organisation, which
// must be earlier in the file.
func (im *importer) group(r csvRow) {
	org, name := r.get("org"), r.get("name")
	o := im.orgs[org]
	if o == nil {
		im.bad(r.line, "org", "organisation %q is not earlier in the file; a group row follows its organisation's row (groups of an existing organisation are made with `extranetctl group create`)", validate.Printable(org))
		return
	}
	if err := validate.Name("group", name); err != nil {
		im.bad(r.line, "name", "%v", err)
		return
	}
	if name == store.DefaultGroup || o.Group(name) != nil {
		im.bad(r.line, "name", "organisation %q already has a group %q", org, name)
		return
	}
	// The default group comes with the organisation.
	if len(o.Groups)+1 >= maxGroups {
		im.bad(r.line, "name", "organisation %q would have more than %d groups", org, maxGroups)
		return
	}
	fields := strings.Fields(r.get("grants"))
	if len(fields) > maxGrants {
		im.bad(r.line, "grants", "%d grants; the limit is %d", len(fields), maxGrants)
		return
	}
	gs, err := grant.ParseAll(fields)
	if err == nil {
		err = withinCeiling(o, gs)
	}
	if err != nil {
		im.bad(r.line, "grants", "%v", err)
	}
	o.Groups = append(o.Groups, store.Group{Name: name, Grants: gs, CreatedAt: *im.instant(r, "created_at", &im.now), UpdatedAt: im.now})
}

// importedPeer is a checked peer row. An empty preshared key or an
// invalid address is filled in when the peer is stored.
type importedPeer struct {
	line int
	p    store.Peer
}

func (im *importer) peer(r csvRow) importedPeer {
	p := store.Peer{Org: r.get("org"), Name: r.get("name"), PublicKey: r.get("public_key"),
		State:     im.state(r, api.StateActive, api.StateSuspended, api.StateExpired, api.StateRevoked),
		CreatedAt: *im.instant(r, "created_at", &im.now), UpdatedAt: im.now,
		LastHandshake: im.instant(r, "last_handshake", nil)}
	id := p.Org + "/" + p.Name
	var blocks []netip.Prefix
	if p.Group = r.get("group"); p.Group == "" {
		p.Group = store.DefaultGroup
	}
	o := im.orgs[p.Org]
	if o == nil {
		if stored, err := im.tx.Org(p.Org); err == nil {
			o = stored
			if o.State != api.StateActive {
				im.bad(r.line, "org", "organisation %q is %s on this gateway; resume it before importing peers into it", p.Org, o.State)
			}
		} else {
			im.bad(r.line, "org", "organisation %q is neither in the store nor earlier in the file", validate.Printable(p.Org))
		}
	}
	if o != nil {
		blocks = o.Blocks
		// The default group is made with the organisation, so a new one
		// does not list it yet.
		if p.Group != store.DefaultGroup && o.Group(p.Group) == nil {
			im.bad(r.line, "group", "organisation %q has no group %q; add a group row for it after the organisation's row, or leave the column empty for the default group", p.Org, validate.Printable(p.Group))
		}
	}
	if err := validate.Name("peer", p.Name); err != nil {
		im.bad(r.line, "name", "%v", err)
	} else if _, err := im.tx.Peer(p.Org, p.Name); err == nil {
		im.bad(r.line, "name", "peer %s already exists", id)
	}
	if prev, dup := im.peerRow[id]; dup {
		im.bad(r.line, "name", "peer %s is also on row %d", id, prev)
	}
	im.peerRow[id] = r.line
	if err := im.s.checkSuppliedKey(p.PublicKey); err != nil {
		im.bad(r.line, "public_key", "%v", err)
	} else if owner := im.tx.KeyOwner(p.PublicKey); owner != "" {
		im.bad(r.line, "public_key", "already used by peer %s", owner)
	} else if prev, dup := im.keyRow[p.PublicKey]; dup {
		im.bad(r.line, "public_key", "also on row %d", prev)
	}
	im.keyRow[p.PublicKey] = r.line
	switch p.KeyOrigin = r.get("key_origin"); p.KeyOrigin {
	case "":
		// The old format carried only partner-supplied keys.
		p.KeyOrigin = api.KeySupplied
	case api.KeySupplied, api.KeyGenerated:
	default:
		im.bad(r.line, "key_origin", "%q is not %s or %s", validate.Printable(p.KeyOrigin), api.KeySupplied, api.KeyGenerated)
	}
	if v := r.get("preshared_key"); v != "" {
		if _, err := wgtypes.ParseKey(v); err != nil {
			im.bad(r.line, "preshared_key", "not base64 of 32 bytes; copy it from the export unchanged, or leave it empty for a new one (the partner's config then needs the new one)")
		} else {
			p.PresharedKey = v
		}
	}
	if v := r.get("address"); v != "" {
		p.Address = im.address(r.line, v, p.State, blocks)
	}
	if e := r.get("expires"); e != "" {
		t, err := timespec.ParseDate(e, im.now)
		if err != nil {
			im.bad(r.line, "expires", "%v", err)
		} else if max := im.s.opts.MaxPeerLifetime; max > 0 && t.After(im.now.Add(max)) {
			im.bad(r.line, "expires", "%s is beyond the gateway's maximum peer lifetime of %s; choose %s or earlier", t.Format(time.RFC3339), max, im.now.Add(max).Format(time.RFC3339))
		}
		p.Expires = &t
	} else {
		p.Expires, _ = im.s.expiry("", im.now)
	}
	return importedPeer{line: r.line, p: p}
}

// address checks a peer's address: inside a block of its organisation and
// free. A revoked peer's address is history only; it claims nothing.
func (im *importer) address(line int, v, state string, blocks []netip.Prefix) netip.Addr {
	a, err := netip.ParseAddr(v)
	if err != nil || !a.Is4() {
		im.bad(line, "address", "%q is not an IPv4 address", validate.Printable(v))
		return netip.Addr{}
	}
	if state == api.StateRevoked {
		return a
	}
	inHosts := false
	for _, b := range blocks {
		if first, last := ipam.Hosts(b); b.Contains(a) && a.Compare(first) >= 0 && a.Compare(last) <= 0 {
			inHosts = true
		}
	}
	switch {
	case !inHosts:
		im.bad(line, "address", "%s is not a peer address in the blocks of its organisation (%s); list its block in the org row's blocks column, or leave the address empty for a new one", a, strings.Join(prefixStrings(blocks), " "))
	case im.tx.AddrOwner(a) != "":
		im.bad(line, "address", "%s is already used by peer %s", a, im.tx.AddrOwner(a))
	case im.addrRow[a] != 0:
		im.bad(line, "address", "%s is also on row %d", a, im.addrRow[a])
	default:
		im.addrRow[a] = line
	}
	return a
}

// Import creates organisations and peers from CSV with the state, keys,
// addresses and dates each row gives. Every row is checked first, against
// the file and the store; one bad row imports nothing, and the error names
// every bad row and field.
func (s *Service) Import(ctx context.Context, data string) (api.ImportResult, error) {
	rows, err := readCSV(data)
	if err != nil {
		return api.ImportResult{}, err
	}
	now := s.now()
	actor := Actor(ctx)
	var res api.ImportResult
	err = s.update(ctx, func(tx *store.Tx) error {
		res = api.ImportResult{}
		im := &importer{s: s, tx: tx, now: now, orgs: map[string]*store.Org{}, blockOwner: map[netip.Prefix]string{},
			addrRow: map[netip.Addr]int{}, peerRow: map[string]int{}, keyRow: map[string]int{}}
		if err := tx.Orgs(func(o *store.Org) error {
			for _, b := range o.Blocks {
				im.blockOwner[b] = o.Name
			}
			return nil
		}); err != nil {
			return err
		}
		var orgs []*store.Org
		var peers []importedPeer
		for _, r := range rows {
			switch r.get("kind") {
			case "org":
				if o := im.org(r); o != nil {
					orgs = append(orgs, o)
				}
			case "group":
				im.group(r)
			case "peer":
				peers = append(peers, im.peer(r))
			default:
				im.bad(r.line, "kind", "%q is not org, group or peer", validate.Printable(r.get("kind")))
			}
		}
		if len(im.problems) > 0 {
			return api.Errorf(api.CodeInvalid, "nothing imported; fix these rows:\n  %s", strings.Join(im.problems, "\n  "))
		}
		for _, o := range orgs {
			o.CreatedBy = actor
			if err := addOrg(tx, o, now, actor, "org.import"); err != nil {
				return err
			}
			res.Orgs++
			res.Groups += len(o.Groups)
		}
		// Given addresses are claimed before any is allocated, so an
		// allocation never takes the address a later row holds.
		for _, given := range []bool{true, false} {
			for _, ip := range peers {
				if ip.p.Address.IsValid() != given {
					continue
				}
				if err := s.importPeer(tx, ip, now, actor); err != nil {
					return fmt.Errorf("row %d: %w", ip.line, err)
				}
				res.Peers++
			}
		}
		return nil
	})
	return res, err
}

// importPeer stores one checked peer: burns its key, claims or allocates
// its address unless it is revoked, and records the event.
func (s *Service) importPeer(tx *store.Tx, ip importedPeer, now time.Time, actor string) error {
	p := ip.p
	p.CreatedBy = actor
	if err := claimKey(tx, p.PublicKey, p.ID()); err != nil {
		return err
	}
	if p.PresharedKey == "" && p.State != api.StateRevoked {
		psk, err := wgtypes.GenerateKey()
		if err != nil {
			return fmt.Errorf("generate preshared key: %w", err)
		}
		p.PresharedKey = psk.String()
	}
	if p.State != api.StateRevoked {
		if !p.Address.IsValid() {
			// Re-read: an earlier peer may have cut a new block.
			o, err := tx.Org(p.Org)
			if err != nil {
				return err
			}
			if p.Address, err = s.allocate(tx, o); err != nil {
				return err
			}
		}
		if err := tx.ClaimAddr(p.Address, p.ID()); err != nil {
			return err
		}
	}
	if err := tx.PutPeer(&p); err != nil {
		return err
	}
	return tx.Audit(now, actor, "peer.import", p.ID(), nil, auditPeer(&p))
}

type csvRow struct {
	line   int
	fields map[string]string
}

func (r csvRow) get(k string) string { return strings.TrimSpace(r.fields[k]) }

func readCSV(data string) ([]csvRow, error) {
	cr := csv.NewReader(strings.NewReader(data))
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		return nil, api.Errorf(api.CodeInvalid, "CSV has no header; the first line must be %s", strings.Join(CSVHeader, ","))
	}
	for i := range header {
		header[i] = strings.TrimSpace(strings.ToLower(header[i]))
	}
	known := map[string]bool{}
	for _, h := range CSVHeader {
		known[h] = true
	}
	for _, h := range header {
		if !known[h] {
			return nil, api.Errorf(api.CodeInvalid, "CSV column %q is unknown; the columns are %s", validate.Printable(h), strings.Join(CSVHeader, ","))
		}
	}
	var rows []csvRow
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, api.Errorf(api.CodeInvalid, "CSV: %v", err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) > len(header) {
			return nil, api.Errorf(api.CodeInvalid, "row %d has %d fields; the header has %d", line, len(rec), len(header))
		}
		r := csvRow{line: line, fields: map[string]string{}}
		for i, v := range rec {
			r.fields[header[i]] = v
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// Export writes every organisation and every peer in the import format,
// with what an import needs to recreate them as they are: states, dates,
// blocks, addresses and preshared keys (so partners keep their configs).
// Revoked peers are written too, without their preshared key, so their keys
// stay burnt on the gateway that imports the file.
func (s *Service) Export(ctx context.Context) (string, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(CSVHeader)
	orgs, peers := 0, 0
	err := s.opts.DB.View(func(tx *store.Tx) error {
		if err := tx.Orgs(func(o *store.Org) error {
			orgs++
			if err := w.Write([]string{"org", o.Name, "", o.DisplayName, o.Contact, strings.Join(grantStrings(o.Grants), " "), "", rfc3339(o.Expires),
				o.State, rfc3339(&o.CreatedAt), strings.Join(prefixStrings(o.Blocks), " "), "", "", "", "", ""}); err != nil {
				return err
			}
			for _, g := range o.Groups {
				if g.Name == store.DefaultGroup {
					continue
				}
				if err := w.Write([]string{"group", o.Name, g.Name, "", "", strings.Join(grantStrings(g.Grants), " "), "", "",
					"", rfc3339(&g.CreatedAt), "", "", "", "", "", ""}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Peers("", func(p *store.Peer) error {
			peers++
			psk, addr := p.PresharedKey, ""
			if p.State == api.StateRevoked {
				psk = ""
			}
			if p.Address.IsValid() {
				addr = p.Address.String()
			}
			return w.Write([]string{"peer", p.Org, p.Name, "", "", "", p.PublicKey, rfc3339(p.Expires),
				p.State, rfc3339(&p.CreatedAt), "", addr, psk, p.KeyOrigin, rfc3339(p.LastHandshake), p.Group})
		})
	})
	w.Flush()
	if err == nil {
		err = w.Error()
	}
	if err != nil {
		return "", asErr(err)
	}
	// The file carries every preshared key.
	if err := s.auditRead(ctx, "state.export", "state", map[string]any{"orgs": orgs, "peers": peers}); err != nil {
		return "", err
	}
	return buf.String(), nil
}

func rfc3339(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
