/*
Copyright 2026 The gitssh Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

// ConditionReady is the condition type on every gitssh object: True when the object
// does what it asks for, False with a reason below when it does not.
const ConditionReady = "Ready"

// ConditionWithinQuota is on a GitProject with spec.quota: True while its repository is
// below the quota, False (reason ReasonOverQuota) once pushes are refused. It is separate
// from Ready because an over-quota repository is still served: it can be cloned and
// fetched.
const ConditionWithinQuota = "WithinQuota"

// ConditionStale is on an SSHPublicKey when the server runs with --stale-key-after: True
// (reason ReasonUnused) when the key has not logged in for that long, or never since it
// was created. A stale key still logs in; the condition shows keys nobody uses, to delete.
const ConditionStale = "Stale"

// ConditionMaintenance is on a GitProject once housekeeping has run on its repository:
// True when the last run succeeded, False (reason ReasonMaintenanceFailed) when it failed.
// A failed run does not stop the repository from being served.
const ConditionMaintenance = "Maintenance"

// Reasons of the Maintenance condition of a GitProject.
const (
	// ReasonMaintenanceSucceeded: the last housekeeping run packed the repository; the
	// message says what kind of run it was.
	ReasonMaintenanceSucceeded = "MaintenanceSucceeded"
	// ReasonMaintenanceFailed: a git command of the last run failed; the message names it
	// and carries git's output. The repository is as it was before the command.
	ReasonMaintenanceFailed = "MaintenanceFailed"
	// ReasonMaintenanceTimedOut: the last run took longer than --housekeeping-timeout and
	// was stopped.
	ReasonMaintenanceTimedOut = "MaintenanceTimedOut"
)

// Reasons of the Ready condition of an SSHPublicKey.
const (
	// ReasonKeyRegistered: the key parsed, is strong enough and is the only object holding
	// it; it can log in.
	ReasonKeyRegistered = "KeyRegistered"
	// ReasonExpiringSoon: the key logs in (Ready is True) but reaches its expiration time
	// within the server's --key-expiry-warning; a Warning event says so once.
	ReasonExpiringSoon = "ExpiringSoon"
	// ReasonExpired: the key's expiration time (spec.expirationTime, or the server's
	// --max-key-lifetime) has passed; it no longer logs in.
	ReasonExpired = "Expired"
	// ReasonInvalidKey: spec.publicKey could not be parsed as an OpenSSH public key; the
	// message carries the parse error.
	ReasonInvalidKey = "InvalidKey"
	// ReasonWeakKey: the key's algorithm or size is refused (DSA, RSA under 2048 bits).
	ReasonWeakKey = "WeakKey"
	// ReasonDuplicateKey: an older SSHPublicKey holds the same key; the message names it.
	// One key never logs in as two users, or as a user and a deploy key. Also the reason
	// when the older object has expired and this one never expires: an expired key comes
	// back only with a new expiry.
	ReasonDuplicateKey = "DuplicateKey"
	// ReasonProjectNotFound: a deploy key whose spec.project no GitProject serves; it logs
	// in but reaches nothing. It turns Ready once such a GitProject exists.
	ReasonProjectNotFound = "ProjectNotFound"
)

// Reasons of the Stale condition of an SSHPublicKey.
const (
	// ReasonUnused: the key has not logged in for longer than --stale-key-after.
	ReasonUnused = "Unused"
	// ReasonRecentlyUsed: the key logged in, or was created, within --stale-key-after.
	ReasonRecentlyUsed = "RecentlyUsed"
)

// Reasons of the Ready condition of a GitProject.
const (
	// ReasonRepositoryReady: the bare repository exists and is served at status.cloneURL.
	ReasonRepositoryReady = "RepositoryReady"
	// ReasonProjectConflict: an older GitProject already serves the same owner/project;
	// the message names it.
	ReasonProjectConflict = "ProjectConflict"
	// ReasonRepositoryError: the repository could not be created or opened on the volume;
	// the message carries the error.
	ReasonRepositoryError = "RepositoryError"
	// ReasonNotServing: the repository exists but the SSH server is not accepting
	// connections yet, so there is no clone URL to show.
	ReasonNotServing = "NotServing"
)

// Reasons of the WithinQuota condition of a GitProject.
const (
	// ReasonWithinQuota: the repository is smaller than spec.quota; pushes are limited to
	// what is left.
	ReasonWithinQuota = "WithinQuota"
	// ReasonOverQuota: the repository has reached spec.quota; pushes are refused until it
	// is below, because the quota was raised or the repository cleaned up.
	ReasonOverQuota = "OverQuota"
)
