package store

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

var (
	// bucketInvites maps ORG/ID to an invite.
	bucketInvites = []byte("invites")
	// bucketInviteTokens maps the SHA-256 of an invite's token to its
	// ORG/ID. The token itself is stored nowhere.
	bucketInviteTokens = []byte("invite_tokens")
	// bucketRequests maps ORG/ID to an enrollment request.
	bucketRequests = []byte("requests")
)

// Invite lets partners enroll devices into one group of one organisation:
// up to Devices of them, until Expires.
type Invite struct {
	Org         string    `json:"org"`
	ID          string    `json:"id"`
	Group       string    `json:"group"`
	Devices     int       `json:"devices"`
	Used        int       `json:"used"`
	Expires     time.Time `json:"expires"`
	Contact     string    `json:"contact,omitempty"`
	AutoApprove bool      `json:"auto_approve,omitempty"`
	Revoked     bool      `json:"revoked,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Key is the ORG/ID form.
func (i *Invite) Key() string { return i.Org + "/" + i.ID }

// Request is a device a partner submitted through an invite, waiting for
// a sponsor's decision, or decided.
type Request struct {
	Org    string `json:"org"`
	ID     string `json:"id"`
	Invite string `json:"invite"`
	Group  string `json:"group"`
	// Device is the peer's name once approved.
	Device    string `json:"device"`
	PublicKey string `json:"public_key"`
	// KeyFrom says where the key pair was made: "browser" (WebCrypto, in
	// the enrollment page) or "pasted" (a WireGuard app's).
	KeyFrom string `json:"key_from"`
	State   string `json:"state"`
	Reason  string `json:"reason,omitempty"`
	// Source is the address the request came from.
	Source string `json:"source"`
	// SecretHash is the SHA-256 of the secret the page polls with; the
	// secret itself is the page's alone.
	SecretHash []byte    `json:"secret_hash"`
	CreatedAt  time.Time `json:"created_at"`
	Expires    time.Time `json:"expires"`
	DecidedAt  time.Time `json:"decided_at,omitzero"`
	DecidedBy  string    `json:"decided_by,omitempty"`
	// Delivered is when the page first got the approved config.
	Delivered time.Time `json:"delivered,omitzero"`
}

// Key is the ORG/ID form.
func (r *Request) Key() string { return r.Org + "/" + r.ID }

// TokenHash is how a token is looked up: only its hash is kept.
func TokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// PutInvite writes an invite and, when token is not empty, the index from
// its hash.
func (t *Tx) PutInvite(i *Invite, token string) error {
	if token != "" {
		if err := t.bucket(bucketInviteTokens).Put(TokenHash(token), []byte(i.Key())); err != nil {
			return err
		}
	}
	return putJSON(t.bucket(bucketInvites), []byte(i.Key()), i)
}

// Invite returns ORG/ID or ErrNotFound.
func (t *Tx) Invite(key string) (*Invite, error) {
	var i Invite
	if err := getJSON(t.bucket(bucketInvites), []byte(key), &i); err != nil {
		return nil, err
	}
	return &i, nil
}

// InviteByToken returns the invite a token opens, or ErrNotFound.
func (t *Tx) InviteByToken(token string) (*Invite, error) {
	key := t.bucket(bucketInviteTokens).Get(TokenHash(token))
	if key == nil {
		return nil, ErrNotFound
	}
	return t.Invite(string(key))
}

// Invites calls fn for every invite, or those of org, in ORG/ID order.
func (t *Tx) Invites(org string, fn func(*Invite) error) error {
	return scanJSON(t.bucket(bucketInvites).Cursor(), org, func(v []byte) error {
		var i Invite
		if err := json.Unmarshal(v, &i); err != nil {
			return fmt.Errorf("decode invite: %w", err)
		}
		return fn(&i)
	})
}

// PutRequest writes an enrollment request.
func (t *Tx) PutRequest(r *Request) error {
	return putJSON(t.bucket(bucketRequests), []byte(r.Key()), r)
}

// Request returns ORG/ID or ErrNotFound.
func (t *Tx) Request(key string) (*Request, error) {
	var r Request
	if err := getJSON(t.bucket(bucketRequests), []byte(key), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Requests calls fn for every request, or those of org, in ORG/ID order.
func (t *Tx) Requests(org string, fn func(*Request) error) error {
	return scanJSON(t.bucket(bucketRequests).Cursor(), org, func(v []byte) error {
		var r Request
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode request: %w", err)
		}
		return fn(&r)
	})
}

// DeleteEnrollment removes an organisation's invites, their tokens and its
// requests, with the organisation.
func (t *Tx) DeleteEnrollment(org string) error {
	var invites, requests [][]byte
	prefix := org + "/"
	if err := t.Invites(org, func(i *Invite) error {
		invites = append(invites, []byte(i.Key()))
		return nil
	}); err != nil {
		return err
	}
	if err := t.Requests(org, func(r *Request) error {
		requests = append(requests, []byte(r.Key()))
		return nil
	}); err != nil {
		return err
	}
	tokens := t.bucket(bucketInviteTokens)
	var stale [][]byte
	if err := tokens.ForEach(func(k, v []byte) error {
		if strings.HasPrefix(string(v), prefix) {
			stale = append(stale, append([]byte(nil), k...))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range stale {
		if err := tokens.Delete(k); err != nil {
			return err
		}
	}
	for _, k := range invites {
		if err := t.bucket(bucketInvites).Delete(k); err != nil {
			return err
		}
	}
	for _, k := range requests {
		if err := t.bucket(bucketRequests).Delete(k); err != nil {
			return err
		}
	}
	return nil
}
