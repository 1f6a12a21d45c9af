package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gitssh-dev/gitssh/internal/hostkeys"
)

// Labels and annotations gitssh puts on the objects it creates.
const (
	managedByLabel = "app.kubernetes.io/managed-by"
	managedByValue = "gitssh"

	// hostKeysAnnotation tells an admin looking at the host key Secret why it
	// must stay.
	hostKeysAnnotation     = "gitssh.dev/host-keys"
	hostKeysAnnotationText = "Generated once by gitssh and never regenerated. Do not delete: " +
		"a new Secret means new host keys, and every client that pinned the old ones refuses to connect. " +
		"Deliberately not owned by the Helm release, so that uninstalling keeps the server's identity."
)

// RBAC: no +kubebuilder:rbac marker here. The Role may read this one Secret only, by
// name (the name is a flag), so its rules are written by hand next to the generated
// ones: config/rbac/named_rules.yaml and the chart's templates/rbac.yaml.

// LoadOrCreateHostKeys returns the SSH server's host keys from the Secret,
// creating the Secret with fresh keys when it does not exist. main calls it
// once, before the manager starts, with an uncached client.
//
// The Secret is the server's identity: it is never overwritten and never
// regenerated. When several replicas start at once, one Create wins and the
// others read what it wrote. A Secret that exists but does not parse is an
// error for the admin to fix. An admin may pre-create it with some of
// ssh_host_ed25519_key, ssh_host_ecdsa_key and ssh_host_rsa_key (e.g. the keys
// of the server gitssh replaces); every ssh_host_*_key entry must parse.
func LoadOrCreateHostKeys(ctx context.Context, c client.Client, secret types.NamespacedName, log logr.Logger) ([]ssh.Signer, error) {
	log = log.WithValues("secret", secret.String())
	s := &corev1.Secret{}
	err := c.Get(ctx, secret, s)
	created := false
	switch {
	case apierrors.IsNotFound(err):
		if s, created, err = createHostKeySecret(ctx, c, secret, log); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("reading host key Secret %s: %w", secret, err)
	}
	signers, err := ParseHostKeySecret(s)
	if err != nil {
		return nil, err
	}
	msg := "Loaded host keys"
	if created {
		msg = "Generated host keys and stored them"
	}
	log.Info(msg, "created", created, "fingerprints", hostkeys.Fingerprints(signers))
	return signers, nil
}

// createHostKeySecret generates host keys and creates the Secret. If another
// replica created it first, it returns that one, with created false.
func createHostKeySecret(ctx context.Context, c client.Client, secret types.NamespacedName, log logr.Logger) (*corev1.Secret, bool, error) {
	pems, err := hostkeys.Generate()
	if err != nil {
		return nil, false, err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   secret.Namespace,
			Name:        secret.Name,
			Labels:      map[string]string{managedByLabel: managedByValue},
			Annotations: map[string]string{hostKeysAnnotation: hostKeysAnnotationText},
		},
		Type: corev1.SecretTypeOpaque,
		Data: pems,
	}
	err = c.Create(ctx, s)
	if err == nil {
		return s, true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, false, fmt.Errorf("creating host key Secret %s: %w", secret, err)
	}
	// Another replica won the race: use its keys, so that all serve the same.
	log.Info("Found the host key Secret created by another replica meanwhile")
	s = &corev1.Secret{}
	if err := c.Get(ctx, secret, s); err != nil {
		return nil, false, fmt.Errorf("reading host key Secret %s after another replica created it: %w", secret, err)
	}
	return s, false, nil
}

// ParseHostKeySecret returns the signers of every ssh_host_*_key entry of the
// Secret, ordered by entry name. Other entries (e.g. .pub files) are ignored.
// Errors name the Secret and the entry and say what to do.
func ParseHostKeySecret(s *corev1.Secret) ([]ssh.Signer, error) {
	ref := s.Namespace + "/" + s.Name
	var names []string
	for n := range s.Data {
		if isHostKeyEntry(n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("host key Secret %s holds no host keys: expected one or more of %s, %s, %s "+
			"as OpenSSH private keys; add them or delete the Secret to have gitssh generate new ones",
			ref, hostkeys.ED25519, hostkeys.ECDSA, hostkeys.RSA)
	}
	slices.Sort(names)
	signers := make([]ssh.Signer, 0, len(names))
	for _, n := range names {
		signer, err := hostkeys.Parse(s.Data[n])
		if err != nil {
			return nil, fmt.Errorf("host key Secret %s: %s does not parse as a host key: %w; "+
				"fix or delete the Secret (deleting it changes the server's identity)", ref, n, err)
		}
		signers = append(signers, signer)
	}
	return signers, nil
}

func isHostKeyEntry(name string) bool {
	return strings.HasPrefix(name, "ssh_host_") && strings.HasSuffix(name, "_key") && len(name) > len("ssh_host__key")
}
