package service

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/timespec"
	"github.com/extranetgw/extranet/internal/validate"
	"github.com/extranetgw/extranet/pkg/api"
)

// CSVHeader is the first line of an import or export file. An org row
// fills org, display_name, contact, grants (space-separated) and expires;
// a peer row fills org, name, public_key and expires.
var CSVHeader = []string{"kind", "org", "name", "display_name", "contact", "grants", "public_key", "expires"}

// Import creates organisations and peers (with partner-supplied keys) from
// CSV. Every row is checked first, against the file and the store; one bad
// row imports nothing, and the error names every bad row and field.
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
		var problems []string
		bad := func(line int, field, format string, args ...any) {
			problems = append(problems, fmt.Sprintf("row %d, %s: %s", line, field, fmt.Sprintf(format, args...)))
		}
		newOrgs := map[string]*store.Org{}
		seenPeers, seenKeys := map[string]int{}, map[string]int{}
		type peerRow struct {
			line           int
			org, name, pub string
			expires        string
		}
		var peers []peerRow
		for _, r := range rows {
			switch r.get("kind") {
			case "org":
				name := r.get("org")
				if err := validate.Name("org", name); err != nil {
					bad(r.line, "org", "%v", err)
					continue
				}
				if _, err := tx.Org(name); err == nil {
					bad(r.line, "org", "organisation %q already exists", name)
				}
				if newOrgs[name] != nil {
					bad(r.line, "org", "organisation %q appears twice in the file", name)
				}
				o := &store.Org{Name: name, DisplayName: r.get("display_name"), Contact: r.get("contact"), State: api.StateActive,
					CreatedAt: now, CreatedBy: actor, UpdatedAt: now}
				if err := validate.Text("display name", o.DisplayName, maxDisplayName); err != nil {
					bad(r.line, "display_name", "%v", err)
				}
				if err := validate.Text("contact", o.Contact, maxContact); err != nil {
					bad(r.line, "contact", "%v", err)
				}
				gs, err := grant.ParseAll(strings.Fields(r.get("grants")))
				if err == nil {
					err = s.checkGrants(gs)
				}
				if err != nil {
					bad(r.line, "grants", "%v", err)
				}
				o.Grants = gs
				if e := r.get("expires"); e != "" {
					t, err := timespec.ParseExpiry(e, now)
					if err != nil {
						bad(r.line, "expires", "%v", err)
					}
					o.Expires = &t
				}
				newOrgs[name] = o
			case "peer":
				p := peerRow{line: r.line, org: r.get("org"), name: r.get("name"), pub: r.get("public_key"), expires: r.get("expires")}
				if _, err := tx.Org(p.org); err != nil && newOrgs[p.org] == nil {
					bad(r.line, "org", "organisation %q is neither in the store nor earlier in the file", p.org)
				}
				if err := validate.Name("peer", p.name); err != nil {
					bad(r.line, "name", "%v", err)
				} else if _, err := tx.Peer(p.org, p.name); err == nil {
					bad(r.line, "name", "peer %s/%s already exists", p.org, p.name)
				}
				if prev, dup := seenPeers[p.org+"/"+p.name]; dup {
					bad(r.line, "name", "peer %s/%s is also on row %d", p.org, p.name, prev)
				}
				seenPeers[p.org+"/"+p.name] = r.line
				if err := s.checkSuppliedKey(p.pub); err != nil {
					bad(r.line, "public_key", "%v", err)
				} else if owner := tx.KeyOwner(p.pub); owner != "" {
					bad(r.line, "public_key", "already used by peer %s", owner)
				} else if prev, dup := seenKeys[p.pub]; dup {
					bad(r.line, "public_key", "also on row %d", prev)
				}
				seenKeys[p.pub] = r.line
				if p.expires != "" {
					if _, err := s.expiry(p.expires, now); err != nil {
						bad(r.line, "expires", "%v", err)
					}
				}
				peers = append(peers, p)
			default:
				bad(r.line, "kind", "%q is not org or peer", validate.Printable(r.get("kind")))
			}
		}
		if len(problems) > 0 {
			return api.Errorf(api.CodeInvalid, "nothing imported; fix these rows:\n  %s", strings.Join(problems, "\n  "))
		}
		for _, r := range rows {
			if r.get("kind") != "org" {
				continue
			}
			if err := addOrg(tx, newOrgs[r.get("org")], now, actor); err != nil {
				return err
			}
			res.Orgs++
		}
		for _, p := range peers {
			o, err := tx.Org(p.org)
			if err != nil {
				return err
			}
			if o.State != api.StateActive {
				return api.Errorf(api.CodeConflict, "row %d: organisation %q is %s; nothing imported", p.line, p.org, o.State)
			}
			keys, err := s.newKeys(p.pub)
			if err != nil {
				return err
			}
			exp, _ := s.expiry(p.expires, now)
			if _, err := s.addPeer(tx, o, p.name, keys, exp, now, actor); err != nil {
				return err
			}
			res.Peers++
		}
		return nil
	})
	return res, err
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

// Export writes every organisation and every peer that is not revoked in
// the import format, so a partner base can move between gateways.
func (s *Service) Export(ctx context.Context) (string, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(CSVHeader)
	err := s.opts.DB.View(func(tx *store.Tx) error {
		if err := tx.Orgs(func(o *store.Org) error {
			exp := ""
			if o.Expires != nil {
				exp = o.Expires.Format(time.RFC3339)
			}
			return w.Write([]string{"org", o.Name, "", o.DisplayName, o.Contact, strings.Join(grantStrings(o.Grants), " "), "", exp})
		}); err != nil {
			return err
		}
		return tx.Peers("", func(p *store.Peer) error {
			if p.State == api.StateRevoked {
				return nil
			}
			exp := ""
			if p.Expires != nil {
				exp = p.Expires.Format(time.RFC3339)
			}
			return w.Write([]string{"peer", p.Org, p.Name, "", "", "", p.PublicKey, exp})
		})
	})
	w.Flush()
	return buf.String(), asErr(err)
}
