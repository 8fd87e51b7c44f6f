package service

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/extranetgw/extranet/pkg/wgconfig"
)

// keyPair is what a new or rotated peer gets. priv is empty when the
// partner supplied its public key.
type keyPair struct {
	pub, priv, psk, origin string
}

func (s *Service) newKeys(supplied string) (keyPair, error) {
	psk, err := wgtypes.GenerateKey()
	if err != nil {
		return keyPair{}, fmt.Errorf("generate preshared key: %w", err)
	}
	if supplied != "" {
		if err := s.checkSuppliedKey(supplied); err != nil {
			return keyPair{}, err
		}
		return keyPair{pub: supplied, psk: psk.String(), origin: api.KeySupplied}, nil
	}
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return keyPair{}, fmt.Errorf("generate key pair: %w", err)
	}
	return keyPair{pub: priv.PublicKey().String(), priv: priv.String(), psk: psk.String(), origin: api.KeyGenerated}, nil
}

// checkSuppliedKey refuses a partner's public key that is malformed or is
// the gateway's own: WireGuard silently ignores a peer with the interface's
// key, so the partner would never connect and every drift check would
// "repair" the missing peer again.
func (s *Service) checkSuppliedKey(pub string) error {
	if _, err := validate.PublicKey(pub); err != nil {
		return invalid(err)
	}
	if pub == s.opts.GatewayPublicKey {
		return api.Errorf(api.CodeInvalid, "public key %s is the gateway's own public key, not a device's; give the public key of the partner's device (the WireGuard app shows it; on Linux `wg pubkey < private.key`)", pub)
	}
	return nil
}

func claimKey(tx *store.Tx, pub, id string) error {
	if owner := tx.KeyOwner(pub); owner != "" {
		// A sponsor of one organisation must not learn another's peers.
		ownerOrg, _, _ := strings.Cut(owner, "/")
		if org, _, _ := strings.Cut(id, "/"); ownerOrg != org {
			owner = "of another organisation"
		}
		return api.Errorf(api.CodeConflict, "public key %s is already used by peer %s; every peer needs its own key, and a revoked key can never be reused", pub, owner)
	}
	return tx.ClaimKey(pub, id)
}

func (s *Service) expiry(in string, now time.Time) (*time.Time, error) {
	if in == "" {
		if s.opts.MaxPeerLifetime > 0 {
			t := now.Add(s.opts.MaxPeerLifetime)
			return &t, nil
		}
		return nil, nil
	}
	t, err := timespec.ParseExpiry(in, now)
	if err != nil {
		return nil, invalid(err)
	}
	if max := s.opts.MaxPeerLifetime; max > 0 && t.After(now.Add(max)) {
		return nil, api.Errorf(api.CodeInvalid, "expiry %s is beyond the gateway's maximum peer lifetime of %s; choose %s or earlier", t.Format(time.RFC3339), max, now.Add(max).Format(time.RFC3339))
	}
	return &t, nil
}

// allocate picks a free address in the organisation's blocks, cutting a new
// block from the tunnel network when they are full.
func (s *Service) allocate(tx *store.Tx, o *store.Org) (netip.Addr, error) {
	for _, b := range o.Blocks {
		first, last := ipam.Hosts(b)
		if a, ok := tx.FreeAddr(first, last); ok {
			return a, nil
		}
	}
	var used []netip.Prefix
	if err := tx.Orgs(func(other *store.Org) error {
		used = append(used, other.Blocks...)
		return nil
	}); err != nil {
		return netip.Addr{}, err
	}
	b, err := s.opts.Plan.NextBlock(used)
	if errors.Is(err, ipam.ErrExhausted) {
		return netip.Addr{}, &api.Error{Code: api.CodeExhausted, Message: err.Error()}
	}
	if err != nil {
		return netip.Addr{}, err
	}
	o.Blocks = append(o.Blocks, b)
	if err := tx.PutOrg(o); err != nil {
		return netip.Addr{}, err
	}
	first, last := ipam.Hosts(b)
	a, ok := tx.FreeAddr(first, last)
	if !ok {
		return netip.Addr{}, fmt.Errorf("new block %s has no free address", b)
	}
	return a, nil
}

// addPeer creates an active peer of o in the current transaction: burns
// its key, allocates its address and records the event.
func (s *Service) addPeer(tx *store.Tx, o *store.Org, name, group string, keys keyPair, exp *time.Time, now time.Time, actor string) (*store.Peer, error) {
	id := o.Name + "/" + name
	if err := claimKey(tx, keys.pub, id); err != nil {
		return nil, err
	}
	addr, err := s.allocate(tx, o)
	if err != nil {
		return nil, err
	}
	if err := tx.ClaimAddr(addr, id); err != nil {
		return nil, err
	}
	p := &store.Peer{
		Org: o.Name, Name: name,
		PublicKey: keys.pub, PresharedKey: keys.psk,
		Address: addr, Group: group, State: api.StateActive, KeyOrigin: keys.origin,
		Expires: exp, CreatedAt: now, CreatedBy: actor, UpdatedAt: now,
	}
	if err := tx.PutPeer(p); err != nil {
		return nil, err
	}
	return p, tx.Audit(now, actor, "peer.issue", id, nil, auditPeer(p))
}

// IssuePeer creates a peer in an active organisation and returns its client
// config. A generated private key is in that config and nowhere else.
func (s *Service) IssuePeer(ctx context.Context, org string, req api.IssuePeerRequest) (api.IssuedPeer, error) {
	if err := validate.Name("org", org); err != nil {
		return api.IssuedPeer{}, invalid(err)
	}
	if err := validate.Name("peer", req.Name); err != nil {
		return api.IssuedPeer{}, invalid(err)
	}
	group := req.Group
	if group == "" {
		group = store.DefaultGroup
	}
	if err := validate.Name("group", group); err != nil {
		return api.IssuedPeer{}, invalid(err)
	}
	if s.opts.Endpoint == "" {
		return api.IssuedPeer{}, api.Errorf(api.CodeConflict, "the gateway has no public endpoint, so a partner could not dial it; start extranetd with --endpoint HOST:PORT (or set endpoint: in its config file)")
	}
	now := s.now()
	exp, err := s.expiry(req.Expires, now)
	if err != nil {
		return api.IssuedPeer{}, err
	}
	keys, err := s.newKeys(req.PublicKey)
	if err != nil {
		return api.IssuedPeer{}, err
	}
	var p *store.Peer
	var grants []grant.Grant
	err = s.update(ctx, func(tx *store.Tx) error {
		o, err := getOrg(tx, org)
		if err != nil {
			return err
		}
		if o.State != api.StateActive {
			return api.Errorf(api.CodeConflict, "organisation %q is %s; resume it before issuing peers", org, o.State)
		}
		if old, err := tx.Peer(org, req.Name); err == nil {
			if old.State != api.StateRevoked {
				return api.Errorf(api.CodeConflict, "peer %s/%s already exists (%s); use `extranetctl peer rotate %s/%s` for new keys or choose another name", org, req.Name, old.State, org, req.Name)
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		g, err := getGroup(o, group)
		if err != nil {
			return err
		}
		if p, err = s.addPeer(tx, o, req.Name, group, keys, exp, now, Actor(ctx)); err != nil {
			return err
		}
		grants = o.GroupGrants(g)
		return nil
	})
	// A peer saved but not yet in force still gets its config: the private
	// key exists nowhere else.
	warning := notApplied(err)
	if err != nil && warning == "" {
		return api.IssuedPeer{}, err
	}
	cfg, err := s.render(p, keys.priv, grants)
	if err != nil {
		return api.IssuedPeer{}, err
	}
	return api.IssuedPeer{Peer: peerToAPI(p), Config: cfg, Warning: warning}, nil
}

// render writes the wg-quick config of a peer. priv is empty when the
// partner keeps its own key, and when a config is printed again.
func (s *Service) render(p *store.Peer, priv string, grants []grant.Grant) (string, error) {
	missing := wgconfig.KeyOnDevice
	if p.KeyOrigin == api.KeyGenerated {
		missing = wgconfig.KeyInFirstConfig
	}
	return s.renderConfig(p, priv, grants, missing)
}

// renderConfig is render, saying where a missing private key is.
func (s *Service) renderConfig(p *store.Peer, priv string, grants []grant.Grant, missing wgconfig.MissingKey) (string, error) {
	cfg := wgconfig.Config{
		Interface: wgconfig.Interface{
			PrivateKey: priv,
			MissingKey: missing,
			Address:    []netip.Prefix{netip.PrefixFrom(p.Address, 32)},
			DNS:        s.opts.DNS,
			MTU:        s.opts.MTU,
		},
		Peer: wgconfig.Peer{
			PublicKey:           s.opts.GatewayPublicKey,
			PresharedKey:        p.PresharedKey,
			Endpoint:            s.opts.Endpoint,
			AllowedIPs:          grant.Prefixes(grants),
			PersistentKeepalive: 25,
		},
	}
	out, err := cfg.Render()
	if err != nil {
		return "", fmt.Errorf("render config of %s: %w", p.ID(), err)
	}
	return string(out), nil
}

// PeerConfig renders a peer's config again, without its private key, which
// was shown once at issue. AllowedIPs follow its group's current grants.
func (s *Service) PeerConfig(ctx context.Context, org, name string) (api.PeerConfig, error) {
	var p *store.Peer
	var grants []grant.Grant
	err := s.view(org, name, func(tx *store.Tx, peer *store.Peer) error {
		if peer.State == api.StateRevoked {
			return api.Errorf(api.CodeConflict, "peer %s is revoked; issue a new peer instead", peer.ID())
		}
		o, err := getOrg(tx, org)
		if err != nil {
			return err
		}
		p, grants = peer, peerGrants(o, peer)
		return nil
	})
	if err != nil {
		return api.PeerConfig{}, err
	}
	cfg, err := s.render(p, "", grants)
	if err != nil {
		return api.PeerConfig{}, asErr(err)
	}
	// The config carries the preshared key: who read it is on record
	// before it leaves, or it does not leave.
	if err := s.auditRead(ctx, "peer.config", p.ID(), auditPeer(p)); err != nil {
		return api.PeerConfig{}, err
	}
	return api.PeerConfig{Config: cfg}, nil
}

func (s *Service) view(org, name string, fn func(*store.Tx, *store.Peer) error) error {
	if err := validate.Name("org", org); err != nil {
		return invalid(err)
	}
	if err := validate.Name("peer", name); err != nil {
		return invalid(err)
	}
	return asErr(s.opts.DB.View(func(tx *store.Tx) error {
		p, err := getPeer(tx, org, name)
		if err != nil {
			return err
		}
		return fn(tx, p)
	}))
}

// GetPeer returns one peer.
func (s *Service) GetPeer(ctx context.Context, org, name string) (api.Peer, error) {
	var out api.Peer
	err := s.view(org, name, func(_ *store.Tx, p *store.Peer) error {
		out = peerToAPI(p)
		return nil
	})
	return out, err
}

// PeerFilter narrows ListPeers.
type PeerFilter struct {
	Org, State string
}

// ListPeers returns peers in ORG/NAME order.
func (s *Service) ListPeers(ctx context.Context, f PeerFilter) ([]api.Peer, error) {
	if f.Org != "" {
		if err := validate.Name("org", f.Org); err != nil {
			return nil, invalid(err)
		}
	}
	switch f.State {
	case "", api.StateActive, api.StateSuspended, api.StateRevoked, api.StateExpired:
	default:
		return nil, api.Errorf(api.CodeInvalid, "unknown state %q; use active, suspended, expired or revoked", validate.Printable(f.State))
	}
	out := []api.Peer{}
	err := s.opts.DB.View(func(tx *store.Tx) error {
		if f.Org != "" {
			if _, err := getOrg(tx, f.Org); err != nil {
				return err
			}
		}
		return tx.Peers(f.Org, func(p *store.Peer) error {
			if f.State == "" || p.State == f.State {
				out = append(out, peerToAPI(p))
			}
			return nil
		})
	})
	return out, asErr(err)
}

// modifyPeer loads a peer, lets fn change it, and stores it with its audit event.
func (s *Service) modifyPeer(ctx context.Context, org, name, action string, fn func(tx *store.Tx, o *store.Org, p *store.Peer) error) (api.Peer, error) {
	if err := validate.Name("org", org); err != nil {
		return api.Peer{}, invalid(err)
	}
	if err := validate.Name("peer", name); err != nil {
		return api.Peer{}, invalid(err)
	}
	now := s.now()
	var out api.Peer
	err := s.update(ctx, func(tx *store.Tx) error {
		o, err := getOrg(tx, org)
		if err != nil {
			return err
		}
		p, err := getPeer(tx, org, name)
		if err != nil {
			return err
		}
		if p.State == api.StateRevoked {
			return api.Errorf(api.CodeConflict, "peer %s is revoked, which is final; issue a new peer instead", p.ID())
		}
		before := auditPeer(p)
		if err := fn(tx, o, p); err != nil {
			return err
		}
		p.UpdatedAt = now
		if err := tx.PutPeer(p); err != nil {
			return err
		}
		out = peerToAPI(p)
		return tx.Audit(now, Actor(ctx), action, p.ID(), before, auditPeer(p))
	})
	return out, err
}

// SuspendPeer removes a peer from the data plane, keeping its keys.
func (s *Service) SuspendPeer(ctx context.Context, org, name string) (api.Peer, error) {
	return s.modifyPeer(ctx, org, name, "peer.suspend", func(_ *store.Tx, _ *store.Org, p *store.Peer) error {
		if p.State == api.StateSuspended {
			return api.Errorf(api.CodeConflict, "peer %s is already suspended", p.ID())
		}
		p.State = api.StateSuspended
		return nil
	})
}

// ResumePeer makes a suspended or expired peer active again.
func (s *Service) ResumePeer(ctx context.Context, org, name string) (api.Peer, error) {
	now := s.now()
	return s.modifyPeer(ctx, org, name, "peer.resume", func(_ *store.Tx, o *store.Org, p *store.Peer) error {
		if p.State == api.StateActive {
			return api.Errorf(api.CodeConflict, "peer %s is already active", p.ID())
		}
		if p.Expires != nil && !p.Expires.After(now) {
			return api.Errorf(api.CodeConflict, "peer %s expired on %s; give it a new expiry with `extranetctl peer extend %s --expires DATE`", p.ID(), p.Expires.Format(time.RFC3339), p.ID())
		}
		p.State, p.ClocksFrom, p.Suspension = api.StateActive, &now, ""
		return nil
	})
}

// ExtendPeer sets a new expiry ("never" clears it when no maximum is set).
func (s *Service) ExtendPeer(ctx context.Context, org, name, expires string) (api.Peer, error) {
	now := s.now()
	var exp *time.Time
	if expires != "never" {
		if expires == "" {
			return api.Peer{}, api.Errorf(api.CodeInvalid, "no expiry given; pass --expires DATE|DURATION, or never")
		}
		var err error
		if exp, err = s.expiry(expires, now); err != nil {
			return api.Peer{}, err
		}
	} else if s.opts.MaxPeerLifetime > 0 {
		return api.Peer{}, api.Errorf(api.CodeInvalid, "the gateway caps peer lifetime at %s, so an expiry is required", s.opts.MaxPeerLifetime)
	}
	return s.modifyPeer(ctx, org, name, "peer.extend", func(_ *store.Tx, _ *store.Org, p *store.Peer) error {
		p.Expires, p.ClocksFrom = exp, &now
		return nil
	})
}

// RevokePeer removes a peer for good: its key can never return and its
// address goes back to the pool once the reconciler has killed its flows.
func (s *Service) RevokePeer(ctx context.Context, org, name string) (api.Peer, error) {
	return s.modifyPeer(ctx, org, name, "peer.revoke", func(tx *store.Tx, _ *store.Org, p *store.Peer) error {
		p.State = api.StateRevoked
		if err := tx.ReleaseAddr(p.Address); err != nil {
			return err
		}
		return nil
	})
}

// RotatePeer gives a peer new keys (a new pre-shared key always; a new key
// pair, or the partner's new public key). The old key stops working at once.
func (s *Service) RotatePeer(ctx context.Context, org, name string, req api.RotateRequest) (api.IssuedPeer, error) {
	keys, err := s.newKeys(req.PublicKey)
	if err != nil {
		return api.IssuedPeer{}, err
	}
	var p store.Peer
	var grants []grant.Grant
	out, err := s.modifyPeer(ctx, org, name, "peer.rotate", func(tx *store.Tx, o *store.Org, sp *store.Peer) error {
		if err := claimKey(tx, keys.pub, sp.ID()); err != nil {
			return err
		}
		sp.PublicKey, sp.PresharedKey, sp.KeyOrigin = keys.pub, keys.psk, keys.origin
		// The new key has not connected yet; last-seen stays, as it is
		// about the device, but the live endpoint belonged to the old key.
		sp.Endpoint = ""
		p, grants = *sp, peerGrants(o, sp)
		return nil
	})
	// Saved but not yet in force: the new keys must still reach the admin,
	// with the warning that the old ones may work for now.
	warning := notApplied(err)
	if err != nil && warning == "" {
		return api.IssuedPeer{}, err
	}
	cfg, err := s.render(&p, keys.priv, grants)
	if err != nil {
		return api.IssuedPeer{}, asErr(err)
	}
	return api.IssuedPeer{Peer: out, Config: cfg, Warning: warning}, nil
}
