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

	applySelfService(t, ns, "--set", "selfService.usernamePrefixes={oidc:}", "--set", "selfService.emailDomains={example.com}",
		"--set", "selfService.adminGroups={gitssh-admins}")
	as := impersonate(t)
	alice, oidcAlice, emailAlice := as("alice", "developers"), as("oidc:alice", "developers"), as("oidc:alice@example.com", "developers")
	elsewhereAlice := as("alice@elsewhere.org", "developers")
	admin := as("carol", "developers", "gitssh-admins")
	outsider := as("mallory")

	key := keyMaker(t, ns)
	refusedOther := `you may only register keys for your own gitssh user "alice" (from your Kubernetes user name "alice"), but spec.user is "bob"`
	waitForPolicy(t, alice, key, refusedOther)

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

	t.Run("deploy keys", func(t *testing.T) {
		g := NewWithT(t)
		deploy := key("")
		deploy.Spec.Project = "alice/api"
		err := alice.Create(ctx, deploy.DeepCopy())
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		g.Expect(err).To(MatchError(ContainSubstring(`but spec.user is not set (a deploy key)`)),
			"only admins create deploy keys, even for a project of one's own")
		g.Expect(admin.Create(ctx, deploy)).To(Succeed())
		g.Expect(alice.Delete(ctx, deploy.DeepCopy())).To(MatchError(ContainSubstring("but this key is a deploy key")))
		g.Expect(admin.Delete(ctx, deploy)).To(Succeed())
	})

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

// With the chart's defaults (no prefixes, no domains, admins are system:masters) the
// policy's expressions compile and work too: a policy that does not compile refuses every
// request.
func TestSelfServiceKeysDefaults(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	applySelfService(t, ns)
	as := impersonate(t)
	key := keyMaker(t, ns)
	alice := as("alice", "developers")
	waitForPolicy(t, alice, key, `your own gitssh user "alice" (from your Kubernetes user name "alice"), but spec.user is "bob"`)
	g.Expect(alice.Create(t.Context(), key("alice"))).To(Succeed())
	g.Expect(as("oidc:alice", "developers").Create(t.Context(), key("alice"))).To(MatchError(ContainSubstring(`your own gitssh user "oidc:alice"`)))
	g.Expect(env.Client.Create(t.Context(), key("bob"))).To(Succeed(), "the envtest admin is in system:masters")
}

// applySelfService renders the chart with selfService on, groups=developers and the given
// helm arguments, and applies the policy, its binding, the ClusterRole and the RoleBinding.
func applySelfService(t *testing.T, ns string, helmArgs ...string) {
	t.Helper()
	g := NewWithT(t)
	out, err := helmTemplate(t, ns, append([]string{"--set", "selfService.enabled=true", "--set", "selfService.groups={developers}"}, helmArgs...)...)
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
}

// impersonate returns a function that makes clients acting as a user in groups.
func impersonate(t *testing.T) func(user string, groups ...string) client.Client {
	return func(user string, groups ...string) client.Client {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
		c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// keyMaker returns a function that makes a new SSHPublicKey object for user in ns.
func keyMaker(t *testing.T, ns string) func(user string) *gitsshv1alpha1.SSHPublicKey {
	n := 0
	return func(user string) *gitsshv1alpha1.SSHPublicKey {
		n++
		return &gitsshv1alpha1.SSHPublicKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("key-%d", n)},
			Spec:       gitsshv1alpha1.SSHPublicKeySpec{User: user, PublicKey: newPublicKey(t)},
		}
	}
}

// waitForPolicy waits until the policy, which takes effect a little after it is created,
// refuses c a key for bob with the message want.
func waitForPolicy(t *testing.T, c client.Client, key func(string) *gitsshv1alpha1.SSHPublicKey, want string) {
	NewWithT(t).Eventually(func(g Gomega) {
		k := key("bob")
		err := c.Create(t.Context(), k)
		if err == nil {
			_ = env.Client.Delete(t.Context(), k)
		}
		g.Expect(err).To(MatchError(ContainSubstring(want)))
	}).WithTimeout(60*time.Second).WithPolling(250*time.Millisecond).Should(Succeed(), "the self-service policy never took effect")
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
