package service

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/extranetgw/extranet/internal/grant"
	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/internal/timespec"
	"github.com/extranetgw/extranet/internal/validate"
	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/wgconfig"
)

// Limits of invites and of what a partner may send.
const (
	maxInviteDevices  = 1000
	maxInviteLifetime = 30 * 24 * time.Hour
	defaultInviteLife = 72 * time.Hour
	maxReason         = 200
	// DefaultRequestTTL is how long a request waits for a decision.
	DefaultRequestTTL = 72 * time.Hour
)

// Where a device's key pair was made.
const (
	KeyFromBrowser = "browser"
	KeyFromPasted  = "pasted"
)

// ErrLinkInvalid is the one answer to a submission refused for what
// exists: a token that opens nothing (unknown, expired, used up, revoked,
// or of an organisation or group that is gone or out of force), a device
// name enrolled or waiting already, a public key in use. It says the same
// in every case, so neither a guess nor the holder of a link learns which
// links, names or keys exist.
var ErrLinkInvalid = &api.Error{Code: api.CodeNotFound, Message: "this enrollment link is not valid for this device: the link may have expired, been used for all its devices or been revoked, or the device name or a pasted key may be taken. Try another device name; if that fails, ask your contact at the organisation for a new link"}

// refusal is a submission refused for a reason the audit log keeps and
// the partner is not told: the partner reads ErrLinkInvalid, whatever the
// reason.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }
func (r *refusal) Unwrap() error { return ErrLinkInvalid }

func refuse(format string, args ...any) error {
	return &refusal{reason: fmt.Sprintf(format, args...)}
}

// errRequestUnknown answers a status poll whose request or secret is wrong.
var errRequestUnknown = &api.Error{Code: api.CodeNotFound, Message: "no such enrollment request; start again from your link"}

// randomString returns n random bytes in unpadded base64url.
func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

var idEncoding = base32.NewEncoding("abcdefghijkmnpqrstuvwxyz23456789").WithPadding(base32.NoPadding)

// newID returns a short random id for invites and requests (40 bits;
// uniqueness is checked by the caller).
func newID() (string, error) {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return idEncoding.EncodeToString(b), nil
}

func inviteState(i *store.Invite, now time.Time) string {
	switch {
	case i.Revoked:
		return "revoked"
	case !i.Expires.After(now):
		return api.RequestExpired
	case i.Used >= i.Devices:
		return "used"
	}
	return "active"
}

func inviteToAPI(i *store.Invite, now time.Time) api.Invite {
	return api.Invite{ID: i.Key(), Org: i.Org, Group: i.Group, Devices: i.Devices, Used: i.Used, Expires: i.Expires,
		Contact: i.Contact, AutoApprove: i.AutoApprove, State: inviteState(i, now), CreatedAt: i.CreatedAt, CreatedBy: i.CreatedBy}
}

// requestState is a request's state now: a pending one past its time is
// expired, whether or not anyone wrote that down.
func requestState(r *store.Request, now time.Time) string {
	if r.State == api.RequestPending && !r.Expires.After(now) {
		return api.RequestExpired
	}
	return r.State
}

func requestToAPI(r *store.Request, now time.Time) api.Request {
	return api.Request{ID: r.Key(), Org: r.Org, Group: r.Group, Invite: r.Org + "/" + r.Invite, Device: r.Device, PublicKey: r.PublicKey,
		KeyFrom: r.KeyFrom, State: requestState(r, now), Reason: r.Reason, Source: r.Source, CreatedAt: r.CreatedAt,
		Expires: r.Expires, DecidedAt: r.DecidedAt, DecidedBy: r.DecidedBy}
}

// splitKey reads ORG/ID.
func splitKey(kind, key string) (string, string, error) {
	org, id, ok := strings.Cut(key, "/")
	if !ok {
		return "", "", api.Errorf(api.CodeInvalid, "%s %q is not ORG/ID", kind, validate.Printable(key))
	}
	if err := validate.Name("org", org); err != nil {
		return "", "", invalid(err)
	}
	if err := validate.Name(kind, id); err != nil {
		return "", "", invalid(err)
	}
	return org, id, nil
}

// CreateInvite makes an invite to enroll devices into a group of org and
// returns it with its link, which holds the token. The token is kept only
// as a hash: this answer is the one place it appears.
func (s *Service) CreateInvite(ctx context.Context, org string, req api.CreateInviteRequest) (api.CreatedInvite, error) {
	if s.opts.EnrollURL == "" {
		return api.CreatedInvite{}, api.Errorf(api.CodeConflict, "self-enrollment is off on this gateway; start extranetd with --enroll-listen ADDR and its TLS certificate (see docs/enrollment.md)")
	}
	if s.opts.Endpoint == "" {
		return api.CreatedInvite{}, api.Errorf(api.CodeConflict, "the gateway has no public endpoint, so an enrolled device could not dial it; start extranetd with --endpoint HOST:PORT")
	}
	if err := validate.Name("org", org); err != nil {
		return api.CreatedInvite{}, invalid(err)
	}
	group := req.Group
	if group == "" {
		group = store.DefaultGroup
	}
	if err := validate.Name("group", group); err != nil {
		return api.CreatedInvite{}, invalid(err)
	}
	devices := req.Devices
	if devices == 0 {
		devices = 1
	}
	if devices < 1 || devices > maxInviteDevices {
		return api.CreatedInvite{}, api.Errorf(api.CodeInvalid, "--devices %d: an invite enrolls 1 to %d devices", devices, maxInviteDevices)
	}
	if err := validate.Text("contact", req.Contact, maxContact); err != nil {
		return api.CreatedInvite{}, invalid(err)
	}
	now := s.now()
	expires := now.Add(defaultInviteLife)
	if req.Expires != "" {
		t, err := timespec.ParseExpiry(req.Expires, now)
		if err != nil {
			return api.CreatedInvite{}, invalid(err)
		}
		expires = t
	}
	if expires.After(now.Add(maxInviteLifetime)) {
		return api.CreatedInvite{}, api.Errorf(api.CodeInvalid, "an invite lives at most %d days; a link that works for longer is a standing door", int(maxInviteLifetime.Hours()/24))
	}
	token, err := randomString(32)
	if err != nil {
		return api.CreatedInvite{}, err
	}
	var out api.CreatedInvite
	err = s.update(ctx, func(tx *store.Tx) error {
		o, err := getOrg(tx, org)
		if err != nil {
			return err
		}
		if o.State != api.StateActive {
			return api.Errorf(api.CodeConflict, "organisation %q is %s; resume it before inviting its partners", org, o.State)
		}
		if _, err := getGroup(o, group); err != nil {
			return err
		}
		var id string
		for {
			if id, err = newID(); err != nil {
				return err
			}
			if _, err := tx.Invite(org + "/" + id); errors.Is(err, store.ErrNotFound) {
				break
			}
		}
		inv := &store.Invite{Org: org, ID: id, Group: group, Devices: devices, Expires: expires, Contact: req.Contact,
			AutoApprove: req.AutoApprove, CreatedAt: now, CreatedBy: Actor(ctx), UpdatedAt: now}
		if err := tx.PutInvite(inv, token); err != nil {
			return err
		}
		out = api.CreatedInvite{Invite: inviteToAPI(inv, now), Link: strings.TrimSuffix(s.opts.EnrollURL, "/") + "/enroll#" + token}
		return tx.Audit(now, Actor(ctx), "invite.create", inv.Key(), nil, out.Invite)
	})
	return out, err
}

// ListInvites returns the invites of org, or of every organisation.
func (s *Service) ListInvites(ctx context.Context, org string) ([]api.Invite, error) {
	if org != "" {
		if err := validate.Name("org", org); err != nil {
			return nil, invalid(err)
		}
	}
	now := s.now()
	out := []api.Invite{}
	err := s.opts.DB.View(func(tx *store.Tx) error {
		if org != "" {
			if _, err := getOrg(tx, org); err != nil {
				return err
			}
		}
		return tx.Invites(org, func(i *store.Invite) error {
			out = append(out, inviteToAPI(i, now))
			return nil
		})
	})
	return out, asErr(err)
}

// RevokeInvite ends an invite: its link opens nothing any more, and its
// requests still pending are denied.
func (s *Service) RevokeInvite(ctx context.Context, key string) (api.Invite, error) {
	org, id, err := splitKey("invite", key)
	if err != nil {
		return api.Invite{}, err
	}
	now := s.now()
	var out api.Invite
	err = s.update(ctx, func(tx *store.Tx) error {
		inv, err := tx.Invite(org + "/" + id)
		if errors.Is(err, store.ErrNotFound) {
			return api.Errorf(api.CodeNotFound, "invite %s/%s not found; see `extranetctl invite list --org %s`", org, id, org)
		}
		if err != nil {
			return err
		}
		if inv.Revoked {
			return api.Errorf(api.CodeConflict, "invite %s is already revoked", inv.Key())
		}
		before := inviteToAPI(inv, now)
		inv.Revoked, inv.UpdatedAt = true, now
		if err := tx.PutInvite(inv, ""); err != nil {
			return err
		}
		var pending []*store.Request
		if err := tx.Requests(org, func(r *store.Request) error {
			if r.Invite == id && requestState(r, now) == api.RequestPending {
				pending = append(pending, r)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, r := range pending {
			if err := s.decide(tx, r, api.RequestDenied, "the invite was revoked", now, Actor(ctx)); err != nil {
				return err
			}
		}
		out = inviteToAPI(inv, now)
		return tx.Audit(now, Actor(ctx), "invite.revoke", inv.Key(), before, out)
	})
	return out, err
}

// endGroupEnrollment revokes the invites into a group being deleted and
// denies its pending requests: a group made again under its name is
// another group, which no old link may open.
func (s *Service) endGroupEnrollment(tx *store.Tx, org, group string, now time.Time, actor string) error {
	var invites []*store.Invite
	if err := tx.Invites(org, func(i *store.Invite) error {
		if i.Group == group && !i.Revoked {
			invites = append(invites, i)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, inv := range invites {
		before := inviteToAPI(inv, now)
		inv.Revoked, inv.UpdatedAt = true, now
		if err := tx.PutInvite(inv, ""); err != nil {
			return err
		}
		if err := tx.Audit(now, actor, "invite.revoke", inv.Key(), before, inviteToAPI(inv, now)); err != nil {
			return err
		}
	}
	var pending []*store.Request
	if err := tx.Requests(org, func(r *store.Request) error {
		if r.Group == group && requestState(r, now) == api.RequestPending {
			pending = append(pending, r)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, r := range pending {
		if err := s.decide(tx, r, api.RequestDenied, "the group was deleted", now, actor); err != nil {
			return err
		}
	}
	return nil
}

// decide records a decision on a request, with its audit event.
func (s *Service) decide(tx *store.Tx, r *store.Request, state, reason string, now time.Time, actor string) error {
	before := requestToAPI(r, now)
	r.State, r.Reason, r.DecidedAt, r.DecidedBy = state, reason, now, actor
	if err := tx.PutRequest(r); err != nil {
		return err
	}
	action := "request.deny"
	if state == api.RequestApproved {
		action = "request.approve"
	}
	return tx.Audit(now, actor, action, r.Key(), before, requestToAPI(r, now))
}

// approve issues the peer a request asks for, with the partner's public
// key, into the request's group, and records the decision.
func (s *Service) approve(tx *store.Tx, r *store.Request, now time.Time, actor string) error {
	o, err := getOrg(tx, r.Org)
	if err != nil {
		return err
	}
	if o.State != api.StateActive {
		return api.Errorf(api.CodeConflict, "organisation %q is %s; resume it before approving its devices", r.Org, o.State)
	}
	if _, err := getGroup(o, r.Group); err != nil {
		return api.Errorf(api.CodeConflict, "request %s is for group %q, which organisation %q no longer has; deny it", r.Key(), r.Group, r.Org)
	}
	if old, err := tx.Peer(r.Org, r.Device); err == nil && old.State != api.StateRevoked {
		return api.Errorf(api.CodeConflict, "peer %s/%s exists already; deny this request and let the partner enroll under another name", r.Org, r.Device)
	}
	psk, err := wgtypes.GenerateKey()
	if err != nil {
		return fmt.Errorf("generate preshared key: %w", err)
	}
	exp, err := s.expiry("", now)
	if err != nil {
		return err
	}
	keys := keyPair{pub: r.PublicKey, psk: psk.String(), origin: api.KeySupplied}
	if _, err := s.addPeer(tx, o, r.Device, r.Group, keys, exp, now, actor); err != nil {
		return err
	}
	return s.decide(tx, r, api.RequestApproved, "", now, actor)
}

// Enroll takes a partner's submission through an invite's token: it makes
// a pending request, or, for an invite that approves by itself, the peer.
// source is the address the submission came from, for the audit log. A
// refusal is ErrLinkInvalid (wrapped with its reason); an error that is no
// *api.Error is the gateway's own failure, not for the partner's eyes.
func (s *Service) Enroll(ctx context.Context, source string, req api.EnrollRequest) (api.EnrollAccepted, error) {
	if err := validate.Name("device", req.Device); err != nil {
		return api.EnrollAccepted{}, invalid(err)
	}
	if req.KeyFrom != KeyFromBrowser && req.KeyFrom != KeyFromPasted {
		return api.EnrollAccepted{}, api.Errorf(api.CodeInvalid, "key_from %q: use browser or pasted", validate.Printable(req.KeyFrom))
	}
	if err := s.checkSuppliedKey(req.PublicKey); err != nil {
		return api.EnrollAccepted{}, err
	}
	now := s.now()
	// Refused on a read first: made-up tokens must never queue for the
	// write lock, nor join a batch of real changes that bbolt re-runs
	// call by call when one of them fails.
	if err := s.opts.DB.View(func(tx *store.Tx) error {
		_, err := openSubmission(tx, req, now)
		return err
	}); err != nil {
		return api.EnrollAccepted{}, fmt.Errorf("enroll: %w", err)
	}
	secret, err := randomString(32)
	if err != nil {
		return api.EnrollAccepted{}, err
	}
	actor := "partner@" + source
	var out api.EnrollAccepted
	var invite string
	ch, err := s.opts.DB.Change(func(tx *store.Tx) error {
		// Again: the invite, the names and the keys may have changed
		// since the read.
		inv, err := openSubmission(tx, req, now)
		if err != nil {
			return err
		}
		var id string
		for {
			if id, err = newID(); err != nil {
				return err
			}
			if _, err := tx.Request(inv.Org + "/" + id); errors.Is(err, store.ErrNotFound) {
				break
			}
		}
		r := &store.Request{Org: inv.Org, ID: id, Invite: inv.ID, Group: inv.Group, Device: req.Device, PublicKey: req.PublicKey,
			KeyFrom: req.KeyFrom, State: api.RequestPending, Source: source, SecretHash: store.TokenHash(secret),
			CreatedAt: now, Expires: now.Add(s.opts.RequestTTL)}
		if err := tx.PutRequest(r); err != nil {
			return err
		}
		inv.Used++
		inv.UpdatedAt = now
		if err := tx.PutInvite(inv, ""); err != nil {
			return err
		}
		if err := tx.Audit(now, actor, "enroll.request", r.Key(), nil, requestToAPI(r, now)); err != nil {
			return err
		}
		if inv.AutoApprove {
			if err := s.approve(tx, r, now, "invite "+inv.Key()+" (auto-approve)"); err != nil {
				return err
			}
		}
		out = api.EnrollAccepted{Request: r.Key(), Secret: secret, State: r.State}
		invite = inv.Key()
		return nil
	})
	if err != nil {
		return api.EnrollAccepted{}, fmt.Errorf("enroll: %w", err)
	}
	if out.State == api.RequestPending && s.opts.Alert != nil {
		org, _, _ := strings.Cut(out.Request, "/")
		// Names and groups are validated (lowercase letters, digits and
		// hyphens), so nothing a partner typed can be markup in a chat.
		s.opts.Alert(api.Alert{Kind: api.AlertEnrollRequest, Org: org, Peer: org + "/" + req.Device,
			Text:    fmt.Sprintf("%s: device %q asks to join through invite %s (request %s, from %s); approve with `extranetctl request approve %s`", org, req.Device, invite, out.Request, validate.Printable(source), out.Request),
			Details: map[string]string{"request": out.Request, "invite": invite, "device": req.Device, "source": source, "key_from": req.KeyFrom}})
	}
	// An approved device saved but not yet in force is still approved:
	// the page's next poll finds it so, and the reconciler keeps trying.
	if err := s.applied(ctx, ch); notApplied(err) == "" {
		return out, err
	}
	return out, nil
}

// openSubmission returns the invite a submission's token opens, or its
// refusal: the token opens nothing, or the device's name or key is taken.
func openSubmission(tx *store.Tx, req api.EnrollRequest, now time.Time) (*store.Invite, error) {
	inv, err := tx.InviteByToken(req.Token)
	if errors.Is(err, store.ErrNotFound) {
		return nil, refuse("no invite has this token")
	}
	if err != nil {
		return nil, err
	}
	o, err := tx.Org(inv.Org)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, refuse("invite %s: its organisation is gone", inv.Key())
	case err != nil:
		return nil, err
	case !store.InForce(o.State, o.Expires, now):
		return nil, refuse("invite %s: organisation %s is %s or past its contract's end", inv.Key(), o.Name, o.State)
	case o.Group(inv.Group) == nil:
		return nil, refuse("invite %s: group %s is gone", inv.Key(), inv.Group)
	}
	if st := inviteState(inv, now); st != "active" {
		return nil, refuse("invite %s is %s", inv.Key(), st)
	}
	old, err := tx.Peer(inv.Org, req.Device)
	switch {
	case err == nil && old.State != api.StateRevoked:
		return nil, refuse("invite %s: a device named %q is enrolled already", inv.Key(), req.Device)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	taken := false
	if err := tx.Requests(inv.Org, func(r *store.Request) error {
		taken = taken || r.Device == req.Device && requestState(r, now) == api.RequestPending
		return nil
	}); err != nil {
		return nil, err
	}
	if taken {
		return nil, refuse("invite %s: a device named %q is waiting for approval already", inv.Key(), req.Device)
	}
	if tx.KeyOwner(req.PublicKey) != "" {
		return nil, refuse("invite %s: the public key is in use already", inv.Key())
	}
	return inv, nil
}

// EnrollStatus is a request's state for the page that made it, which
// proves it with the request's secret; once approved, with the device's
// config, its private key left for the page to put in.
func (s *Service) EnrollStatus(ctx context.Context, source string, req api.EnrollStatusRequest) (api.EnrollStatus, error) {
	org, id, err := splitKey("request", req.Request)
	if err != nil {
		return api.EnrollStatus{}, errRequestUnknown
	}
	now := s.now()
	var out api.EnrollStatus
	var peer *store.Peer
	var grants []grant.Grant
	missing := wgconfig.KeyOnDevice
	first := false
	err = s.opts.DB.View(func(tx *store.Tx) error {
		r, err := tx.Request(org + "/" + id)
		if errors.Is(err, store.ErrNotFound) {
			return errRequestUnknown
		}
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(store.TokenHash(req.Secret), r.SecretHash) != 1 {
			return errRequestUnknown
		}
		out = api.EnrollStatus{State: requestState(r, now), Reason: r.Reason}
		if out.State != api.RequestApproved {
			return nil
		}
		// Approved, then revoked, suspended or past a date since: the
		// peer's, or its organisation's.
		p, perr := tx.Peer(r.Org, r.Device)
		o, oerr := tx.Org(r.Org)
		if perr != nil || oerr != nil || p.PublicKey != r.PublicKey || !store.InForce(p.State, p.Expires, now) || !store.InForce(o.State, o.Expires, now) {
			out = api.EnrollStatus{State: "withdrawn", Reason: "the device was approved, then its access was withdrawn; ask your contact"}
			return nil
		}
		peer, grants, first = p, peerGrants(o, p), r.Delivered.IsZero()
		if r.KeyFrom == KeyFromBrowser {
			// The page holds the private key and puts it in.
			missing = wgconfig.KeyInPage
		}
		return nil
	})
	if err != nil {
		return api.EnrollStatus{}, asErr(err)
	}
	if peer == nil {
		return out, nil
	}
	cfg, err := s.renderConfig(peer, "", grants, missing)
	if err != nil {
		return api.EnrollStatus{}, asErr(err)
	}
	// The config holds the preshared key: its first delivery is on record.
	// The page may ask again (a poll whose answer was lost); those are not
	// written, or polling with the secret could fill the log.
	if first {
		err := s.opts.DB.Update(func(tx *store.Tx) error {
			r, err := tx.Request(org + "/" + id)
			if err != nil || !r.Delivered.IsZero() {
				return err
			}
			r.Delivered = now
			if err := tx.PutRequest(r); err != nil {
				return err
			}
			return tx.Audit(now, "partner@"+source, "enroll.config", peer.ID(), nil, map[string]any{"request": req.Request, "grants": grantStrings(grants)})
		})
		if err != nil {
			return api.EnrollStatus{}, asErr(err)
		}
	}
	out.Config = cfg
	return out, nil
}

// ListRequests returns enrollment requests, of org or every organisation,
// in one state or all.
func (s *Service) ListRequests(ctx context.Context, org, state string) ([]api.Request, error) {
	if org != "" {
		if err := validate.Name("org", org); err != nil {
			return nil, invalid(err)
		}
	}
	switch state {
	case "", api.RequestPending, api.RequestApproved, api.RequestDenied, api.RequestExpired:
	default:
		return nil, api.Errorf(api.CodeInvalid, "unknown state %q; use pending, approved, denied or expired", validate.Printable(state))
	}
	now := s.now()
	out := []api.Request{}
	err := s.opts.DB.View(func(tx *store.Tx) error {
		if org != "" {
			if _, err := getOrg(tx, org); err != nil {
				return err
			}
		}
		return tx.Requests(org, func(r *store.Request) error {
			if a := requestToAPI(r, now); state == "" || a.State == state {
				out = append(out, a)
			}
			return nil
		})
	})
	return out, asErr(err)
}

// modifyRequest loads a pending request and lets fn decide it.
func (s *Service) modifyRequest(ctx context.Context, key string, fn func(tx *store.Tx, r *store.Request, now time.Time) error) (api.Request, error) {
	org, id, err := splitKey("request", key)
	if err != nil {
		return api.Request{}, err
	}
	now := s.now()
	var out api.Request
	err = s.update(ctx, func(tx *store.Tx) error {
		r, err := tx.Request(org + "/" + id)
		if errors.Is(err, store.ErrNotFound) {
			return api.Errorf(api.CodeNotFound, "request %s/%s not found; see `extranetctl request list --org %s`", org, id, org)
		}
		if err != nil {
			return err
		}
		if st := requestState(r, now); st != api.RequestPending {
			return api.Errorf(api.CodeConflict, "request %s is %s, not pending; a partner whose request expired or was refused enrolls again from a link (`extranetctl invite create %s`)", r.Key(), st, r.Org)
		}
		if err := fn(tx, r, now); err != nil {
			return err
		}
		out = requestToAPI(r, now)
		return nil
	})
	return out, err
}

// ApproveRequest issues the device a pending request asks for.
func (s *Service) ApproveRequest(ctx context.Context, key string) (api.Request, error) {
	return s.modifyRequest(ctx, key, func(tx *store.Tx, r *store.Request, now time.Time) error {
		return s.approve(tx, r, now, Actor(ctx))
	})
}

// DenyRequest refuses a pending request; the partner's page shows reason.
func (s *Service) DenyRequest(ctx context.Context, key string, req api.DenyRequest) (api.Request, error) {
	if req.Reason == "" {
		return api.Request{}, api.Errorf(api.CodeInvalid, "no reason given; pass --reason TEXT (the partner reads it)")
	}
	if err := validate.Text("reason", req.Reason, maxReason); err != nil {
		return api.Request{}, invalid(err)
	}
	return s.modifyRequest(ctx, key, func(tx *store.Tx, r *store.Request, now time.Time) error {
		return s.decide(tx, r, api.RequestDenied, req.Reason, now, Actor(ctx))
	})
}

// InviteOf names the invite a token opens (ORG/ID), whatever its state,
// for limits counted per invite. A token that opens none is refused here,
// on a read.
func (s *Service) InviteOf(token string) (string, error) {
	var key string
	err := s.opts.DB.View(func(tx *store.Tx) error {
		inv, err := tx.InviteByToken(token)
		if errors.Is(err, store.ErrNotFound) {
			return refuse("no invite has this token")
		}
		if err != nil {
			return err
		}
		key = inv.Key()
		return nil
	})
	return key, err
}

// AuditEnrollRefusal records a refused submission or poll. The caller
// bounds how often (see the enrollment server's limiter); never pass a
// token here.
func (s *Service) AuditEnrollRefusal(ctx context.Context, source, what, why string) error {
	return s.auditRead(WithActor(ctx, "partner@"+source), "enroll.refused", what, map[string]string{"why": why})
}

// AuditEnrollSuppressed records the refusals the enrollment server did
// not audit one by one, lest a flood fill the log: how many, from how many
// sources (at least that many when sourcesCapped).
func (s *Service) AuditEnrollSuppressed(ctx context.Context, refusals, sources int, sourcesCapped bool, since time.Time) error {
	from := fmt.Sprint(sources)
	if sourcesCapped {
		from = "at least " + from
	}
	return s.auditRead(WithActor(ctx, "partners"), "enroll.refused", "summary", map[string]any{
		"why":      fmt.Sprintf("%d more refusals from %s sources, not recorded one by one", refusals, from),
		"refusals": refusals, "sources": sources, "since": since})
}
