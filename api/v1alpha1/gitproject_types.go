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

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Visibility says who may read a project.
// +kubebuilder:validation:Enum=Private;Public
type Visibility string

const (
	// VisibilityPrivate: only the owner and the members may read.
	VisibilityPrivate Visibility = "Private"
	// VisibilityPublic: every user with a registered key may read; only the owner and
	// members with Write or Admin may push.
	VisibilityPublic Visibility = "Public"
)

// Role is what a member may do in a project.
// +kubebuilder:validation:Enum=Read;Write;Admin
type Role string

const (
	// RoleRead may clone and fetch.
	RoleRead Role = "Read"
	// RoleWrite may also push.
	RoleWrite Role = "Write"
	// RoleAdmin may do everything Write may; it is the role the owner has.
	RoleAdmin Role = "Admin"
)

// DeletionPolicy says what happens to the repository on disk when its GitProject is deleted.
// +kubebuilder:validation:Enum=Retain;Delete
type DeletionPolicy string

const (
	// DeletionPolicyRetain keeps the repository on disk; a new GitProject with the same
	// owner and project serves it again.
	DeletionPolicyRetain DeletionPolicy = "Retain"
	// DeletionPolicyDelete removes the repository from disk before the object goes away.
	DeletionPolicyDelete DeletionPolicy = "Delete"
)

// Member gives one user a role in a project.
type Member struct {
	// user is the gitssh user name, as in SSHPublicKey spec.user, e.g. "bob".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="member user must be lower-case letters, digits and '-', starting and ending with a letter or digit, e.g. \"bob\""
	User string `json:"user"`

	// role is Read (clone and fetch), Write (also push) or Admin.
	// +required
	Role Role `json:"role"`
}

// GitProjectSpec describes a bare git repository served at
// ssh://git@HOST/OWNER/PROJECT.git.
type GitProjectSpec struct {
	// owner is the first part of the repository path, a user or an organisation, e.g.
	// "acme" in ssh://git@HOST/acme/api.git. A user with this exact name has the Admin role.
	// Letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100
	// characters, not ending in ".git". Immutable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=100
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*$')",message="owner must be letters, digits, '.', '_' and '-', starting with a letter or digit, e.g. \"acme\""
	// +kubebuilder:validation:XValidation:rule="!self.endsWith('.git')",message="owner must not end in \".git\""
	// +kubebuilder:validation:XValidation:rule="!self.contains('..')",message="owner must not contain \"..\""
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="owner is immutable: create a new GitProject to serve the repository under another owner"
	Owner string `json:"owner"`

	// project is the repository name, e.g. "api" in ssh://git@HOST/acme/api.git. Same
	// characters as owner; clients may add or leave out ".git" when they clone. Immutable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=100
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*$')",message="project must be letters, digits, '.', '_' and '-', starting with a letter or digit, e.g. \"api\""
	// +kubebuilder:validation:XValidation:rule="!self.endsWith('.git')",message="project must not end in \".git\": clients add it, e.g. project \"api\" is cloned as acme/api.git"
	// +kubebuilder:validation:XValidation:rule="!self.contains('..')",message="project must not contain \"..\""
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="project is immutable: create a new GitProject to serve the repository under another name"
	Project string `json:"project"`

	// visibility is Private (default: only the owner and members may read) or Public
	// (every user with a registered key may read; pushing still needs Write).
	// +optional
	// +kubebuilder:default=Private
	Visibility Visibility `json:"visibility,omitempty"`

	// members are the users who may use the project besides the owner, each with a role.
	// A user appears at most once.
	// +optional
	// +listType=map
	// +listMapKey=user
	// +kubebuilder:validation:MaxItems=1000
	Members []Member `json:"members,omitempty"`

	// defaultBranch is the branch HEAD points to in a new repository, which `git clone`
	// checks out. It is used when the repository is created; an existing repository keeps
	// its HEAD.
	// +optional
	// +kubebuilder:default=main
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9][A-Za-z0-9._/-]*$') && !self.contains('..') && !self.contains('//') && !self.endsWith('/') && !self.endsWith('.') && !self.endsWith('.lock')",message="defaultBranch must be a plain branch name such as \"main\" or \"release/v1\" (letters, digits, '.', '_', '-', '/'; no \"..\", \"//\", trailing '/', '.' or \".lock\")"
	DefaultBranch string `json:"defaultBranch,omitempty"`

	// deletionPolicy is Retain (default: the repository stays on disk when this object is
	// deleted) or Delete (the repository is removed from disk with the object).
	// +optional
	// +kubebuilder:default=Retain
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// quota bounds the repository's size on disk, e.g. "1Gi" or "500Mi". Each push is
	// limited to what is left of it, and once the repository has reached it every push is
	// refused; cloning and fetching never are. The bound is soft by a little: a pack that
	// fits is stored with its index, and pushes running at the same time each get what was
	// left when they started. Unset: no quota (the server's push size limit still applies).
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="quota must be a positive size such as \"500Mi\" or \"1Gi\"; leave it out for no quota"
	Quota *resource.Quantity `json:"quota,omitempty"`
}

// GitProjectStatus reports where the repository is and when it was last used.
type GitProjectStatus struct {
	// cloneURL is the address to clone, e.g. ssh://git@git.example.com/acme/api.git. It is
	// empty while the SSH server is not serving; the Ready condition then says why.
	// +optional
	CloneURL string `json:"cloneURL,omitempty"`

	// repositoryPath is where the bare repository lives on the gitssh volume.
	// +optional
	RepositoryPath string `json:"repositoryPath,omitempty"`

	// lastPushTime is when someone last pushed successfully. Coarse: written at most once
	// per usage flush interval (one minute by default).
	// +optional
	LastPushTime *metav1.Time `json:"lastPushTime,omitempty"`

	// lastFetchTime is when someone last cloned or fetched successfully. Coarse like
	// lastPushTime.
	// +optional
	LastFetchTime *metav1.Time `json:"lastFetchTime,omitempty"`

	// repository describes the bare repository on disk, as the leader last measured it.
	// +optional
	Repository *RepositoryStatus `json:"repository,omitempty"`

	// observedGeneration is the metadata.generation the status was last computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions tell whether the repository can be used. Type Ready is True when the
	// repository exists and is served; when False its reason says why (ProjectConflict,
	// RepositoryError, NotServing). Type WithinQuota is there when spec.quota is set: False
	// (reason OverQuota) while the repository is at or over its quota and pushes are refused.
	// Type Maintenance tells how the last housekeeping run went: True (reason
	// MaintenanceSucceeded) or False (MaintenanceFailed, with git's message).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// RepositoryStatus holds facts about the bare repository on disk. They are measured by the
// leader when the project is reconciled: on a change, after a push shows up in
// lastPushTime, and every few minutes; packs, looseObjects and lastMaintenanceTime after
// each housekeeping run.
type RepositoryStatus struct {
	// sizeBytes is the sum of the sizes of the repository's files, which is what
	// spec.quota is compared with.
	// +optional
	// +kubebuilder:validation:Minimum=0
	SizeBytes int64 `json:"sizeBytes,omitempty"`

	// size is sizeBytes for people, e.g. "1.2 GiB" or "87 bytes".
	// +optional
	Size string `json:"size,omitempty"`

	// packs is the number of pack files. Housekeeping keeps it at a few: each push adds
	// one, and each pack is one more index a clone searches.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Packs int32 `json:"packs,omitempty"`

	// looseObjects is the number of objects stored one file each; gitssh stores pushes
	// as packs, so only repositories from elsewhere (or older gitssh) have them until
	// housekeeping packs them.
	// +optional
	// +kubebuilder:validation:Minimum=0
	LooseObjects int32 `json:"looseObjects,omitempty"`

	// lastMaintenanceTime is when the last housekeeping run on the repository started,
	// whether it succeeded or not: the Maintenance condition says which.
	// +optional
	LastMaintenanceTime *metav1.Time `json:"lastMaintenanceTime,omitempty"`
}

// MaintenanceRequestedAtAnnotation on a GitProject asks for a full housekeeping run
// now: set it to the current time, e.g.
// kubectl annotate --overwrite gitproject/NAME gitssh.dev/maintenance-requested-at="$(date -u +%Y-%m-%dT%H:%M:%SZ)".
// A run starts when the time is after status.repository.lastMaintenanceTime.
const MaintenanceRequestedAtAnnotation = "gitssh.dev/maintenance-requested-at"

// GitProject is a bare git repository served over SSH, with who may read and push it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=gitproj,categories=gitssh
// +kubebuilder:printcolumn:name="Owner",type=string,JSONPath=`.spec.owner`
// +kubebuilder:printcolumn:name="Project",type=string,JSONPath=`.spec.project`
// +kubebuilder:printcolumn:name="Visibility",type=string,JSONPath=`.spec.visibility`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Size",type=string,JSONPath=`.status.repository.size`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.cloneURL`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type GitProject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec names the repository and who may use it.
	// +required
	Spec GitProjectSpec `json:"spec"`

	// status is written by gitssh.
	// +optional
	Status GitProjectStatus `json:"status,omitempty"`
}

// GitProjectList is a list of GitProject.
// +kubebuilder:object:root=true
type GitProjectList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GitProject `json:"items"`
}
