// Package authorizer holds the in-memory view of who may log in with which key
// and who may read or write which project. Controllers feed it from the
// SSHPublicKey and GitProject objects; the SSH server reads it on every login.
// It knows nothing of Kubernetes: objects are named by an opaque ObjectRef.
package authorizer

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// ObjectRef names the object a key or project came from.
type ObjectRef struct {
	Namespace string
	Name      string
}

// String returns "namespace/name".
func (r ObjectRef) String() string { return r.Namespace + "/" + r.Name }

// Key is one registered public key: a user's, or a deploy key bound to one project.
type Key struct {
	// Fingerprint as returned by ssh.FingerprintSHA256 ("SHA256:...").
	Fingerprint string
	// User the key logs in as; empty for a deploy key.
	User string
	// Deploy binds a deploy key to its project; nil for a user's key.
	Deploy *Deploy
	// Created orders claims on the same fingerprint: the oldest wins.
	Created time.Time
	// Expires is the instant from which the key no longer logs in; zero: never.
	Expires time.Time
}

// Deploy is the one project a deploy key reaches, and what it may do there.
type Deploy struct {
	Owner, Name string
	Access      Access
}

// Identity is who a verified key or certificate belongs to: a user, or a deploy binding.
type Identity struct {
	// User is empty for a deploy key.
	User string
	// Deploy is set for a deploy key only.
	Deploy *Deploy
	// Key is the object of a registered key; zero for a certificate, which has none.
	Key         ObjectRef
	Fingerprint string
	// CA is the SHA256 fingerprint of the CA that signed the user's certificate; empty for
	// a registered key.
	CA string
}

// String names the identity for people: the user name, or "deploy key for OWNER/NAME".
func (id Identity) String() string {
	if id.Deploy != nil {
		return "deploy key for " + id.Deploy.Owner + "/" + id.Deploy.Name
	}
	return id.User
}

// Visibility says who may read a project besides its owner and members.
type Visibility string

const (
	// Private projects are visible to their owner and members only.
	Private Visibility = "Private"
	// Public projects are readable by every authenticated user.
	Public Visibility = "Public"
)

// Role is what a member may do in a project; each role includes the ones before it.
type Role int

const (
	// RoleNone grants nothing; it is the zero value.
	RoleNone Role = iota
	// RoleRead may fetch, clone and archive.
	RoleRead
	// RoleWrite may also push.
	RoleWrite
	// RoleAdmin may do everything a project allows; the owner is always Admin.
	RoleAdmin
)

// Access is what a git command needs.
type Access int

const (
	// AccessRead is needed by git-upload-pack and git-upload-archive.
	AccessRead Access = iota + 1
	// AccessWrite is needed by git-receive-pack.
	AccessWrite
)

// String returns "read" or "write".
func (a Access) String() string {
	switch a {
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	}
	return "none"
}

// allows reports whether the role grants the access.
func (r Role) allows(a Access) bool {
	switch a {
	case AccessRead:
		return r >= RoleRead
	case AccessWrite:
		return r >= RoleWrite
	}
	return false
}

// Project is one git project.
type Project struct {
	// Owner and Name form the project's address OWNER/NAME. Both are compared
	// case-sensitively, like the repository directory names on disk.
	Owner string
	Name  string
	// Visibility defaults to Private when empty.
	Visibility Visibility
	// Members maps user names to roles. The map is copied by SetProject.
	Members map[string]Role
	// RepositoryPath is the bare repository directory on disk.
	RepositoryPath string
	// Quota bounds the repository's size in bytes; 0 means no quota.
	Quota int64
	// Created orders claims on the same OWNER/NAME: the oldest wins.
	Created time.Time
}

// Repository is what an authorized command may work on.
type Repository struct {
	Path    string
	Project ObjectRef
	Owner   string
	Name    string
	// Quota bounds the repository's size in bytes; 0 means no quota.
	Quota int64
}

type projectName struct{ owner, name string }

// Authorizer answers login and access questions. The zero value is not
// usable; call New. All methods are safe for concurrent use: lookups take a
// read lock and are O(1), writers take the write lock.
type Authorizer struct {
	// Now is the clock expiry is checked against; time.Now when nil. Set it
	// before the Authorizer is used.
	Now func() time.Time

	mu sync.RWMutex

	// fingerprints is the fingerprint each key object claims.
	fingerprints map[ObjectRef]string
	// claims lists, per fingerprint, the keys claiming it, oldest first.
	claims map[string][]keyClaim

	projects map[ObjectRef]project
	// names lists, per OWNER/NAME, the objects claiming it, winner first.
	names map[projectName][]ObjectRef
}

// New returns an empty Authorizer.
func New() *Authorizer {
	return &Authorizer{
		fingerprints: map[ObjectRef]string{},
		claims:       map[string][]keyClaim{},
		projects:     map[ObjectRef]project{},
		names:        map[projectName][]ObjectRef{},
	}
}

// olderFirst orders claimants: the oldest Created first, ties broken by the
// object's "namespace/name" so every replica picks the same winner.
func olderFirst(created func(ObjectRef) time.Time) func(a, b ObjectRef) int {
	return func(a, b ObjectRef) int { return compareAge(created(a), a, created(b), b) }
}

func compareAge(ta time.Time, a ObjectRef, tb time.Time, b ObjectRef) int {
	if c := ta.Compare(tb); c != 0 {
		return c
	}
	return strings.Compare(a.String(), b.String())
}

// keyClaim is one object's key as the claim lists hold it: all a login reads, found
// with one map lookup (the fingerprint is the map's key), where a map of whole Keys by
// object took one lookup per claimant more. 282 bytes a key instead of 320
// (BenchmarkMemory).
type keyClaim struct {
	ref              ObjectRef
	user             string
	deploy           *Deploy
	created, expires time.Time
}

func (k keyClaim) identity(fingerprint string) Identity {
	return Identity{User: k.user, Deploy: k.deploy, Key: k.ref, Fingerprint: fingerprint}
}

// SetKey adds or replaces the key of the object ref. A changed fingerprint
// drops the object's claim on the old one.
func (a *Authorizer) SetKey(ref ObjectRef, key Key) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeKeyLocked(ref)
	a.fingerprints[ref] = key.Fingerprint
	c := append(a.claims[key.Fingerprint], keyClaim{
		ref: ref, user: key.User, deploy: key.Deploy, created: key.Created, expires: key.Expires,
	})
	slices.SortFunc(c, func(x, y keyClaim) int { return compareAge(x.created, x.ref, y.created, y.ref) })
	a.claims[key.Fingerprint] = c
}

// RemoveKey forgets the key of the object ref; the next oldest claimant of
// the same fingerprint, if any, takes over.
func (a *Authorizer) RemoveKey(ref ObjectRef) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeKeyLocked(ref)
}

func (a *Authorizer) removeKeyLocked(ref ObjectRef) {
	fingerprint, ok := a.fingerprints[ref]
	if !ok {
		return
	}
	delete(a.fingerprints, ref)
	c := slices.DeleteFunc(slices.Clone(a.claims[fingerprint]), func(k keyClaim) bool { return k.ref == ref })
	if len(c) == 0 {
		delete(a.claims, fingerprint)
		return
	}
	a.claims[fingerprint] = c
}

// KeyOwner returns the object whose claim on the fingerprint logs in now.
func (a *Authorizer) KeyOwner(fingerprint string) (ObjectRef, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	winner, ok := a.keyWinnerLocked(fingerprint)
	return winner.ref, ok
}

// UserForKey returns the identity a fingerprint logs in as now. Expiry is checked
// here, on every lookup, so a key stops logging in at its instant without
// waiting for a controller.
func (a *Authorizer) UserForKey(fingerprint string) (Identity, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	winner, ok := a.keyWinnerLocked(fingerprint)
	if !ok {
		return Identity{}, false
	}
	return winner.identity(fingerprint), true
}

// ExpiredKey returns, for a registered key that UserForKey refuses because it expired, the
// identity of its oldest claim (the one whose expiry ended it), so that the refusal can be
// recorded against that object.
func (a *Authorizer) ExpiredKey(fingerprint string) (Identity, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	claims := a.claims[fingerprint]
	if _, ok := a.keyWinnerLocked(fingerprint); ok || len(claims) == 0 {
		return Identity{}, false
	}
	return claims[0].identity(fingerprint), true
}

func (a *Authorizer) keyWinnerLocked(fingerprint string) (keyClaim, bool) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	return pickClaim(a.claims[fingerprint], func(k keyClaim) time.Time { return k.expires }, now())
}

// Claim is one object's claim on a key, as the claim rule sees it.
type Claim struct {
	Ref     ObjectRef
	Created time.Time
	// Expires is zero for a key that never expires.
	Expires time.Time
}

// ClaimWinner applies the rule UserForKey applies to the claims on one key at
// the instant now, for callers that hold the claims themselves (the controller
// writing each object's status). ok is false when no claim logs in.
func ClaimWinner(claims []Claim, now time.Time) (winner Claim, ok bool) {
	sorted := slices.Clone(claims)
	slices.SortFunc(sorted, func(x, y Claim) int { return compareAge(x.Created, x.Ref, y.Created, y.Ref) })
	return pickClaim(sorted, func(c Claim) time.Time { return c.Expires }, now)
}

// pickClaim is the claim rule. Claims come oldest first and the oldest one that
// has not expired wins, so one key never logs in as two identities. But once a
// claim has expired, a younger one wins only with an expiry of its own: an
// expired key cannot come back, under a new object, without a new (later)
// expiry (the rule GitLab added after users re-registered expired keys).
func pickClaim[T any](oldestFirst []T, expires func(T) time.Time, now time.Time) (T, bool) {
	sawExpired := false
	for _, c := range oldestFirst {
		exp := expires(c)
		switch {
		case !exp.IsZero() && !now.Before(exp):
			sawExpired = true
		case sawExpired && exp.IsZero():
		default:
			return c, true
		}
	}
	var none T
	return none, false
}

// SetProject adds or replaces the project of the object ref. A changed
// OWNER/NAME drops the object's claim on the old one.
func (a *Authorizer) SetProject(ref ObjectRef, p Project) {
	members := make([]member, 0, len(p.Members))
	for user, role := range p.Members {
		members = append(members, member{user, role})
	}
	slices.SortFunc(members, func(x, y member) int { return strings.Compare(x.user, y.user) })
	p.Members = nil
	if p.Visibility == "" {
		p.Visibility = Private
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeProjectLocked(ref)
	a.projects[ref] = project{Project: p, members: members}
	n := projectName{p.Owner, p.Name}
	c := append(a.names[n], ref)
	slices.SortFunc(c, olderFirst(func(r ObjectRef) time.Time { return a.projects[r].Created }))
	a.names[n] = c
}

// project is a Project as the Authorizer holds it: its members in a slice sorted by
// user instead of a map, which for a project with one member is 24 bytes instead of
// about 250 (BenchmarkMemory).
type project struct {
	Project // Members nil
	members []member
}

type member struct {
	user string
	role Role
}

// role is the user's role as a member of p.
func (p *project) role(user string) Role {
	i, found := slices.BinarySearchFunc(p.members, user, func(m member, user string) int { return strings.Compare(m.user, user) })
	if !found {
		return RoleNone
	}
	return p.members[i].role
}

// RemoveProject forgets the project of the object ref; the next oldest
// claimant of the same OWNER/NAME, if any, takes over.
func (a *Authorizer) RemoveProject(ref ObjectRef) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeProjectLocked(ref)
}

func (a *Authorizer) removeProjectLocked(ref ObjectRef) {
	old, ok := a.projects[ref]
	if !ok {
		return
	}
	delete(a.projects, ref)
	n := projectName{old.Owner, old.Name}
	c := slices.DeleteFunc(slices.Clone(a.names[n]), func(r ObjectRef) bool { return r == ref })
	if len(c) == 0 {
		delete(a.names, n)
		return
	}
	a.names[n] = c
}

// ProjectOwner returns the object whose claim on OWNER/NAME wins.
// The lookup is case-sensitive.
func (a *Authorizer) ProjectOwner(owner, name string) (ObjectRef, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	c := a.names[projectName{owner, name}]
	if len(c) == 0 {
		return ObjectRef{}, false
	}
	return c[0], true
}

// Authorize reports whether the identity may have access to the project
// OWNER/NAME, and if so which repository to work on. The rules:
//   - a deploy key reaches its own project only, with its own access, and
//     nothing else (not even Public projects);
//   - a user named like the owner is Admin;
//   - members get their role (Write implies Read, Admin implies Write);
//   - Public projects are readable by every authenticated user (any non-empty
//     user name, which the SSH server only has after a registered key or a
//     certificate from a trusted CA logged in);
//   - anything else, including an unknown project, is refused.
//
// Names are compared case-sensitively: "Acme/API" and "acme/api" are two projects.
func (a *Authorizer) Authorize(id Identity, owner, name string, access Access) (Repository, bool) {
	if d := id.Deploy; d != nil {
		if d.Owner != owner || d.Name != name || access > d.Access {
			return Repository{}, false
		}
	} else if id.User == "" {
		return Repository{}, false
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	c := a.names[projectName{owner, name}]
	if len(c) == 0 {
		return Repository{}, false
	}
	p := a.projects[c[0]]
	if id.Deploy == nil {
		role := p.role(id.User)
		if id.User == p.Owner {
			role = RoleAdmin
		}
		if !role.allows(access) && !(p.Visibility == Public && access == AccessRead) {
			return Repository{}, false
		}
	}
	return Repository{Path: p.RepositoryPath, Project: c[0], Owner: p.Owner, Name: p.Name, Quota: p.Quota}, true
}
