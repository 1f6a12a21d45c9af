package manifests_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// TestSelfServiceKeys renders the chart's self-service policy, applies it to the real API
// server, and writes keys as impersonated people: each may write only keys whose spec.user
// is their own user name after the configured mapping, and admins any.
func TestSelfServiceKeys(t *testing.T) {
	g := NewWithT(t)
	ctx := t.Context()
	ns := env.Namespace(t)

	out, err := helmTemplate(t, ns, "--set", "selfService.enabled=true",
		"--set", "selfService.usernamePrefixes={oidc:}", "--set", "selfService.emailDomains={example.com}",
		"--set", "selfService.adminGroups={gitssh-admins}", "--set", "selfService.groups={developers}")
	g.Expect(err).NotTo(HaveOccurred())
	m := parse(t, out)
	policyName := "gitssh-" + ns + "-sshpublickey-self-service"
	var selfService manifest
	for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterRole"} {
		selfService = append(selfService, m.one(t, kind, policyName))
	}
	selfService = append(selfService, m.one(t, "RoleBinding", "gitssh-sshpublickey-self-service"))
	applied, err := kubectl(t, selfService.yaml(t), "apply", "--server-side", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), string(applied))
	t.Cleanup(func() {
		_, _ = kubectl(t, nil, "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy,clusterrole", policyName)
	})

	as := func(user string, groups ...string) client.Client {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
		c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
		g.Expect(err).NotTo(HaveOccurred())
		return c
	}
	alice, oidcAlice, emailAlice := as("alice", "developers"), as("oidc:alice", "developers"), as("oidc:alice@example.com", "developers")
	elsewhereAlice := as("alice@elsewhere.org", "developers")
	admin := as("carol", "developers", "gitssh-admins")
	outsider := as("mallory")

	n := 0
	key := func(user string) *gitsshv1alpha1.SSHPublicKey {
		n++
		return &gitsshv1alpha1.SSHPublicKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("key-%d", n)},
			Spec:       gitsshv1alpha1.SSHPublicKeySpec{User: user, PublicKey: newPublicKey(t)},
		}
	}
	refusedOther := `you may only register keys for your own gitssh user "alice" (from your Kubernetes user name "alice"), but spec.user is "bob"`

	// The policy takes effect a little after it is created: wait until it refuses.
	g.Eventually(func(g Gomega) {
		k := key("bob")
		err := alice.Create(ctx, k)
		if err == nil {
			_ = env.Client.Delete(ctx, k)
		}
		g.Expect(err).To(MatchError(ContainSubstring(refusedOther)))
	}).WithTimeout(60*time.Second).WithPolling(250*time.Millisecond).Should(Succeed(), "the self-service policy never took effect")

	bobs := key("bob")
	g.Expect(admin.Create(ctx, bobs)).To(Succeed(), "an admin group member creates keys for anyone")
	for _, tt := range []struct {
		name string
		c    client.Client
		user string
		err  string // empty: created
	}{
		{"alice's own key", alice, "alice", ""},
		{"alice's key for bob", alice, "bob", refusedOther},
		{"oidc: stripped", oidcAlice, "alice", ""},
		{"oidc: kept in the message", oidcAlice, "bob", `from your Kubernetes user name "oidc:alice"`},
		{"email domain stripped", emailAlice, "alice", ""},
		{"another email domain is not", elsewhereAlice, "alice", `your own gitssh user "alice@elsewhere.org"`},
		{"an admin, for bob", admin, "bob", ""},
		{"no RBAC grant", outsider, "mallory", "forbidden"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			err := tt.c.Create(ctx, key(tt.user))
			if tt.err == "" {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
			g.Expect(err).To(MatchError(ContainSubstring(tt.err)))
		})
	}

	t.Run("update and delete", func(t *testing.T) {
		g := NewWithT(t)
		own := key("alice")
		g.Expect(alice.Create(ctx, own)).To(Succeed())
		own.Spec.Description = "laptop"
		g.Expect(alice.Update(ctx, own)).To(Succeed(), "alice may change her own key")
		own.Spec.User = "bob"
		err := alice.Update(ctx, own)
		g.Expect(err).To(MatchError(ContainSubstring(refusedOther)), "alice must not hand her key to bob")

		err = alice.Update(ctx, bobs.DeepCopy())
		g.Expect(err).To(MatchError(ContainSubstring(`but this key is user "bob"'s`)))
		g.Expect(alice.Delete(ctx, bobs.DeepCopy())).To(MatchError(ContainSubstring(`but this key is user "bob"'s`)),
			"alice must not delete bob's key")
		g.Expect(alice.Delete(ctx, own)).To(Succeed())
		g.Expect(admin.Delete(ctx, bobs)).To(Succeed())
	})
}

// newPublicKey returns a fresh ed25519 public key as one authorized_keys line.
func newPublicKey(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}
