package sshserver

import "github.com/gitssh-dev/gitssh/internal/authorizer"

// Identity and Repository are the authorizer's; aliased for readability.
type (
	Identity   = authorizer.Identity
	Repository = authorizer.Repository
)

// Authorizer is what the server asks on every login and command.
// *authorizer.Authorizer satisfies it.
type Authorizer interface {
	// UserForKey returns who a key fingerprint (ssh.FingerprintSHA256) logs in
	// as now: a user, or a deploy key bound to one project.
	UserForKey(fingerprint string) (Identity, bool)
	// ExpiredKey returns who a key that UserForKey refuses because it expired was
	// registered for, so that the refusal is recorded.
	ExpiredKey(fingerprint string) (Identity, bool)
	// Authorize returns the repository the identity may access, if any.
	Authorize(id Identity, owner, project string, access authorizer.Access) (Repository, bool)
	// ProjectOwner reports whether OWNER/PROJECT exists at all. Only the
	// metrics tell "not found" from "denied"; a client is never told.
	ProjectOwner(owner, project string) (authorizer.ObjectRef, bool)
}

// Recorder is told what happened, for "last used" bookkeeping. The server
// calls it inline on the connection's goroutine: implementations must return
// quickly and never block (record in memory, flush elsewhere).
type Recorder interface {
	// LoginSucceeded: the identity's key was verified.
	LoginSucceeded(Identity)
	// KeyRefused: a registered key was offered but never proven by the end of
	// the handshake, or was offered after it expired, or its user (or deploy
	// key) was refused the repository it asked for.
	KeyRefused(Identity)
	// Pushed: git-receive-pack succeeded.
	Pushed(Repository)
	// Fetched: git-upload-pack or git-upload-archive succeeded.
	Fetched(Repository)
}

// NopRecorder records nothing.
type NopRecorder struct{}

func (NopRecorder) LoginSucceeded(Identity) {}
func (NopRecorder) KeyRefused(Identity)     {}
func (NopRecorder) Pushed(Repository)       {}
func (NopRecorder) Fetched(Repository)      {}

var _ Authorizer = (*authorizer.Authorizer)(nil)
