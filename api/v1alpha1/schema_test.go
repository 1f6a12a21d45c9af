package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/gitssh-dev/gitssh/api/v1alpha1"
	"github.com/gitssh-dev/gitssh/internal/testenv"
)

// These tests prove the CRD schema in config/crd/bases against a real kube-apiserver: what
// it accepts, what it rejects and with which message, and what kubectl shows.

var env *testenv.Environment

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, &env))
}

const validKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINtAwG1YtmE6r/qE9Nx4lRkRCtsxrgSV/3IlPgBUkTn4 alice@laptop"

func TestSamplesAreAccepted(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	for _, sample := range []struct {
		file string
		obj  client.Object
	}{
		{"sshpublickey.yaml", &v1alpha1.SSHPublicKey{}},
		{"sshpublickey-expiring.yaml", &v1alpha1.SSHPublicKey{}},
		{"sshpublickey-deploy.yaml", &v1alpha1.SSHPublicKey{}},
		{"sshpublickey-deploy-write.yaml", &v1alpha1.SSHPublicKey{}},
		{"gitproject.yaml", &v1alpha1.GitProject{}},
	} {
		data, err := os.ReadFile(filepath.Join(env.RepoRoot, "config", "samples", sample.file))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(yaml.UnmarshalStrict(data, sample.obj)).To(Succeed(), sample.file)
		sample.obj.SetNamespace(ns)
		g.Expect(env.Client.Create(context.Background(), sample.obj)).To(Succeed(), sample.file)
	}
}

func TestGitProjectDefaults(t *testing.T) {
	g := NewWithT(t)
	project := &v1alpha1.GitProject{
		ObjectMeta: metav1.ObjectMeta{Name: "defaults", Namespace: env.Namespace(t)},
		Spec:       v1alpha1.GitProjectSpec{Owner: "acme", Project: "web"},
	}
	g.Expect(env.Client.Create(context.Background(), project)).To(Succeed())
	g.Expect(project.Spec.Visibility).To(Equal(v1alpha1.VisibilityPrivate))
	g.Expect(project.Spec.DefaultBranch).To(Equal("main"))
	g.Expect(project.Spec.DeletionPolicy).To(Equal(v1alpha1.DeletionPolicyRetain))
	g.Expect(project.Spec.Quota).To(BeNil(), "no quota unless one is set")
}

func TestGitProjectQuotaForms(t *testing.T) {
	ns := env.Namespace(t)
	for _, quota := range []string{"1Gi", "500Mi", "1G", "1048576", "1.5Gi"} {
		t.Run(quota, func(t *testing.T) {
			g := NewWithT(t)
			project := &v1alpha1.GitProject{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "quota-", Namespace: ns},
				Spec:       v1alpha1.GitProjectSpec{Owner: "acme", Project: "api", Quota: ptr.To(resource.MustParse(quota))},
			}
			g.Expect(env.Client.Create(context.Background(), project)).To(Succeed())
			want := resource.MustParse(quota)
			g.Expect(project.Spec.Quota.Value()).To(Equal(want.Value()))
		})
	}
}

func TestSSHPublicKeyRejections(t *testing.T) {
	ns := env.Namespace(t)
	for _, tc := range []struct {
		name    string
		mutate  func(*v1alpha1.SSHPublicKeySpec)
		message string
	}{
		{"neither user nor project", func(s *v1alpha1.SSHPublicKeySpec) { s.User = "" }, "set exactly one of user (a person's key, e.g. user: alice) and project"},
		{"both user and project", func(s *v1alpha1.SSHPublicKeySpec) { s.Project = "acme/api" }, "set exactly one of user"},
		{"access on a user's key", func(s *v1alpha1.SSHPublicKeySpec) { s.Access = v1alpha1.DeployAccessWrite }, "access is for deploy keys: set project too"},
		{"unknown access", func(s *v1alpha1.SSHPublicKeySpec) { s.User, s.Project, s.Access = "", "acme/api", "Admin" }, `spec.access: Unsupported value: "Admin"`},
		{"project without owner", func(s *v1alpha1.SSHPublicKeySpec) { s.User, s.Project = "", "api" }, "project must be OWNER/PROJECT"},
		{"project with .git", func(s *v1alpha1.SSHPublicKeySpec) { s.User, s.Project = "", "acme/api.git" }, "project must be OWNER/PROJECT"},
		{"project with an owner ending in .git", func(s *v1alpha1.SSHPublicKeySpec) { s.User, s.Project = "", "acme.git/api" }, "project must be OWNER/PROJECT"},
		{"project with dot-dot", func(s *v1alpha1.SSHPublicKeySpec) { s.User, s.Project = "", "acme/a..b" }, "project must be OWNER/PROJECT"},
		{"project with three parts", func(s *v1alpha1.SSHPublicKeySpec) { s.User, s.Project = "", "acme/api/x" }, "project must be OWNER/PROJECT"},
		{"project as a URL", func(s *v1alpha1.SSHPublicKeySpec) { s.User, s.Project = "", "ssh://git@host/acme/api" }, "project must be OWNER/PROJECT"},
		{"upper-case user", func(s *v1alpha1.SSHPublicKeySpec) { s.User = "Alice" }, "user must be lower-case letters"},
		{"user ending in a dash", func(s *v1alpha1.SSHPublicKeySpec) { s.User = "alice-" }, "user must be lower-case letters"},
		{"user too long", func(s *v1alpha1.SSHPublicKeySpec) { s.User = strings.Repeat("a", 64) }, "spec.user: Too long"},
		{"empty publicKey", func(s *v1alpha1.SSHPublicKeySpec) { s.PublicKey = "" }, "publicKey must be one OpenSSH public key line"},
		{"publicKey not of key form", func(s *v1alpha1.SSHPublicKeySpec) { s.PublicKey = "hello world!" }, "publicKey must be one OpenSSH public key line"},
		{"publicKey without base64", func(s *v1alpha1.SSHPublicKeySpec) { s.PublicKey = "ssh-ed25519" }, "publicKey must be one OpenSSH public key line"},
		{"private key pasted", func(s *v1alpha1.SSHPublicKeySpec) {
			s.PublicKey = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
		}, "publicKey must be one OpenSSH public key line"},
		{"two keys on two lines", func(s *v1alpha1.SSHPublicKeySpec) { s.PublicKey = validKey + "\n" + validKey }, "publicKey must be one OpenSSH public key line"},
		{"authorized_keys options", func(s *v1alpha1.SSHPublicKeySpec) { s.PublicKey = `command="sh" ` + validKey }, "publicKey must be one OpenSSH public key line"},
		{"description too long", func(s *v1alpha1.SSHPublicKeySpec) { s.Description = strings.Repeat("x", 257) }, "spec.description: Too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			key := &v1alpha1.SSHPublicKey{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "key-", Namespace: ns},
				Spec:       v1alpha1.SSHPublicKeySpec{User: "alice", PublicKey: validKey},
			}
			tc.mutate(&key.Spec)
			err := env.Client.Create(context.Background(), key)
			g.Expect(err).To(HaveOccurred())
			g.Expect(err.Error()).To(ContainSubstring(tc.message))
		})
	}

	t.Run("a deploy key is accepted", func(t *testing.T) {
		for _, access := range []v1alpha1.DeployAccess{"", v1alpha1.DeployAccessRead, v1alpha1.DeployAccessWrite} {
			key := &v1alpha1.SSHPublicKey{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "deploy-", Namespace: ns},
				Spec:       v1alpha1.SSHPublicKeySpec{Project: "acme/api.v2", Access: access, PublicKey: validKey},
			}
			NewWithT(t).Expect(env.Client.Create(context.Background(), key)).To(Succeed())
		}
	})

	t.Run("the same spec without the mutation is accepted", func(t *testing.T) {
		key := &v1alpha1.SSHPublicKey{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "key-", Namespace: ns},
			Spec:       v1alpha1.SSHPublicKeySpec{User: "alice", PublicKey: validKey, Description: strings.Repeat("x", 256)},
		}
		NewWithT(t).Expect(env.Client.Create(context.Background(), key)).To(Succeed())
	})
}

// An expiration time can be moved, earlier or later, but not removed: removing it would let
// an expired key log in again without any expiry.
func TestSSHPublicKeyExpirationTimeCannotBeRemoved(t *testing.T) {
	ctx := context.Background()
	g := NewWithT(t)
	key := &v1alpha1.SSHPublicKey{
		ObjectMeta: metav1.ObjectMeta{Name: "expiring", Namespace: env.Namespace(t)},
		Spec: v1alpha1.SSHPublicKeySpec{User: "alice", PublicKey: validKey,
			ExpirationTime: &metav1.Time{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
	}
	g.Expect(env.Client.Create(ctx, key)).To(Succeed())

	removed := key.DeepCopy()
	removed.Spec.ExpirationTime = nil
	err := env.Client.Update(ctx, removed)
	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).To(ContainSubstring("expirationTime cannot be removed once set: set a later one, or register a new key"))

	moved := key.DeepCopy()
	moved.Spec.ExpirationTime = &metav1.Time{Time: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	g.Expect(env.Client.Update(ctx, moved)).To(Succeed())

	// A key without one may get one.
	plain := &v1alpha1.SSHPublicKey{
		ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: key.Namespace},
		Spec:       v1alpha1.SSHPublicKeySpec{User: "alice", PublicKey: validKey},
	}
	g.Expect(env.Client.Create(ctx, plain)).To(Succeed())
	plain.Spec.ExpirationTime = moved.Spec.ExpirationTime
	g.Expect(env.Client.Update(ctx, plain)).To(Succeed())
}

func TestGitProjectRejections(t *testing.T) {
	ns := env.Namespace(t)
	for _, tc := range []struct {
		name    string
		mutate  func(*v1alpha1.GitProjectSpec)
		message string
	}{
		{"owner starting with a dot", func(s *v1alpha1.GitProjectSpec) { s.Owner = ".acme" }, "owner must be letters, digits"},
		{"owner with a slash", func(s *v1alpha1.GitProjectSpec) { s.Owner = "acme/api" }, "owner must be letters, digits"},
		{"owner with dot-dot", func(s *v1alpha1.GitProjectSpec) { s.Owner = "a..b" }, `owner must not contain ".."`},
		{"owner ending in .git", func(s *v1alpha1.GitProjectSpec) { s.Owner = "acme.git" }, `owner must not end in ".git"`},
		{"owner too long", func(s *v1alpha1.GitProjectSpec) { s.Owner = strings.Repeat("a", 101) }, "spec.owner: Too long"},
		{"empty project", func(s *v1alpha1.GitProjectSpec) { s.Project = "" }, "project must be letters, digits"},
		{"project with a space", func(s *v1alpha1.GitProjectSpec) { s.Project = "my api" }, "project must be letters, digits"},
		{"project with a shell metacharacter", func(s *v1alpha1.GitProjectSpec) { s.Project = "api;rm" }, "project must be letters, digits"},
		{"project ending in .git", func(s *v1alpha1.GitProjectSpec) { s.Project = "api.git" }, `project must not end in ".git"`},
		{"unknown visibility", func(s *v1alpha1.GitProjectSpec) { s.Visibility = "Internal" }, `spec.visibility: Unsupported value: "Internal"`},
		{"unknown role", func(s *v1alpha1.GitProjectSpec) {
			s.Members = []v1alpha1.Member{{User: "bob", Role: "Owner"}}
		}, `spec.members[0].role: Unsupported value: "Owner"`},
		{"member with a bad user name", func(s *v1alpha1.GitProjectSpec) {
			s.Members = []v1alpha1.Member{{User: "Bob", Role: v1alpha1.RoleRead}}
		}, "member user must be lower-case letters"},
		{"duplicate member", func(s *v1alpha1.GitProjectSpec) {
			s.Members = []v1alpha1.Member{{User: "bob", Role: v1alpha1.RoleRead}, {User: "bob", Role: v1alpha1.RoleWrite}}
		}, "spec.members[1]: Duplicate value"},
		{"default branch with dot-dot", func(s *v1alpha1.GitProjectSpec) { s.DefaultBranch = "a..b" }, "defaultBranch must be a plain branch name"},
		{"default branch ending in .lock", func(s *v1alpha1.GitProjectSpec) { s.DefaultBranch = "main.lock" }, "defaultBranch must be a plain branch name"},
		{"default branch that is an option", func(s *v1alpha1.GitProjectSpec) { s.DefaultBranch = "--orphan" }, "defaultBranch must be a plain branch name"},
		{"unknown deletion policy", func(s *v1alpha1.GitProjectSpec) { s.DeletionPolicy = "Orphan" }, `spec.deletionPolicy: Unsupported value: "Orphan"`},
		{"zero quota", func(s *v1alpha1.GitProjectSpec) { s.Quota = ptr.To(resource.MustParse("0")) }, "quota must be a positive size"},
		{"negative quota", func(s *v1alpha1.GitProjectSpec) { s.Quota = ptr.To(resource.MustParse("-1Gi")) }, "quota must be a positive size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			project := &v1alpha1.GitProject{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "project-", Namespace: ns},
				Spec: v1alpha1.GitProjectSpec{
					Owner: "acme", Project: "api",
					Members: []v1alpha1.Member{{User: "alice", Role: v1alpha1.RoleWrite}},
				},
			}
			tc.mutate(&project.Spec)
			err := env.Client.Create(context.Background(), project)
			g.Expect(err).To(HaveOccurred())
			g.Expect(err.Error()).To(ContainSubstring(tc.message))
		})
	}
}

func TestGitProjectOwnerAndProjectAreImmutable(t *testing.T) {
	ctx := context.Background()
	g := NewWithT(t)
	project := &v1alpha1.GitProject{
		ObjectMeta: metav1.ObjectMeta{Name: "immutable", Namespace: env.Namespace(t)},
		Spec:       v1alpha1.GitProjectSpec{Owner: "acme", Project: "api"},
	}
	g.Expect(env.Client.Create(ctx, project)).To(Succeed())

	renamed := project.DeepCopy()
	renamed.Spec.Owner = "umbrella"
	err := env.Client.Update(ctx, renamed)
	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).To(ContainSubstring("owner is immutable"))

	renamed = project.DeepCopy()
	renamed.Spec.Project = "web"
	err = env.Client.Update(ctx, renamed)
	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).To(ContainSubstring("project is immutable"))

	// Everything else may change.
	changed := project.DeepCopy()
	changed.Spec.Visibility = v1alpha1.VisibilityPublic
	changed.Spec.Members = []v1alpha1.Member{{User: "bob", Role: v1alpha1.RoleAdmin}}
	g.Expect(env.Client.Update(ctx, changed)).To(Succeed())
}

func TestKubectlGetColumns(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	g := NewWithT(t)
	g.Expect(env.Client.Create(ctx, &v1alpha1.SSHPublicKey{
		ObjectMeta: metav1.ObjectMeta{Name: "alice-laptop", Namespace: ns},
		Spec:       v1alpha1.SSHPublicKeySpec{User: "alice", PublicKey: validKey},
	})).To(Succeed())
	g.Expect(env.Client.Create(ctx, &v1alpha1.GitProject{
		ObjectMeta: metav1.ObjectMeta{Name: "acme-api", Namespace: ns},
		Spec:       v1alpha1.GitProjectSpec{Owner: "acme", Project: "api"},
	})).To(Succeed())

	for _, tc := range []struct {
		resource string
		header   []string
		row      []string
	}{
		{"sshkey", []string{"NAME", "USER", "PROJECT", "READY", "EXPIRES", "LAST USED", "STALE", "AGE"}, []string{"alice-laptop", "alice"}},
		{"sshkeys", []string{"NAME", "USER", "PROJECT", "READY", "EXPIRES", "LAST USED", "STALE", "AGE"}, []string{"alice-laptop", "alice"}},
		{"sshkeys -o wide", []string{"NAME", "USER", "PROJECT", "ACCESS", "FINGERPRINT", "READY", "REASON", "EXPIRES", "LAST USED", "STALE", "AGE"}, []string{"alice-laptop", "alice"}},
		{"gitproj", []string{"NAME", "OWNER", "PROJECT", "VISIBILITY", "READY", "SIZE", "URL", "AGE"}, []string{"acme-api", "acme", "api", "Private"}},
		{"gitprojects", []string{"NAME", "OWNER", "PROJECT", "VISIBILITY", "READY", "SIZE", "URL", "AGE"}, []string{"acme-api", "acme", "api", "Private"}},
	} {
		out, err := env.Kubectl(ctx, append([]string{"get", "-n", ns}, strings.Fields(tc.resource)...)...)
		g.Expect(err).NotTo(HaveOccurred(), out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		g.Expect(lines).To(HaveLen(2), out)
		g.Expect(strings.Join(strings.Fields(lines[0]), " ")).To(Equal(strings.Join(tc.header, " ")), "kubectl get %s header", tc.resource)
		g.Expect(strings.Fields(lines[1])[:len(tc.row)]).To(Equal(tc.row), "kubectl get %s row", tc.resource)
	}
}
