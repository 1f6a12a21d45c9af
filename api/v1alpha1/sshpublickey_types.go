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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeployAccess is what a deploy key may do in its project.
// +kubebuilder:validation:Enum=Read;Write
type DeployAccess string

const (
	// DeployAccessRead may clone and fetch.
	DeployAccessRead DeployAccess = "Read"
	// DeployAccessWrite may also push.
	DeployAccessWrite DeployAccess = "Write"
)

// SSHPublicKeySpec names one public key and what it logs in as: a user (a person's key) or
// one project (a deploy key).
// +kubebuilder:validation:XValidation:rule="has(self.user) != has(self.project)",message="set exactly one of user (a person's key, e.g. user: alice) and project (a deploy key for one project, e.g. project: acme/api)"
// +kubebuilder:validation:XValidation:rule="!has(self.access) || has(self.project)",message="access is for deploy keys: set project too, or leave access out (a user's access comes from GitProject members)"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.expirationTime) || has(self.expirationTime)",message="expirationTime cannot be removed once set: set a later one, or register a new key"
type SSHPublicKeySpec struct {
	// user is the gitssh user this key logs in as. GitProject members and owners refer to
	// users by this name. Lower-case letters, digits and '-', starting and ending with a
	// letter or digit, at most 63 characters (like a DNS label), e.g. "alice".
	// Whoever may create SSHPublicKey objects in a namespace may claim any user name, so
	// grant that permission as carefully as repository access itself.
	// Exactly one of user and project is set.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="user must be lower-case letters, digits and '-', starting and ending with a letter or digit, e.g. \"alice\""
	User string `json:"user,omitempty"`

	// project makes this a deploy key: it reaches this one project, OWNER/PROJECT as in
	// ssh://git@HOST/acme/api.git ("acme/api"), and nothing else, not even Public projects.
	// Exactly one of user and project is set.
	// +optional
	// +kubebuilder:validation:MaxLength=201
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$') && !self.contains('..') && !self.endsWith('.git') && !self.contains('.git/')",message="project must be OWNER/PROJECT as in the clone URL without \".git\", e.g. \"acme/api\""
	Project string `json:"project,omitempty"`

	// access is what a deploy key may do in its project: Read (the default: clone and
	// fetch) or Write (also push). Only with project.
	// +optional
	Access DeployAccess `json:"access,omitempty"`

	// publicKey is one line in OpenSSH authorized_keys form, without options: the key
	// type, the base64-encoded key and an optional comment, e.g.
	// "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... alice@laptop" (the content of ~/.ssh/id_ed25519.pub).
	// Accepted types: ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa with at least 2048
	// bits, and the security-key types sk-ssh-ed25519@openssh.com and
	// sk-ecdsa-sha2-nistp256@openssh.com. The controller parses the key and reports a key it
	// cannot use in the Ready condition.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=16384
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z][-a-z0-9.@]*[ \\t]+[A-Za-z0-9+/]+={0,2}([ \\t][^\\r\\n]*)?$')",message="publicKey must be one OpenSSH public key line \"TYPE BASE64 [comment]\", e.g. \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... alice@laptop\" (the content of ~/.ssh/id_ed25519.pub)"
	PublicKey string `json:"publicKey"`

	// description says what this key is for, e.g. "Alice's laptop" or "CI deploy key".
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Description string `json:"description,omitempty"`

	// expirationTime is when the key stops logging in, e.g. "2027-01-31T00:00:00Z". Logins
	// are refused from that instant on; the object stays, with Ready False (reason
	// Expired). It can be moved but not removed. Once the key has expired, the same key
	// registered by another SSHPublicKey logs in only if that object expires too (its own
	// expirationTime, or the server's --max-key-lifetime). gitssh may end a key earlier
	// (--max-key-lifetime): status.expirationTime is the instant that applies.
	// +optional
	ExpirationTime *metav1.Time `json:"expirationTime,omitempty"`
}

// SSHPublicKeyStatus is what gitssh made of the key and when it was last used.
type SSHPublicKeyStatus struct {
	// fingerprint is the SHA256 fingerprint of the key, as `ssh-keygen -l` prints it,
	// e.g. "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8".
	// +optional
	Fingerprint string `json:"fingerprint,omitempty"`

	// keyType is the key's algorithm, e.g. "ssh-ed25519" or "ssh-rsa".
	// +optional
	KeyType string `json:"keyType,omitempty"`

	// bits is the key's size in bits (e.g. 256 for ed25519, 3072 for a 3072-bit RSA key).
	// +optional
	Bits int32 `json:"bits,omitempty"`

	// lastUsedTime is when this key last logged in successfully. It is coarse: gitssh writes
	// it at most once per usage flush interval (one minute by default), so it may lag or
	// round down by up to that interval.
	// +optional
	LastUsedTime *metav1.Time `json:"lastUsedTime,omitempty"`

	// lastFailedTime is when this key was last offered without being proven (someone who
	// holds only the public key tried it), offered after it expired, or was refused for the
	// repository it asked for.
	// A recent value on a key whose owner did not try to log in is a reason to look closer.
	// Coarse like lastUsedTime.
	// +optional
	LastFailedTime *metav1.Time `json:"lastFailedTime,omitempty"`

	// expirationTime is when the key stops logging in: spec.expirationTime, or its creation
	// plus the server's --max-key-lifetime when that is earlier. Empty: never.
	// +optional
	ExpirationTime *metav1.Time `json:"expirationTime,omitempty"`

	// observedGeneration is the metadata.generation the status was last computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions tell whether the key can be used to log in. Type Ready is True when the
	// key is registered (reason KeyRegistered, or ExpiringSoon near its expiration time);
	// when False its reason says why (InvalidKey, WeakKey, DuplicateKey, Expired). Type
	// Stale, there when the server has --stale-key-after, is True (reason Unused) when
	// the key has not logged in for that long.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// SSHPublicKey lets a user log in to the gitssh SSH server with one public key.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sshkey;sshkeys,categories=gitssh
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.user`
// +kubebuilder:printcolumn:name="Project",type=string,JSONPath=`.spec.project`
// +kubebuilder:printcolumn:name="Access",type=string,JSONPath=`.spec.access`,priority=1
// +kubebuilder:printcolumn:name="Fingerprint",type=string,JSONPath=`.status.fingerprint`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expirationTime`
// +kubebuilder:printcolumn:name="Last Used",type=date,JSONPath=`.status.lastUsedTime`
// +kubebuilder:printcolumn:name="Stale",type=string,JSONPath=`.status.conditions[?(@.type=="Stale")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SSHPublicKey struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec names the user and the public key.
	// +required
	Spec SSHPublicKeySpec `json:"spec"`

	// status is written by gitssh.
	// +optional
	Status SSHPublicKeyStatus `json:"status,omitempty"`
}

// SSHPublicKeyList is a list of SSHPublicKey.
// +kubebuilder:object:root=true
type SSHPublicKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SSHPublicKey `json:"items"`
}
