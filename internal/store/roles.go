package store

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/extranetgw/extranet/internal/authz"
)

var keyRolesBootstrapped = []byte("roles_bootstrapped")

func roleKey(subject string, role authz.Role) []byte {
	return []byte(subject + "\x00" + string(role))
}

// Roles returns every role assignment, by subject, then role.
func (t *Tx) Roles() ([]authz.Assignment, error) {
	var out []authz.Assignment
	err := t.bucket(bucketRoles).ForEach(func(k, v []byte) error {
		var a authz.Assignment
		if err := json.Unmarshal(v, &a); err != nil {
			return fmt.Errorf("decode role %q: %w", k, err)
		}
		out = append(out, a)
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Subject != out[j].Subject {
			return out[i].Subject < out[j].Subject
		}
		return out[i].Role < out[j].Role
	})
	return out, err
}

// Role returns a subject's assignment of a role, nil when it has none.
func (t *Tx) Role(subject string, role authz.Role) (*authz.Assignment, error) {
	var a authz.Assignment
	if err := getJSON(t.bucket(bucketRoles), roleKey(subject, role), &a); err != nil {
		if err == ErrNotFound {
			return nil, nil
		}
		return nil, err
	}
	return &a, nil
}

// PutRole writes an assignment.
func (t *Tx) PutRole(a authz.Assignment) error {
	return putJSON(t.bucket(bucketRoles), roleKey(a.Subject, a.Role), a)
}

// DeleteRole removes a subject's assignment of a role.
func (t *Tx) DeleteRole(subject string, role authz.Role) error {
	return t.bucket(bucketRoles).Delete(roleKey(subject, role))
}

// RolesBootstrapped reports whether the first assignments were made, and
// MarkRolesBootstrapped records that they were: they are made once, and
// an admin who revoked them later does not get them back at a restart.
func (t *Tx) RolesBootstrapped() bool {
	return t.bucket(bucketMeta).Get(keyRolesBootstrapped) != nil
}

// MarkRolesBootstrapped: see RolesBootstrapped.
func (t *Tx) MarkRolesBootstrapped() error {
	return t.bucket(bucketMeta).Put(keyRolesBootstrapped, []byte{1})
}
