package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gitsshv1alpha1 "github.com/gitssh-dev/gitssh/api/v1alpha1"
)

// A new project is an empty repository one can clone, push to, and clone again elsewhere;
// its status shows the clone URL that works.
func TestProjectCloneAndPush(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	inst := startGitssh(t, ns, t.TempDir())
	alice := newUserKey(t, "alice")
	createKey(t, ns, "alice", "alice", alice.publicKey)
	project := createProject(t, ns, "alice-hello", gitsshv1alpha1.GitProjectSpec{Owner: "alice", Project: "hello", DefaultBranch: "trunk"})

	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, project)
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), ready.Message)
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonRepositoryReady))
	}).WithTimeout(eventually).Should(Succeed())
	g.Expect(project.Status.CloneURL).To(Equal(inst.url("alice", "hello")))
	g.Expect(project.Status.RepositoryPath).To(Equal(filepath.Join(inst.repoRoot, "alice", "hello.git")))
	g.Expect(project.Finalizers).To(ContainElement("gitssh.dev/repository"))

	work := t.TempDir()
	g.Eventually(func() error { _, err := inst.git(alice, work, "clone", project.Status.CloneURL, "first"); return err }).
		WithTimeout(eventually).Should(Succeed())
	first := filepath.Join(work, "first")
	g.Expect(inst.git(alice, first, "symbolic-ref", "HEAD")).To(Equal("refs/heads/trunk\n"), "HEAD is not spec.defaultBranch")
	g.Expect(os.WriteFile(filepath.Join(first, "README"), []byte("hello\n"), 0o644)).To(Succeed())
	g.Expect(inst.git(alice, first, "add", "README")).Error().NotTo(HaveOccurred())
	g.Expect(inst.git(alice, first, "commit", "-m", "first commit")).Error().NotTo(HaveOccurred())
	out, err := inst.git(alice, first, "push", "origin", "trunk")
	g.Expect(err).NotTo(HaveOccurred(), out)

	out, err = inst.git(alice, work, "clone", project.Status.CloneURL, "second")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(os.ReadFile(filepath.Join(work, "second", "README"))).To(Equal([]byte("hello\n")))
	g.Expect(inst.git(alice, filepath.Join(work, "second"), "log", "--format=%s")).To(Equal("first commit\n"))
}

// Read members fetch but cannot push, Write members push; a Public project is readable by
// every registered key and writable only by members.
func TestProjectRolesAndVisibility(t *testing.T) {
	g := NewWithT(t)
	ns := env.Namespace(t)
	inst := startGitssh(t, ns, t.TempDir())
	keys := map[string]userKey{}
	for _, user := range []string{"acme", "reader", "writer", "stranger"} {
		keys[user] = newUserKey(t, user)
		createKey(t, ns, user, user, keys[user].publicKey)
	}
	members := []gitsshv1alpha1.Member{{User: "reader", Role: gitsshv1alpha1.RoleRead}, {User: "writer", Role: gitsshv1alpha1.RoleWrite}}
	private := createProject(t, ns, "private", gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "private", Members: members})
	public := createProject(t, ns, "public", gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "public", Members: members, Visibility: gitsshv1alpha1.VisibilityPublic})
	for _, p := range []*gitsshv1alpha1.GitProject{private, public} {
		g.Eventually(func(g Gomega) { g.Expect(readyCondition(g, p).Status).To(Equal(metav1.ConditionTrue)) }).WithTimeout(eventually).Should(Succeed())
	}

	// Seed both repositories as the owner (a user named like the owner is Admin).
	for _, name := range []string{"private", "public"} {
		dir := filepath.Join(t.TempDir(), name)
		g.Eventually(func() error { _, err := inst.git(keys["acme"], "", "clone", inst.url("acme", name), dir); return err }).WithTimeout(eventually).Should(Succeed())
		g.Expect(inst.git(keys["acme"], dir, "commit", "--allow-empty", "-m", "seed")).Error().NotTo(HaveOccurred())
		out, err := inst.git(keys["acme"], dir, "push", "origin", "HEAD:main")
		g.Expect(err).NotTo(HaveOccurred(), out)
	}

	for _, tc := range []struct {
		user, project     string
		canRead, canWrite bool
	}{
		{"reader", "private", true, false},
		{"writer", "private", true, true},
		{"stranger", "private", false, false},
		{"reader", "public", true, false},
		{"writer", "public", true, true},
		{"stranger", "public", true, false},
	} {
		t.Run(fmt.Sprintf("%s on %s", tc.user, tc.project), func(t *testing.T) {
			g := NewWithT(t)
			dir := filepath.Join(t.TempDir(), "clone")
			out, err := inst.git(keys[tc.user], "", "clone", inst.url("acme", tc.project), dir)
			if !tc.canRead {
				g.Expect(err).To(HaveOccurred(), out)
				g.Expect(out).To(ContainSubstring(fmt.Sprintf(`repository "acme/%s" not found or access denied`, tc.project)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred(), out)
			g.Expect(inst.git(keys[tc.user], dir, "commit", "--allow-empty", "-m", "by "+tc.user)).Error().NotTo(HaveOccurred())
			out, err = inst.git(keys[tc.user], dir, "push", "origin", "HEAD:refs/heads/"+tc.user)
			if tc.canWrite {
				g.Expect(err).NotTo(HaveOccurred(), out)
			} else {
				g.Expect(err).To(HaveOccurred(), out)
				g.Expect(out).To(ContainSubstring("not found or access denied"))
			}
		})
	}
}

// Retain keeps a deleted project's repository on disk (and says so); Delete removes it.
func TestProjectDeletionPolicy(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	inst := startGitssh(t, ns, t.TempDir())
	for _, policy := range []gitsshv1alpha1.DeletionPolicy{gitsshv1alpha1.DeletionPolicyRetain, gitsshv1alpha1.DeletionPolicyDelete} {
		t.Run(string(policy), func(t *testing.T) {
			g := NewWithT(t)
			project := createProject(t, ns, "policy-"+strings.ToLower(string(policy)), gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: string(policy), DeletionPolicy: policy})
			g.Eventually(func(g Gomega) { g.Expect(readyCondition(g, project).Status).To(Equal(metav1.ConditionTrue)) }).WithTimeout(eventually).Should(Succeed())
			path := project.Status.RepositoryPath
			g.Expect(filepath.Join(path, "HEAD")).To(BeAnExistingFile())

			g.Expect(env.Client.Delete(ctx, project)).To(Succeed())
			g.Eventually(func() error {
				return env.Client.Get(ctx, client.ObjectKeyFromObject(project), &gitsshv1alpha1.GitProject{})
			}).WithTimeout(eventually).Should(Satisfy(apierrors.IsNotFound), "the finalizer was not removed")

			wantReason := map[gitsshv1alpha1.DeletionPolicy]string{gitsshv1alpha1.DeletionPolicyRetain: "RepositoryRetained", gitsshv1alpha1.DeletionPolicyDelete: "RepositoryDeleted"}[policy]
			g.Eventually(func() []string { return eventReasons(g, ns, project.Name) }).WithTimeout(eventually).Should(ContainElement(wantReason))
			if policy == gitsshv1alpha1.DeletionPolicyRetain {
				g.Expect(filepath.Join(path, "HEAD")).To(BeAnExistingFile())
			} else {
				g.Expect(path).NotTo(BeADirectory())
			}
		})
	}
	_ = inst
}

// Two GitProjects for the same OWNER/PROJECT: the older serves it, the newer reports the
// conflict, and deleting the loser (even with deletionPolicy Delete) leaves the repository.
func TestProjectConflict(t *testing.T) {
	ctx := context.Background()
	g := NewWithT(t)
	ns := env.Namespace(t)
	startGitssh(t, ns, t.TempDir())
	first := createProject(t, ns, "first", gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "api"})
	g.Eventually(func(g Gomega) { g.Expect(readyCondition(g, first).Status).To(Equal(metav1.ConditionTrue)) }).WithTimeout(eventually).Should(Succeed())
	time.Sleep(1100 * time.Millisecond) // creation times have one-second granularity
	second := createProject(t, ns, "second", gitsshv1alpha1.GitProjectSpec{Owner: "acme", Project: "api", DeletionPolicy: gitsshv1alpha1.DeletionPolicyDelete})
	g.Eventually(func(g Gomega) {
		ready := readyCondition(g, second)
		g.Expect(ready.Reason).To(Equal(gitsshv1alpha1.ReasonProjectConflict))
		g.Expect(ready.Message).To(ContainSubstring(ns + "/first"))
		g.Expect(second.Status.CloneURL).To(BeEmpty())
	}).WithTimeout(eventually).Should(Succeed())

	g.Expect(env.Client.Delete(ctx, second)).To(Succeed())
	g.Eventually(func() error {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(second), &gitsshv1alpha1.GitProject{})
	}).WithTimeout(eventually).Should(Satisfy(apierrors.IsNotFound))
	g.Expect(filepath.Join(first.Status.RepositoryPath, "HEAD")).To(BeAnExistingFile(), "the loser deleted the winner's repository")
	g.Expect(readyCondition(g, first).Status).To(Equal(metav1.ConditionTrue))
}

func eventReasons(g Gomega, ns, name string) []string {
	var reasons []string
	for _, e := range eventsAbout(g, ns, name) {
		reasons = append(reasons, e.Reason)
	}
	return reasons
}

// eventsAbout returns the events about the object named name.
func eventsAbout(g Gomega, ns, name string) []corev1.Event {
	var list corev1.EventList // events.k8s.io events are readable as core/v1 events
	g.Expect(env.Client.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
	var about []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			about = append(about, e)
		}
	}
	return about
}
