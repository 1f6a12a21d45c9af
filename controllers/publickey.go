package controllers

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
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
