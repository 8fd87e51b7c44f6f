// Package authz decides who may do what. Identity is the caller's unix
// user, from the socket's peer credentials, with the groups /etc/group
// gives it; roles are assigned to users and to groups (@name). The rules
// here are the whole model: the API server asks Decide once per request,
// and nothing else checks permissions.
package authz

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Role is what a subject may do.
type Role string

// Roles.
const (
	// Admin may do everything.
	Admin Role = "admin"
	// Sponsor manages the peers of some organisations, and their groups
	// within the ceiling an admin granted: nothing else, and no other
	// organisation, not even its name.
	Sponsor Role = "sponsor"
	// Auditor reads everything except secrets, and verifies the audit log.
	Auditor Role = "auditor"
	// Expirer runs expire, and nothing else.
	Expirer Role = "expirer"
)

// Roles lists every role, for completion and validation.
var Roles = []Role{Admin, Sponsor, Auditor, Expirer}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("role %q: use admin, sponsor, auditor or expirer", s)
}

// Action is one kind of request.
type Action string

// Actions. Each API route maps to one.
const (
	ReadStatus   Action = "status"
	ManageOrgs   Action = "org.manage"         // create, delete, grant, ungrant, suspend, resume, extend
	ReadOrgs     Action = "org.read"           // list and show
	ManagePeers  Action = "peer.manage"        // issue, suspend, resume, revoke, rotate, extend, move
	ManageGroups Action = "group.manage"       // create, grant, ungrant and delete groups, within the org's grants
	ReadPeers    Action = "peer.read"          // list and show, no secrets
	ReadSecrets  Action = "peer.config"        // a peer's config, with its preshared key
	RunExpire    Action = "expire"             // suspend or revoke idle and expired peers
	ImportState  Action = "import"             // load peers and orgs from CSV
	ExportState  Action = "export"             // CSV with preshared keys, and backups
	ReadAudit    Action = "audit.read"         // the audit log
	ReadActivity Action = "activity.read"      // what partners did: their flows through the gateway
	VerifyAudit  Action = "audit.verify"       // check the hash chain
	ManageRoles  Action = "role.manage"        // assign and revoke
	ReadRoles    Action = "role.read"          // list
	ReadWhoAmI   Action = "whoami"             // the caller's own identity and roles
	Switchover   Action = "cluster.switchover" // move a cluster's active role to another gateway
)

// Actions lists every action, for the tests that cover them all.
var Actions = []Action{ReadStatus, ManageOrgs, ReadOrgs, ManagePeers, ManageGroups, ReadPeers, ReadSecrets,
	RunExpire, ImportState, ExportState, ReadAudit, ReadActivity, VerifyAudit, ManageRoles, ReadRoles, ReadWhoAmI, Switchover}

// scoped actions are about one organisation, which a sponsor must hold.
var scoped = map[Action]bool{ReadStatus: true, ReadOrgs: true, ManagePeers: true, ManageGroups: true, ReadPeers: true, ReadSecrets: true, ReadAudit: true, ReadActivity: true}

// allowed says which roles may take each action, besides admin.
var allowed = map[Action][]Role{
	ReadStatus:   {Sponsor, Auditor},
	ReadOrgs:     {Sponsor, Auditor},
	ManagePeers:  {Sponsor},
	ManageGroups: {Sponsor},
	ReadPeers:    {Sponsor, Auditor},
	ReadSecrets:  {Sponsor},
	RunExpire:    {Expirer},
	ReadAudit:    {Sponsor, Auditor},
	ReadActivity: {Sponsor, Auditor},
	VerifyAudit:  {Auditor},
	ReadRoles:    {Auditor},
	ReadWhoAmI:   {Sponsor, Auditor, Expirer},
}

// Assignment gives a subject a role; a sponsor's for some organisations.
type Assignment struct {
	// Subject is a user name, or @group.
	Subject string   `json:"subject"`
	Role    Role     `json:"role"`
	Orgs    []string `json:"orgs,omitempty"`
}

// Caller is who is asking.
type Caller struct {
	User   string
	UID    uint32
	Groups []string
}

// Grants are what a caller holds: the union of the assignments that name
// the caller or one of its groups.
type Grants struct {
	Roles map[Role]bool
	// Sponsored are the organisations the caller sponsors.
	Sponsored map[string]bool
}

// For works out a caller's grants. A user's own assignments, when it has
// any, replace those of its groups: the expire timer's account may sit in
// the socket group, which a fresh install makes admin, and still be an
// expirer only; so may a sponsor. Without any, the caller holds the union
// of its groups' assignments. Root is always admin: the way in when every
// assignment is lost.
func For(c Caller, assignments []Assignment) Grants {
	g := Grants{Roles: map[Role]bool{}, Sponsored: map[string]bool{}}
	if c.UID == 0 {
		g.Roles[Admin] = true
	}
	var own, groups []Assignment
	for _, a := range assignments {
		switch {
		case a.Subject == c.User:
			own = append(own, a)
		case strings.HasPrefix(a.Subject, "@") && slices.Contains(c.Groups, a.Subject[1:]):
			groups = append(groups, a)
		}
	}
	if len(own) == 0 {
		own = groups
	}
	for _, a := range own {
		g.Roles[a.Role] = true
		if a.Role == Sponsor {
			for _, o := range a.Orgs {
				g.Sponsored[o] = true
			}
		}
	}
	return g
}

// Decision is the answer to one request.
type Decision struct {
	Allowed bool
	// Filter is set when the caller may see only some organisations (a
	// sponsor listing): the answer must keep those alone.
	Filter map[string]bool
	// Needs says, for a refusal, which role the action needs.
	Needs string
}

// Decide answers whether g may take action on org (empty: no organisation
// named, e.g. a list).
func (g Grants) Decide(action Action, org string) Decision {
	// Anyone the socket lets in may ask who it is, and so learn why it was
	// refused.
	if g.Roles[Admin] || action == ReadWhoAmI {
		return Decision{Allowed: true}
	}
	var needs []string
	// Roles that see everything first: an auditor who also sponsors an
	// organisation lists them all.
	for _, r := range allowed[action] {
		if r == Sponsor {
			continue
		}
		if g.Roles[r] {
			return Decision{Allowed: true}
		}
		needs = append(needs, string(r))
	}
	if slices.Contains(allowed[action], Sponsor) {
		switch {
		case !scoped[action]:
			if g.Roles[Sponsor] {
				return Decision{Allowed: true}
			}
			needs = append(needs, "sponsor")
		case org == "":
			if g.Roles[Sponsor] {
				return Decision{Allowed: true, Filter: g.Sponsored}
			}
			needs = append(needs, "sponsor")
		case g.Sponsored[org]:
			return Decision{Allowed: true}
		default:
			needs = append(needs, "sponsor of "+org)
		}
	}
	return Decision{Needs: needsText(needs)}
}

func needsText(roles []string) string {
	all := append([]string{"admin"}, roles...)
	if len(all) == 1 {
		return "admin"
	}
	return strings.Join(all[:len(all)-1], ", ") + " or " + all[len(all)-1]
}

// Describe lists a caller's roles for people, e.g. "sponsor of acme, globex".
func (g Grants) Describe() []string {
	var out []string
	for _, r := range Roles {
		if !g.Roles[r] {
			continue
		}
		if r == Sponsor {
			orgs := make([]string, 0, len(g.Sponsored))
			for o := range g.Sponsored {
				orgs = append(orgs, o)
			}
			sort.Strings(orgs)
			out = append(out, "sponsor of "+strings.Join(orgs, ", "))
			continue
		}
		out = append(out, string(r))
	}
	return out
}
