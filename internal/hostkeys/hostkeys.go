// Package hostkeys generates and loads the SSH server's host keys. The
// controllers store the generated PEM in a Secret once and load it on start.
package hostkeys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"fmt"
	"slices"

	"golang.org/x/crypto/ssh"
)

// File names of the host keys, as in the host key Secret and /etc/ssh.
const (
	ED25519 = "ssh_host_ed25519_key"
	ECDSA   = "ssh_host_ecdsa_key"
	RSA     = "ssh_host_rsa_key"
)

// MinRSABits is the smallest RSA host key Load accepts and the size Generate uses.
const MinRSABits = 3072

// Generate returns a fresh set of host keys (ed25519, ecdsa-p256, rsa-3072)
// as OpenSSH-format private key PEM, keyed by file name.
func Generate() (map[string][]byte, error) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating ed25519 host key: %w", err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating ecdsa host key: %w", err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, MinRSABits)
	if err != nil {
		return nil, fmt.Errorf("generating rsa host key: %w", err)
	}
	out := map[string][]byte{}
	for name, k := range map[string]crypto.PrivateKey{ED25519: edKey, ECDSA: ecKey, RSA: rsaKey} {
		block, err := ssh.MarshalPrivateKey(k, "")
		if err != nil {
			return nil, fmt.Errorf("marshalling %s: %w", name, err)
		}
		out[name] = pem.EncodeToMemory(block)
	}
	return out, nil
}

// Load parses host keys from PEM (any format ssh.ParsePrivateKey reads),
// keyed by file name, and returns signers in a stable order (by file name).
// RSA keys shorter than MinRSABits and DSA keys are refused; RSA signers only
// offer rsa-sha2-512 and rsa-sha2-256, never SHA-1 ssh-rsa.
func Load(pems map[string][]byte) ([]ssh.Signer, error) {
	if len(pems) == 0 {
		return nil, fmt.Errorf("no host keys given")
	}
	names := make([]string, 0, len(pems))
	for n := range pems {
		names = append(names, n)
	}
	slices.Sort(names)
	var signers []ssh.Signer
	for _, n := range names {
		s, err := Parse(pems[n])
		if err != nil {
			return nil, fmt.Errorf("host key %s: %w", n, err)
		}
		signers = append(signers, s)
	}
	return signers, nil
}

// Parse parses one host key as Load does. Its errors do not name the key, so
// that callers can say where it came from.
func Parse(pem []byte) (ssh.Signer, error) {
	s, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		return nil, fmt.Errorf("not an unencrypted private key (OpenSSH or PEM format): %w", err)
	}
	return restrict(s)
}

// Fingerprints returns one "TYPE SHA256:…" line per signer, e.g.
// "ssh-ed25519 SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s", as
// ssh-keygen -l and ssh print them.
func Fingerprints(signers []ssh.Signer) []string {
	out := make([]string, 0, len(signers))
	for _, s := range signers {
		out = append(out, s.PublicKey().Type()+" "+ssh.FingerprintSHA256(s.PublicKey()))
	}
	return out
}

func restrict(s ssh.Signer) (ssh.Signer, error) {
	switch s.PublicKey().Type() {
	case ssh.KeyAlgoRSA:
		ck, ok := s.PublicKey().(ssh.CryptoPublicKey)
		if !ok {
			return nil, fmt.Errorf("unexpected RSA key type %T", s.PublicKey())
		}
		rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey)
		if !ok || rk.N.BitLen() < MinRSABits {
			return nil, fmt.Errorf("RSA host keys must have at least %d bits", MinRSABits)
		}
		as, ok := s.(ssh.AlgorithmSigner)
		if !ok {
			return nil, fmt.Errorf("RSA signer cannot choose its signature algorithm")
		}
		return ssh.NewSignerWithAlgorithms(as, []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256})
	//lint:ignore SA1019 naming the deprecated DSA algorithm is how we refuse it
	case ssh.InsecureKeyAlgoDSA:
		return nil, fmt.Errorf("DSA host keys are not supported; use ed25519, ecdsa or RSA")
	}
	return s, nil
}

// KnownHosts returns known_hosts lines for the signers' public keys, for
// clients to pin, e.g. host "[gitssh.example.com]:2222".
func KnownHosts(host string, signers []ssh.Signer) []byte {
	var b []byte
	for _, s := range signers {
		b = append(b, host+" "...)
		b = append(b, ssh.MarshalAuthorizedKey(s.PublicKey())...)
	}
	return b
}
