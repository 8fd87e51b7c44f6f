// Package api is the wire contract between extranetd and its clients: the
// JSON types of the versioned HTTP API served on the daemon's unix socket,
// and the stable error codes. Other programs may import it.
package api

import (
	"fmt"
	"net/http"
	"time"
)

// Version is the path prefix of this API. A breaking change gets a new one.
const Version = "v1"

// States of organisations and peers.
const (
	StateActive    = "active"
	StateSuspended = "suspended"
	StateExpired   = "expired"
	StateRevoked   = "revoked"
)

// Key origins of a peer.
const (
	KeyGenerated = "generated" // the gateway made the key pair and showed the private key once
	KeySupplied  = "supplied"  // the partner supplied its public key; the private key never left its device
)

// Org is a partner organisation.
type Org struct {
	Name        string     `json:"name"`
	DisplayName string     `json:"display_name,omitempty"`
	Contact     string     `json:"contact,omitempty"`
	State       string     `json:"state"`
	Expires     *time.Time `json:"expires,omitempty"`
	// Grants are the ceiling: what the organisation's groups may be given.
	Grants []string `json:"grants"`
	Blocks []string `json:"blocks"`
	// Groups are its access groups and what each reaches, default first.
	Groups    []GroupGrants `json:"groups"`
	Peers     PeerCounts    `json:"peers"`
	CreatedAt time.Time     `json:"created_at"`
	CreatedBy string        `json:"created_by"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// PeerCounts summarises an organisation's peers by state.
type PeerCounts struct {
	Total  int `json:"total"`
	Active int `json:"active"`
}

// Peer is one partner device. Key material other than the public key never
// appears here.
type Peer struct {
	Org           string     `json:"org"`
	Name          string     `json:"name"`
	PublicKey     string     `json:"public_key"`
	Address       string     `json:"address"`
	Group         string     `json:"group"`
	State         string     `json:"state"`
	KeyOrigin     string     `json:"key_origin"`
	Expires       *time.Time `json:"expires,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	CreatedBy     string     `json:"created_by"`
	UpdatedAt     time.Time  `json:"updated_at"`
	LastHandshake *time.Time `json:"last_handshake,omitempty"`
	Endpoint      string     `json:"endpoint,omitempty"`
	RxBytes       int64      `json:"rx_bytes"`
	TxBytes       int64      `json:"tx_bytes"`
	// Suspension says why the gateway suspended the peer by itself, such
	// as a scan; `peer resume` clears it.
	Suspension string `json:"suspension,omitempty"`
}

// ID is the ORG/NAME form peers are addressed by.
func (p Peer) ID() string { return p.Org + "/" + p.Name }

// CreateOrgRequest creates an organisation.
type CreateOrgRequest struct {
	Name        string   `json:"name"`
	DisplayName string   `json:"display_name,omitempty"`
	Contact     string   `json:"contact,omitempty"`
	Grants      []string `json:"grants,omitempty"`
	// Force: as in GrantsRequest.
	Force bool `json:"force,omitempty"`
	// Expires is a date (2026-12-31), an RFC 3339 time or a duration from now (90d).
	Expires string `json:"expires,omitempty"`
}

// GrantsRequest adds or removes grants.
type GrantsRequest struct {
	Grants []string `json:"grants"`
	// Force grants address space no partner should normally reach:
	// loopback, link-local, multicast, reserved, or a prefix shorter than
	// /8. It never opens the tunnel network.
	Force bool `json:"force,omitempty"`
}

// DefaultGroup is the access group every organisation has; it reaches the
// organisation's whole grant.
const DefaultGroup = "default"

// GroupGrants is an access group and what its peers reach.
type GroupGrants struct {
	Name   string   `json:"name"`
	Grants []string `json:"grants"`
}

// Group is an access group of an organisation. Its peers reach its grants,
// which lie within the organisation's; the default group's are the
// organisation's own.
type Group struct {
	Org  string `json:"org"`
	Name string `json:"name"`
	// ID names the group's chain and sets in the firewall
	// (EXTRANET-GRP-ID, extranet-gID-…); it is never reused.
	ID        uint32     `json:"id"`
	Default   bool       `json:"default"`
	Grants    []string   `json:"grants"`
	Peers     PeerCounts `json:"peers"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by"`
	UpdatedAt time.Time  `json:"updated_at"`
}

// CreateGroupRequest creates an access group.
type CreateGroupRequest struct {
	Name   string   `json:"name"`
	Grants []string `json:"grants,omitempty"`
}

// MoveRequest moves a peer to another group of its organisation.
type MoveRequest struct {
	Group string `json:"group"`
}

// IssuePeerRequest creates a peer.
type IssuePeerRequest struct {
	Name string `json:"name"`
	// PublicKey is the partner's own key; empty makes the gateway generate a pair.
	PublicKey string `json:"public_key,omitempty"`
	Expires   string `json:"expires,omitempty"`
	// Group is the access group; empty means the default group.
	Group string `json:"group,omitempty"`
}

// IssuedPeer is returned once, at issue or rotation: Config holds the
// partner's private key when the gateway generated it, and is not stored.
type IssuedPeer struct {
	Peer   Peer   `json:"peer"`
	Config string `json:"config"`
	// Warning, when set, says the peer is saved but not yet in force (a
	// not_applied error that must not cost the partner its private key).
	Warning string `json:"warning,omitempty"`
}

// PeerConfig is a peer's client config without its private key.
type PeerConfig struct {
	Config string `json:"config"`
}

// RotateRequest replaces a peer's keys.
type RotateRequest struct {
	PublicKey string `json:"public_key,omitempty"`
}

// AuditEvent is one entry of the append-only, hash-chained audit log.
type AuditEvent struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Before any       `json:"before,omitempty"`
	After  any       `json:"after,omitempty"`
	Hash   string    `json:"hash"`
}

// Flow is one partner connection through the gateway, recorded when it
// ended: who (the peer, its organisation and group, its tunnel address),
// to what (protocol, destination, port), how much each way, and how it
// ended. No payload is ever recorded.
type Flow struct {
	Opened  time.Time `json:"opened"`
	Closed  time.Time `json:"closed"`
	Org     string    `json:"org"`
	Group   string    `json:"group"`
	Peer    string    `json:"peer"` // ORG/NAME
	Address string    `json:"address"`
	Proto   string    `json:"proto"` // tcp, udp, icmp, or the protocol's number
	Dest    string    `json:"dest"`
	Port    uint16    `json:"port,omitempty"`
	// Out is what the partner sent, In what it received.
	BytesOut   uint64 `json:"bytes_out"`
	BytesIn    uint64 `json:"bytes_in"`
	PacketsOut uint64 `json:"packets_out"`
	PacketsIn  uint64 `json:"packets_in"`
	// End is how it ended: FlowClosed, FlowTimedOut or FlowKilled; or
	// FlowOpen for an interim record of a flow still open at Closed; or
	// FlowSummarised for a record that adds up Flows flows of the peer,
	// beyond its budget of records, that ended between Opened and Closed.
	End string `json:"end"`
	// Since is set on the records of a flow after its first interim one:
	// their bytes and packets are those from Since to Closed, so that a
	// flow's records add up to what it carried.
	Since time.Time `json:"since,omitzero"`
	Flows uint64    `json:"flows,omitempty"`
	// Reason says why a FlowRefused record's attempts were refused: one of
	// DenyReasons.
	Reason string `json:"reason,omitempty"`
	// RateLimited is set on a FlowRefused record of the attempts past the
	// log's rate: counted by the firewall, exactly, without their
	// destinations. With the others they are every attempt refused.
	RateLimited bool `json:"rate_limited,omitempty"`
}

// ActivityTop is what partners did most between Since and Until, out of
// Records records: the destinations and peers that moved the most bytes,
// and those refused the most attempts, each list longest first.
type ActivityTop struct {
	Since   time.Time `json:"since"`
	Until   time.Time `json:"until"`
	Records uint64    `json:"records"`
	// Truncated says the records named more than 10,000 destinations or
	// peers: those past them are added up in an entry without a name.
	Truncated           bool       `json:"truncated,omitempty"`
	Destinations        []TopEntry `json:"destinations"`
	Peers               []TopEntry `json:"peers"`
	RefusedDestinations []TopEntry `json:"refused_destinations"`
	RefusedPeers        []TopEntry `json:"refused_peers"`
}

// TopEntry is one line of an ActivityTop: a destination (Proto, Dest and
// Port; Dest empty for the destinations summarised together) or a peer
// (Peer, or only Address where no peer held it).
type TopEntry struct {
	Proto   string `json:"proto,omitempty"`
	Dest    string `json:"dest,omitempty"`
	Port    uint16 `json:"port,omitempty"`
	Peer    string `json:"peer,omitempty"`
	Address string `json:"address,omitempty"`
	// Bytes each way, as in Flow.
	BytesOut uint64 `json:"bytes_out"`
	BytesIn  uint64 `json:"bytes_in"`
	// Flows are the connections (those still open counted once they
	// end), or for a refusal list the attempts refused.
	Flows uint64 `json:"flows"`
	// Peers is how many peers a destination's flows or refusals came
	// from, up to 100.
	Peers int `json:"peers,omitempty"`
}

// ActivityStatus says whether the activity log misses anything.
type ActivityStatus struct {
	// Off says why nothing is recorded ("activity-log: false", or what
	// kept it from starting); the counts below are then zero.
	Off string `json:"off,omitempty"`
	// Recorded flows since the daemon started.
	Recorded uint64 `json:"recorded"`
	// Summarised flows were beyond their peer's budget and are counted in
	// summary records instead.
	Summarised uint64 `json:"summarised,omitempty"`
	// Lost counts the times the kernel's event stream overflowed (each
	// losing the flows that ended meanwhile); Failed, records that could
	// not be written; LastError says why the last write failed.
	Lost      uint64 `json:"lost"`
	Failed    uint64 `json:"failed"`
	LastError string `json:"last_error,omitempty"`
	// Syslog is there when records also go to a syslog receiver.
	Syslog *SyslogStatus `json:"syslog,omitempty"`
}

// SyslogStatus counts the activity records sent to syslog since the
// daemon started.
type SyslogStatus struct {
	Target string `json:"target"`
	// Sent records were written to the receiver's socket; Dropped ones
	// found the queue full while the receiver was slow or away; Failed
	// ones could not be written.
	Sent      uint64 `json:"sent"`
	Dropped   uint64 `json:"dropped"`
	Failed    uint64 `json:"failed"`
	LastError string `json:"last_error,omitempty"`
}

// RefusalStatus counts what the firewall refused partners and the scans
// it saw since the daemon started.
type RefusalStatus struct {
	// Scan is what is done about a scan: "suspend at 100 distinct refused
	// destinations a minute, warn at 20", "observe …" or "off".
	Scan string `json:"scan"`
	// Refused packets logged (at most 100 a second per partner address),
	// and RateLimited those past that rate, counted without their
	// destinations.
	Refused     uint64 `json:"refused"`
	RateLimited uint64 `json:"rate_limited"`
	// Warnings: peers reported as scanning; Suspensions: peers the
	// gateway suspended for it.
	Warnings    uint64 `json:"scan_warnings"`
	Suspensions uint64 `json:"scan_suspensions"`
	// Lost counts overflows of the log's socket and times it failed.
	Lost      uint64 `json:"lost"`
	LastError string `json:"last_error,omitempty"`
}

// Alert is what extranetd posts to the alert webhook: JSON, signed (see
// docs/alerts.md). Text is a line for people, so that chat receivers that
// show a "text" field (Slack's incoming webhooks, Teams' connectors) work
// as they are; the other fields are for programs.
type Alert struct {
	// ID is the same on every retry of one alert, for receivers to drop
	// repeats.
	ID   string    `json:"id"`
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`
	// Gateway is the endpoint partners dial, naming which gateway sends.
	Gateway string `json:"gateway"`
	Org     string `json:"org,omitempty"`
	Peer    string `json:"peer,omitempty"`
	Text    string `json:"text"`
	Details any    `json:"details,omitempty"`
}

// Alert kinds.
const (
	// AlertScanWarned: a peer was refused at many distinct destinations.
	AlertScanWarned = "scan.warned"
	// AlertScanSuspended: extranetd suspended a peer that scanned.
	AlertScanSuspended = "scan.suspended"
	// AlertEnrollRequest: a partner's device waits for approval.
	AlertEnrollRequest = "enroll.request"
	// AlertExpiring: a peer or an organisation expires soon.
	AlertExpiring = "expiry.soon"
)

// AlertKinds are every Alert.Kind.
var AlertKinds = []string{AlertScanWarned, AlertScanSuspended, AlertEnrollRequest, AlertExpiring}

// AlertStatus is the alert webhook's account since the daemon started.
type AlertStatus struct {
	// Webhook is the receiver's host (the rest of its URL may be a
	// secret, as Slack's are).
	Webhook string `json:"webhook"`
	Sent    uint64 `json:"sent"`
	// Failures are failed attempts (each retried); Dropped, alerts given
	// up on (the queue full, or undelivered for a day); Pending, alerts
	// waiting now.
	Failures  uint64 `json:"failures"`
	Dropped   uint64 `json:"dropped"`
	Pending   int    `json:"pending"`
	LastError string `json:"last_error,omitempty"`
}

// How a flow ended.
const (
	// FlowClosed: the connection was closed (TCP FIN or RST).
	FlowClosed = "closed"
	// FlowTimedOut: it went idle until the kernel forgot it (UDP, ICMP,
	// a TCP connection nobody closed).
	FlowTimedOut = "timed out"
	// FlowKilled: the gateway ended it, because the peer or its
	// organisation lost the access it used (revoke, suspend, expiry, an
	// ungrant, a move to another group).
	FlowKilled = "killed"
	// FlowOpen: an interim record of a flow still open (every 5 minutes
	// by default), with what it carried since its previous record.
	FlowOpen = "open"
	// FlowSummarised: not one flow but the sum of a peer's flows to one
	// destination (Dest empty: to the destinations beyond the first 50)
	// beyond its budget of records (20 a second, 1,000 at once), one such
	// record a minute: a partner opening flows in the thousands fills the
	// log a hundred times slower, and what it did is still counted.
	FlowSummarised = "summarised"
	// FlowRefused: not a flow but attempts the firewall refused, Flows of
	// them (as logged: at most 100 a second per partner) to one
	// destination between Opened and Closed, for Reason. No bytes passed.
	FlowRefused = "refused"
)

// FlowEnds are the ends a record may have, as a filter takes them.
var FlowEnds = []string{FlowClosed, FlowTimedOut, FlowKilled, FlowOpen, FlowSummarised, FlowRefused}

// Why the firewall refused a partner's packet (Flow.Reason).
const (
	// DenyNotGranted: its group has no grant covering the destination.
	DenyNotGranted = "not-granted"
	// DenyNoGroup: its mark names no group of its organisation (a peer
	// that was moved, say, and whose mark is stale).
	DenyNoGroup = "no-group"
	// DenyNoOrg: its source is in no organisation's address block.
	DenyNoOrg = "no-org"
	// DenyNotAPeer: its source is no peer in force.
	DenyNotAPeer = "not-a-peer"
	// DenyHost: toward the gateway host itself, or not out toward the
	// internal network.
	DenyHost = "host"
	// DenyGateway: toward the gateway's own tunnel address and services.
	DenyGateway = "gateway"
	// DenyTunnel: toward another partner, through the tunnel.
	DenyTunnel = "tunnel"
)

// DenyReasons are every Flow.Reason.
var DenyReasons = []string{DenyNotGranted, DenyNoGroup, DenyNoOrg, DenyNotAPeer, DenyHost, DenyGateway, DenyTunnel}

// Status describes the running gateway.
type Status struct {
	Version   string `json:"version"`
	Interface string `json:"interface"`
	Mode      string `json:"mode"`
	// NetNS is the gateway's network namespace, where the interface, the
	// rules and the sets are: `ip netns exec NETNS iptables -S`.
	NetNS string `json:"netns"`
	// HostVeth is the host's end of the veth pair into NetNS.
	HostVeth        string     `json:"host_veth"`
	PublicKey       string     `json:"public_key"`
	Endpoint        string     `json:"endpoint,omitempty"`
	ListenPort      int        `json:"listen_port"`
	Address         string     `json:"address"`
	TunnelNetwork   string     `json:"tunnel_network"`
	Orgs            int        `json:"orgs"`
	PeersActive     int        `json:"peers_active"`
	PeersOnline     int        `json:"peers_online"`
	LastReconcile   *time.Time `json:"last_reconcile,omitempty"`
	ReconcileResult string     `json:"reconcile_result"`
	Firewall        string     `json:"firewall"`
	LastRepair      *time.Time `json:"last_repair,omitempty"`
	// EndedWhileDown are the organisations ("org NAME (DATE)") and peers
	// ("ORG/NAME (DATE)") whose date passed since the daemon last ran
	// (DownSince; absent when unknown): the kernel ended their new flows
	// on time, and the start says which.
	EndedWhileDown []string   `json:"ended_while_down,omitempty"`
	DownSince      *time.Time `json:"down_since,omitempty"`
	// Activity is the activity log's account, absent while it is off.
	Activity *ActivityStatus `json:"activity,omitempty"`
	// Refusals counts refusals and scans; absent for a caller who sees
	// some organisations only.
	Refusals *RefusalStatus `json:"refusals,omitempty"`
	// Alerts is the alert webhook's account; absent while there is none,
	// and for a caller who sees some organisations only.
	Alerts *AlertStatus `json:"alerts,omitempty"`
	// Cluster is the shared state's account (docs/cluster.md); absent on a
	// gateway whose state is its own, and for a caller who sees some
	// organisations only.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
}

// ClusterStatus is how this gateway's copy of the cluster's state stands.
type ClusterStatus struct {
	// Name is this gateway's, among Gateways.
	Name          string   `json:"name"`
	EtcdEndpoints []string `json:"etcd_endpoints"`
	// CopyRevision is the version of the state this gateway's copy holds,
	// ClusterRevision the cluster's (0 when etcd did not answer).
	CopyRevision    int64 `json:"copy_revision"`
	ClusterRevision int64 `json:"cluster_revision"`
	// Following is "ok" while the copy follows the cluster's changes, else
	// why not; Since is when that last changed.
	Following string    `json:"following"`
	Since     time.Time `json:"since"`
	// Gateways are those that follow the state now; nil when etcd did not
	// answer.
	Gateways []ClusterGateway `json:"gateways"`
	// Role is this gateway's: "active", "standby", or "" where gateways do
	// not take turns (no --vip). Active is the gateway that answers
	// partners and Epoch its promotion; Failovers the last promotions,
	// newest first.
	Role string `json:"role,omitempty"`
	// Ready says this gateway, a standby, would take the role at once if
	// it were free: it reached etcd long enough (the failsafe's wait).
	Ready     bool              `json:"ready,omitempty"`
	Active    string            `json:"active,omitempty"`
	Epoch     int64             `json:"epoch,omitempty"`
	Failovers []ClusterFailover `json:"failovers,omitempty"`
}

// ClusterFailover is one promotion: To took the active role from From ("" if
// none held it) at At, under Epoch.
type ClusterFailover struct {
	Epoch int64     `json:"epoch"`
	From  string    `json:"from"`
	To    string    `json:"to"`
	At    time.Time `json:"at"`
}

// Switchover is the answer to a switchover: From handed the active role to
// To, under Epoch.
type Switchover struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Epoch int64  `json:"epoch"`
}

// ClusterGateway is one gateway that follows the cluster's state.
type ClusterGateway struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// Failsafe is where the other gateways ask this one whether it
	// reaches etcd (cluster-listen); empty without one.
	Failsafe string `json:"failsafe,omitempty"`
}

// CheckHeader set to CheckMay on any request makes extranetd decide it
// without carrying it out: 204 No Content when the caller may make it, the
// refusal (403, audited) or the error in its query otherwise. Nothing
// changes, and the handler never runs.
const (
	CheckHeader = "X-Extranet-Check"
	CheckMay    = "may"
)

// Error codes. Each maps to one HTTP status and one CLI exit code.
const (
	CodeInvalid   = "invalid_argument"
	CodeNotFound  = "not_found"
	CodeConflict  = "conflict"
	CodeInternal  = "internal"
	CodeTooLarge  = "too_large"
	CodeExhausted = "resource_exhausted"
	CodeDenied    = "permission_denied"
	// CodeForbidden: the caller's roles do not allow the request.
	CodeForbidden = "forbidden"
	// CodeNotApplied: the change is saved, but the kernel has not followed
	// (yet); extranetd keeps trying.
	CodeNotApplied = "not_applied"
	// CodeRateLimited: too many attempts from one address or with one
	// enrollment link; wait and try again.
	CodeRateLimited = "rate_limited"
)

// Error is the body of every non-2xx response.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// HTTPStatus is the status an Error is sent with.
func (e *Error) HTTPStatus() int {
	switch e.Code {
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeConflict:
		return http.StatusConflict
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeExhausted:
		return http.StatusInsufficientStorage
	case CodeDenied, CodeForbidden:
		return http.StatusForbidden
	case CodeNotApplied:
		return http.StatusServiceUnavailable
	case CodeRateLimited:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// ExtendRequest sets a new expiry: a date, an RFC 3339 time, a duration from
// now, or "never".
type ExtendRequest struct {
	Expires string `json:"expires"`
}

// VerifyResult is the outcome of `audit verify`.
type VerifyResult struct {
	OK       bool   `json:"ok"`
	Events   int    `json:"events"`
	BrokenAt uint64 `json:"broken_at,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// ExpireRequest asks the gateway to retire idle, unused and expired peers.
// Zero durations and an empty action take the daemon's configured defaults.
type ExpireRequest struct {
	Idle   string `json:"idle,omitempty"`   // last handshake older than this
	Unused string `json:"unused,omitempty"` // issued longer ago than this and never connected
	Action string `json:"action,omitempty"` // suspend or revoke
	DryRun bool   `json:"dry_run,omitempty"`
}

// ExpireAction is what expire did (or would do) to one peer or organisation.
type ExpireAction struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
	From   string `json:"from"`
	To     string `json:"to"`
}

// ExpireResult lists every action, in target order.
type ExpireResult struct {
	DryRun  bool           `json:"dry_run"`
	Actions []ExpireAction `json:"actions"`
}

// CSV carries an import or export file.
type CSV struct {
	CSV string `json:"csv"`
}

// ImportResult counts what an import created.
type ImportResult struct {
	Orgs   int `json:"orgs"`
	Groups int `json:"groups"`
	Peers  int `json:"peers"`
}

// RoleRequest assigns or revokes a role. Subject is a unix user name or
// @group; Orgs are a sponsor's organisations.
type RoleRequest struct {
	Subject string   `json:"subject"`
	Role    string   `json:"role"`
	Orgs    []string `json:"orgs,omitempty"`
	// Force revokes a user's last role of its own even though its groups'
	// roles then apply to it.
	Force bool `json:"force,omitempty"`
}

// RoleAssignment is one subject's role.
type RoleAssignment struct {
	Subject string   `json:"subject"`
	Role    string   `json:"role"`
	Orgs    []string `json:"orgs,omitempty"`
}

// WhoAmI is the caller as the daemon sees it.
type WhoAmI struct {
	User   string   `json:"user"`
	UID    uint32   `json:"uid"`
	Groups []string `json:"groups"`
	// Roles are what the caller holds, e.g. "admin", "sponsor of acme".
	Roles []string `json:"roles"`
}

// Request states.
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestDenied   = "denied"
	RequestExpired  = "expired"
)

// Invite lets partners enroll devices themselves into one group of one
// organisation. Its token is shown once, in the link, and kept only as a
// hash.
type Invite struct {
	// ID is ORG/ID.
	ID          string    `json:"id"`
	Org         string    `json:"org"`
	Group       string    `json:"group"`
	Devices     int       `json:"devices"`
	Used        int       `json:"used"`
	Expires     time.Time `json:"expires"`
	Contact     string    `json:"contact,omitempty"`
	AutoApprove bool      `json:"auto_approve"`
	// State is active, used (every device enrolled), expired or revoked.
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// CreateInviteRequest creates an invite.
type CreateInviteRequest struct {
	Group       string `json:"group,omitempty"`
	Devices     int    `json:"devices,omitempty"`
	Expires     string `json:"expires,omitempty"`
	Contact     string `json:"contact,omitempty"`
	AutoApprove bool   `json:"auto_approve,omitempty"`
}

// CreatedInvite is a new invite and its link, which holds the token: it is
// shown here once.
type CreatedInvite struct {
	Invite Invite `json:"invite"`
	Link   string `json:"link"`
}

// EnrollRequest is what a partner's enrollment page submits.
type EnrollRequest struct {
	Token     string `json:"token"`
	Device    string `json:"device"`
	PublicKey string `json:"public_key"`
	// KeyFrom is "browser" (made by the page) or "pasted" (a WireGuard
	// app's public key).
	KeyFrom string `json:"key_from"`
}

// EnrollAccepted answers a submission: the page polls the request's state
// with the secret, which nobody else has.
type EnrollAccepted struct {
	Request string `json:"request"`
	Secret  string `json:"secret"`
	State   string `json:"state"`
}

// EnrollStatusRequest asks for a request's state.
type EnrollStatusRequest struct {
	Request string `json:"request"`
	Secret  string `json:"secret"`
}

// EnrollStatus is a request's state as its page sees it. Once approved,
// Config is the device's wg-quick config; for a key made in the page its
// PrivateKey line holds wgconfig.PageKeyMarker, which the page replaces.
type EnrollStatus struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	Config string `json:"config,omitempty"`
}

// Request is an enrollment request as admins and sponsors see it.
type Request struct {
	// ID is ORG/ID.
	ID        string    `json:"id"`
	Org       string    `json:"org"`
	Group     string    `json:"group"`
	Invite    string    `json:"invite"`
	Device    string    `json:"device"`
	PublicKey string    `json:"public_key"`
	KeyFrom   string    `json:"key_from"`
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
	Expires   time.Time `json:"expires"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	DecidedBy string    `json:"decided_by,omitempty"`
}

// DenyRequest says why a request is denied; the partner's page shows it.
type DenyRequest struct {
	Reason string `json:"reason"`
}
