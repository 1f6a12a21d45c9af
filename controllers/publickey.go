package controllers

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/authorizer"
	"github.com/gitssh-dev/gitssh/sshserver"
)

// parsedKey is what the status of an SSHPublicKey shows about its key.
type parsedKey struct {
	Fingerprint string
	Type        string
	Bits        int32
}

// keyError is a key gitssh will not register, with the Ready reason that says why.
type keyError struct {
	Reason string
	Err    error
}

func (e *keyError) Error() string { return e.Err.Error() }

// parsePublicKey parses one authorized_keys line and applies the SSH server's key policy.
// A weak key is returned with its details and a WeakKey error, so the status can still show
// what the key is.
func parsePublicKey(line string) (parsedKey, error) {
	key, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return parsedKey{}, &keyError{gitsshv1alpha1.ReasonInvalidKey,
			fmt.Errorf("publicKey is not an OpenSSH public key (%v); expected one line such as \"ssh-ed25519 AAAA… alice@laptop\"", err)}
	}
	if len(options) > 0 || len(strings.TrimSpace(string(rest))) > 0 {
		return parsedKey{}, &keyError{gitsshv1alpha1.ReasonInvalidKey,
			fmt.Errorf("publicKey must hold exactly one key without authorized_keys options")}
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return parsedKey{}, &keyError{gitsshv1alpha1.ReasonInvalidKey,
			fmt.Errorf("publicKey is an SSH certificate; register the plain public key instead")}
	}
	parsed := parsedKey{Fingerprint: ssh.FingerprintSHA256(key), Type: key.Type(), Bits: keyBits(key)}
	if err := sshserver.CheckClientKey(key); err != nil {
		return parsed, &keyError{gitsshv1alpha1.ReasonWeakKey,
			fmt.Errorf("%s key of %d bits is refused (%v); use ssh-ed25519, ECDSA or RSA of at least 2048 bits", parsed.Type, parsed.Bits, err)}
	}
	return parsed, nil
}

func keyBits(key ssh.PublicKey) int32 {
	crypto, ok := key.(ssh.CryptoPublicKey)
	if !ok {
		return 0
	}
	switch k := crypto.CryptoPublicKey().(type) {
	case *rsa.PublicKey:
		return int32(k.N.BitLen())
	case *ecdsa.PublicKey:
		return int32(k.Curve.Params().BitSize)
	case ed25519.PublicKey:
		return 256
	}
	return 0
}

// keyExpiry is when the key stops logging in: spec.expirationTime, or its creation plus
// maxLifetime when that is earlier (maxLifetime 0: no maximum). capped says the maximum
// decided. Zero: never.
func keyExpiry(key *gitsshv1alpha1.SSHPublicKey, maxLifetime time.Duration) (expires time.Time, capped bool) {
	if key.Spec.ExpirationTime != nil {
		expires = key.Spec.ExpirationTime.Time
	}
	if maxLifetime > 0 {
		if limit := key.CreationTimestamp.Add(maxLifetime); expires.IsZero() || limit.Before(expires) {
			return limit, true
		}
	}
	return expires, false
}

// deployBinding is the project a deploy key reaches, or nil for a user's key.
func deployBinding(key *gitsshv1alpha1.SSHPublicKey) *authorizer.Deploy {
	owner, name, ok := strings.Cut(key.Spec.Project, "/")
	if !ok {
		return nil
	}
	access := authorizer.AccessRead
	if key.Spec.Access == gitsshv1alpha1.DeployAccessWrite {
		access = authorizer.AccessWrite
	}
	return &authorizer.Deploy{Owner: owner, Name: name, Access: access}
}

// holder names what a key logs in as, for messages: `user "alice"` or
// `deploy key for "acme/api" (Read)`.
func holder(key *gitsshv1alpha1.SSHPublicKey) string {
	if key.Spec.Project != "" {
		access := key.Spec.Access
		if access == "" {
			access = gitsshv1alpha1.DeployAccessRead
		}
		return fmt.Sprintf("deploy key for %q (%s)", key.Spec.Project, access)
	}
	return fmt.Sprintf("user %q", key.Spec.User)
}

// days writes a duration of whole days as "7 days", anything else as Go does ("36h0m0s").
func days(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == day:
		return "1 day"
	case d > 0 && d%day == 0:
		return fmt.Sprintf("%d days", d/day)
	}
	return d.String()
}
