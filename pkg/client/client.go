// Package client is the Go client of extranetd's API, spoken over its unix
// socket. extranetctl uses it; other programs may too.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/extranetgw/extranet/pkg/api"
)

// DefaultSocket is where extranetd listens unless told otherwise.
const DefaultSocket = "/run/extranet/extranetd.sock"

// Client talks to one daemon.
type Client struct {
	socket string
	http   *http.Client
	// Via marks requests made on behalf of a scheduled job (e.g. "expire").
	Via string
	// checking: requests are decided, not carried out (Checking).
	checking bool
}

// Checking returns a client whose requests extranetd decides without
// carrying them out (api.CheckHeader): a call answers nil when the caller
// may make it, and the refusal otherwise. The CLI asks it before it asks a
// person to confirm something the caller may not do anyway.
func (c *Client) Checking() *Client {
	cp := *c
	cp.checking = true
	return &cp
}

// New returns a client for the daemon listening on socket.
func New(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	return &Client{
		socket: socket,
		http: &http.Client{
			Timeout: 60 * time.Second,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", socket)
				},
				MaxIdleConnsPerHost: 16,
			},
		},
	}
}

// ErrDaemonDown is returned when nothing answers on the socket.
var ErrDaemonDown = errors.New("extranetd is not running")

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	u := "http://extranetd/" + api.Version + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Via != "" {
		req.Header.Set("X-Extranet-Via", c.Via)
	}
	if c.checking {
		req.Header.Set(api.CheckHeader, api.CheckMay)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		var ae api.Error
		if json.Unmarshal(raw, &ae) == nil && ae.Code != "" {
			return &ae
		}
		return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("extranetd answered %s", resp.Status)}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// dialError turns socket errors into advice.
func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: nothing listens on %s; start it (systemctl start extranetd) or point --socket / EXTRANET_SOCKET at its socket", ErrDaemonDown, c.socket)
	case errors.Is(err, os.ErrPermission):
		return &api.Error{Code: api.CodeDenied, Message: fmt.Sprintf("permission denied on %s; run as root or as a member of the socket's group (extranet)", c.socket)}
	}
	return fmt.Errorf("talk to extranetd on %s: %w", c.socket, err)
}

func peerPath(org, name string) string {
	return "/peers/" + url.PathEscape(org) + "/" + url.PathEscape(name)
}

func orgPath(org string) string { return "/orgs/" + url.PathEscape(org) }

// Status returns the gateway's status.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var st api.Status
	return st, c.do(ctx, http.MethodGet, "/status", nil, nil, &st)
}

// CreateOrg creates an organisation.
func (c *Client) CreateOrg(ctx context.Context, req api.CreateOrgRequest) (api.Org, error) {
	var o api.Org
	return o, c.do(ctx, http.MethodPost, "/orgs", nil, req, &o)
}

// ListOrgs lists organisations.
func (c *Client) ListOrgs(ctx context.Context) ([]api.Org, error) {
	var out []api.Org
	return out, c.do(ctx, http.MethodGet, "/orgs", nil, nil, &out)
}

// GetOrg returns one organisation.
func (c *Client) GetOrg(ctx context.Context, name string) (api.Org, error) {
	var o api.Org
	return o, c.do(ctx, http.MethodGet, orgPath(name), nil, nil, &o)
}

// DeleteOrg deletes an organisation; force revokes its active peers.
func (c *Client) DeleteOrg(ctx context.Context, name string, force bool) error {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	return c.do(ctx, http.MethodDelete, orgPath(name), q, nil, nil)
}

// Grant adds grants. Force grants address space that is refused without it
// (see api.GrantsRequest).
func (c *Client) Grant(ctx context.Context, name string, grants []string, force bool) (api.Org, error) {
	var o api.Org
	return o, c.do(ctx, http.MethodPost, orgPath(name)+"/grant", nil, api.GrantsRequest{Grants: grants, Force: force}, &o)
}

// Ungrant removes grants.
func (c *Client) Ungrant(ctx context.Context, name string, grants []string) (api.Org, error) {
	var o api.Org
	return o, c.do(ctx, http.MethodPost, orgPath(name)+"/ungrant", nil, api.GrantsRequest{Grants: grants}, &o)
}

// OrgAction runs suspend or resume.
func (c *Client) OrgAction(ctx context.Context, name, action string) (api.Org, error) {
	var o api.Org
	return o, c.do(ctx, http.MethodPost, orgPath(name)+"/"+action, nil, nil, &o)
}

// ExtendOrg sets the contract end.
func (c *Client) ExtendOrg(ctx context.Context, name, expires string) (api.Org, error) {
	var o api.Org
	return o, c.do(ctx, http.MethodPost, orgPath(name)+"/extend", nil, api.ExtendRequest{Expires: expires}, &o)
}

// IssuePeer creates a peer and returns its config, private key included
// when the gateway generated it.
func (c *Client) IssuePeer(ctx context.Context, org string, req api.IssuePeerRequest) (api.IssuedPeer, error) {
	var out api.IssuedPeer
	return out, c.do(ctx, http.MethodPost, orgPath(org)+"/peers", nil, req, &out)
}

// ListPeers lists peers, optionally of one org and state.
func (c *Client) ListPeers(ctx context.Context, org, state string) ([]api.Peer, error) {
	q := url.Values{}
	if org != "" {
		q.Set("org", org)
	}
	if state != "" {
		q.Set("state", state)
	}
	var out []api.Peer
	return out, c.do(ctx, http.MethodGet, "/peers", q, nil, &out)
}

// GetPeer returns one peer.
func (c *Client) GetPeer(ctx context.Context, org, name string) (api.Peer, error) {
	var p api.Peer
	return p, c.do(ctx, http.MethodGet, peerPath(org, name), nil, nil, &p)
}

// PeerConfig returns a peer's config without its private key.
func (c *Client) PeerConfig(ctx context.Context, org, name string) (api.PeerConfig, error) {
	var out api.PeerConfig
	return out, c.do(ctx, http.MethodGet, peerPath(org, name)+"/config", nil, nil, &out)
}

// PeerAction runs suspend, resume or revoke.
func (c *Client) PeerAction(ctx context.Context, org, name, action string) (api.Peer, error) {
	var p api.Peer
	return p, c.do(ctx, http.MethodPost, peerPath(org, name)+"/"+action, nil, nil, &p)
}

// RotatePeer replaces a peer's keys.
func (c *Client) RotatePeer(ctx context.Context, org, name string, req api.RotateRequest) (api.IssuedPeer, error) {
	var out api.IssuedPeer
	return out, c.do(ctx, http.MethodPost, peerPath(org, name)+"/rotate", nil, req, &out)
}

// ExtendPeer sets a peer's expiry.
func (c *Client) ExtendPeer(ctx context.Context, org, name, expires string) (api.Peer, error) {
	var p api.Peer
	return p, c.do(ctx, http.MethodPost, peerPath(org, name)+"/extend", nil, api.ExtendRequest{Expires: expires}, &p)
}

// AuditQuery filters the audit log.
type AuditQuery struct {
	Since, Until             time.Time
	Org, Peer, Action, Actor string
}

// Audit returns matching audit events, oldest first.
func (c *Client) Audit(ctx context.Context, f AuditQuery) ([]api.AuditEvent, error) {
	q := url.Values{}
	for k, v := range map[string]string{"org": f.Org, "peer": f.Peer, "action": f.Action, "actor": f.Actor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339))
	}
	var out []api.AuditEvent
	return out, c.do(ctx, http.MethodGet, "/audit", q, nil, &out)
}

// ActivityQuery filters the partner activity log. Zero fields match
// everything.
type ActivityQuery struct {
	Since, Until time.Time
	Org          string
	Peer         string // ORG/NAME
	// Dest is a prefix (10.20.0.0/24) or an address.
	Dest  string
	Port  uint16
	Proto string // tcp, udp, icmp, or a protocol number
	End   string // one of api.FlowEnds
	// Limit is how many of the newest matches (the daemon's default 1,000,
	// at most 100,000).
	Limit int
}

// Activity returns the partner flows that match, oldest first.
func (c *Client) Activity(ctx context.Context, f ActivityQuery) ([]api.Flow, error) {
	var out []api.Flow
	return out, c.do(ctx, http.MethodGet, "/activity", f.values(), nil, &out)
}

func (f ActivityQuery) values() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"org": f.Org, "peer": f.Peer, "dest": f.Dest, "proto": f.Proto, "end": f.End} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Port != 0 {
		q.Set("port", strconv.Itoa(int(f.Port)))
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339))
	}
	return q
}

// ActivityTop adds up the records f matches (f.End aside) into the
// f.Limit destinations and peers (default 10, at most 100) that moved the
// most bytes and those refused the most attempts.
func (c *Client) ActivityTop(ctx context.Context, f ActivityQuery) (api.ActivityTop, error) {
	f.End = ""
	var out api.ActivityTop
	return out, c.do(ctx, http.MethodGet, "/activity/top", f.values(), nil, &out)
}

// VerifyAudit checks the audit hash chain.
func (c *Client) VerifyAudit(ctx context.Context) (api.VerifyResult, error) {
	var r api.VerifyResult
	return r, c.do(ctx, http.MethodGet, "/audit/verify", nil, nil, &r)
}

// Switchover asks the cluster's active gateway to hand the role to another,
// and returns once one holds it.
func (c *Client) Switchover(ctx context.Context) (api.Switchover, error) {
	var r api.Switchover
	return r, c.do(ctx, http.MethodPost, "/cluster/switchover", nil, struct{}{}, &r)
}

// Expire retires idle, unused and expired peers (or says what it would do).
func (c *Client) Expire(ctx context.Context, req api.ExpireRequest) (api.ExpireResult, error) {
	var out api.ExpireResult
	return out, c.do(ctx, http.MethodPost, "/expire", nil, req, &out)
}

// Import creates organisations and peers from CSV, all or nothing.
func (c *Client) Import(ctx context.Context, csv string) (api.ImportResult, error) {
	var out api.ImportResult
	return out, c.do(ctx, http.MethodPost, "/import", nil, api.CSV{CSV: csv}, &out)
}

// Export returns organisations and peers as CSV.
func (c *Client) Export(ctx context.Context) (string, error) {
	var out api.CSV
	return out.CSV, c.do(ctx, http.MethodGet, "/export", nil, nil, &out)
}

// Backup streams a consistent copy of the daemon's state file to w. It
// fails unless the whole file arrived: extranetd sends the length first.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://extranetd/"+api.Version+"/backup", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, c.dialError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var ae api.Error
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ae) == nil && ae.Code != "" {
			return 0, &ae
		}
		return 0, fmt.Errorf("backup: extranetd answered %s", resp.Status)
	}
	size := resp.ContentLength
	if size < 0 {
		return 0, errors.New("backup: extranetd sent no length, so a stream cut short could not be told from a whole one; run an extranetd of the same version as extranetctl")
	}
	n, err := io.Copy(w, resp.Body)
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, fmt.Errorf("backup: the stream ended after %d of %d bytes: %w", n, size, err)
	}
	return n, nil
}

// WhoAmI returns the caller as the daemon sees it, with its roles.
func (c *Client) WhoAmI(ctx context.Context) (api.WhoAmI, error) {
	var w api.WhoAmI
	return w, c.do(ctx, http.MethodGet, "/whoami", nil, nil, &w)
}

// ListRoles returns every role assignment.
func (c *Client) ListRoles(ctx context.Context) ([]api.RoleAssignment, error) {
	var out []api.RoleAssignment
	return out, c.do(ctx, http.MethodGet, "/roles", nil, nil, &out)
}

// AssignRole gives a subject (user or @group) a role.
func (c *Client) AssignRole(ctx context.Context, req api.RoleRequest) (api.RoleAssignment, error) {
	var out api.RoleAssignment
	return out, c.do(ctx, http.MethodPost, "/roles", nil, req, &out)
}

// RevokeRole takes a role from a subject (for some organisations only, for
// a sponsor, when req.Orgs names them).
func (c *Client) RevokeRole(ctx context.Context, req api.RoleRequest) error {
	return c.do(ctx, http.MethodPost, "/roles/revoke", nil, req, nil)
}

func groupPath(org, name string) string { return orgPath(org) + "/groups/" + url.PathEscape(name) }

// ListGroups lists an organisation's access groups, the default first.
func (c *Client) ListGroups(ctx context.Context, org string) ([]api.Group, error) {
	var out []api.Group
	return out, c.do(ctx, http.MethodGet, orgPath(org)+"/groups", nil, nil, &out)
}

// CreateGroup creates an access group.
func (c *Client) CreateGroup(ctx context.Context, org string, req api.CreateGroupRequest) (api.Group, error) {
	var g api.Group
	return g, c.do(ctx, http.MethodPost, orgPath(org)+"/groups", nil, req, &g)
}

// GetGroup returns one access group.
func (c *Client) GetGroup(ctx context.Context, org, name string) (api.Group, error) {
	var g api.Group
	return g, c.do(ctx, http.MethodGet, groupPath(org, name), nil, nil, &g)
}

// GroupGrant adds grants to a group, within its organisation's.
func (c *Client) GroupGrant(ctx context.Context, org, name string, grants []string) (api.Group, error) {
	var g api.Group
	return g, c.do(ctx, http.MethodPost, groupPath(org, name)+"/grant", nil, api.GrantsRequest{Grants: grants}, &g)
}

// GroupUngrant removes grants from a group.
func (c *Client) GroupUngrant(ctx context.Context, org, name string, grants []string) (api.Group, error) {
	var g api.Group
	return g, c.do(ctx, http.MethodPost, groupPath(org, name)+"/ungrant", nil, api.GrantsRequest{Grants: grants}, &g)
}

// DeleteGroup deletes a group; its peers move to moveTo (a group with peers
// and no moveTo is refused).
func (c *Client) DeleteGroup(ctx context.Context, org, name, moveTo string) error {
	q := url.Values{}
	if moveTo != "" {
		q.Set("move_to", moveTo)
	}
	return c.do(ctx, http.MethodDelete, groupPath(org, name), q, nil, nil)
}

// MovePeer moves a peer to another group of its organisation.
func (c *Client) MovePeer(ctx context.Context, org, name, group string) (api.Peer, error) {
	var p api.Peer
	return p, c.do(ctx, http.MethodPost, peerPath(org, name)+"/move", nil, api.MoveRequest{Group: group}, &p)
}

// CreateInvite makes an invite; its link, which holds the token, is in
// the answer only.
func (c *Client) CreateInvite(ctx context.Context, org string, req api.CreateInviteRequest) (api.CreatedInvite, error) {
	var out api.CreatedInvite
	return out, c.do(ctx, http.MethodPost, orgPath(org)+"/invites", nil, req, &out)
}

// ListInvites lists invites, optionally of one org.
func (c *Client) ListInvites(ctx context.Context, org string) ([]api.Invite, error) {
	q := url.Values{}
	if org != "" {
		q.Set("org", org)
	}
	var out []api.Invite
	return out, c.do(ctx, http.MethodGet, "/invites", q, nil, &out)
}

// RevokeInvite ends an invite (ORG/ID).
func (c *Client) RevokeInvite(ctx context.Context, org, id string) (api.Invite, error) {
	var out api.Invite
	return out, c.do(ctx, http.MethodPost, "/invites/"+url.PathEscape(org)+"/"+url.PathEscape(id)+"/revoke", nil, nil, &out)
}

// ListRequests lists enrollment requests, optionally of one org and state.
func (c *Client) ListRequests(ctx context.Context, org, state string) ([]api.Request, error) {
	q := url.Values{}
	if org != "" {
		q.Set("org", org)
	}
	if state != "" {
		q.Set("state", state)
	}
	var out []api.Request
	return out, c.do(ctx, http.MethodGet, "/requests", q, nil, &out)
}

// ApproveRequest issues the device a request (ORG/ID) asks for.
func (c *Client) ApproveRequest(ctx context.Context, org, id string) (api.Request, error) {
	var out api.Request
	return out, c.do(ctx, http.MethodPost, "/requests/"+url.PathEscape(org)+"/"+url.PathEscape(id)+"/approve", nil, nil, &out)
}

// DenyRequest refuses a request (ORG/ID), saying why.
func (c *Client) DenyRequest(ctx context.Context, org, id, reason string) (api.Request, error) {
	var out api.Request
	return out, c.do(ctx, http.MethodPost, "/requests/"+url.PathEscape(org)+"/"+url.PathEscape(id)+"/deny", nil, api.DenyRequest{Reason: reason}, &out)
}
